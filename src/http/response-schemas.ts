import Type from "typebox";

/**
 * Response schemas, so /openapi.json documents what clients receive (issue #15, item 9).
 * Objects stay open (`additionalProperties: true`): the server passes upstream fields through
 * (profiles.json entries), and a client must never lose a field because a schema forgot it.
 */

/**
 * The body of every error answer (error-handler.ts), after Unleash's `apiErrorSchema`.
 * `detail` is always a string: OFS calls `.startsWith` on it (client-contract.md).
 */
export const ErrorBodySchema = Type.Object(
  {
    status: Type.Integer({ description: "Equals the HTTP status; owut reads this, not the HTTP code." }),
    title: Type.String({ description: "The HTTP status in words, e.g. `Not Found`." }),
    detail: Type.String({ description: "What went wrong and what to do next, for a person." }),
  },
  {
    additionalProperties: true,
    description:
      "Error answer. 422s for unknown packages add `unknown_packages` and `unknown_packages_count`; schema violations add `errors`.",
  },
);

/** `{ "4xx": ErrorBody, "5xx": ErrorBody }` for a route's `response`. */
export const ERROR_RESPONSES = { "4xx": ErrorBodySchema, "5xx": ErrorBodySchema } as const;

const PackageChangeSchema = Type.Object(
  {
    source: Type.Optional(Type.String()),
    target: Type.Optional(Type.String()),
    revision: Type.Integer(),
    mandatory: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: true },
);

export const BranchOverviewSchema = Type.Object(
  {
    name: Type.String(),
    enabled: Type.Boolean(),
    snapshot: Type.Boolean(),
    path: Type.String({ description: "Still contains `{version}`: owut fills it in itself." }),
    path_packages: Type.String(),
    versions: Type.Array(Type.String()),
    targets: Type.Record(Type.String(), Type.String(), { description: "target → package architecture" }),
    package_changes: Type.Array(PackageChangeSchema),
    branch_off_rev: Type.Optional(Type.Integer()),
  },
  { additionalProperties: true },
);

export const LatestSchema = Type.Object(
  { latest: Type.Array(Type.String(), { description: "The newest release of each branch, newest first." }) },
  { additionalProperties: true },
);

export const OverviewSchema = Type.Object(
  {
    upstream_url: Type.String(),
    server: Type.Object(
      {
        version: Type.String(),
        allow_defaults: Type.Boolean(),
        repository_allow_list: Type.Array(Type.String()),
        max_custom_rootfs_size_mb: Type.Integer(),
        max_defaults_length: Type.Integer(),
      },
      { additionalProperties: true, description: "The server's limits (owut)." },
    ),
    branches: Type.Record(Type.String(), BranchOverviewSchema),
    latest: Type.Array(Type.String()),
  },
  { additionalProperties: true },
);

export const VersionsSchema = Type.Object(
  {
    versions: Type.Array(Type.String()),
    latest: Type.Array(Type.String()),
    branches: Type.Array(BranchOverviewSchema),
  },
  { additionalProperties: true },
);

export const RevisionSchema = Type.Object(
  { revision: Type.String({ description: "The version_code, e.g. `r28427-6df0e3d02a`." }) },
  { additionalProperties: true },
);

/** One of three documents, told apart by the path (see the route's description). */
export const MetadataDocumentSchema = Type.Object(
  {},
  {
    additionalProperties: true,
    description:
      "`{profile}.json`: the profile merged with target metadata (`id`, `target`, `images`, `titles`, `supported_devices`, `version_code`, `version_number`, `metadata_version`, ...); `index.json`: `{architecture, packages}`; `{arch}-index.json`: `{name: version}`.",
  },
);
