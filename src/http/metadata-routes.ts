import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyInstance, FastifyReply } from "fastify";
import Type from "typebox";
import type { AsuConfig, BranchConfig } from "../config/config.js";
import { resolveProfile } from "../request/validate-request.js";
import { NotFoundError, ValidationError } from "../shared/errors.js";
import { VERSION } from "../shared/version.js";
import type { Stats } from "../stats/stats.js";
import {
  branchNameOf,
  type BranchOverview,
  type BranchesOverview,
  type Catalog,
  type ResolvedVersion,
} from "../upstream/catalog.js";
import type { ProfileInfo, ProfilesJson } from "../upstream/upstream-documents.js";
import type { UpstreamClient } from "../upstream/upstream-client.js";
import { renderOverviewPage } from "./overview-page.js";
import {
  BranchOverviewSchema,
  ERROR_RESPONSES,
  LatestSchema,
  MetadataDocumentSchema,
  OverviewSchema,
  RevisionSchema,
  VersionsSchema,
} from "./response-schemas.js";

export interface MetadataDeps {
  config: AsuConfig;
  catalog: Catalog;
  upstream: UpstreamClient;
  stats: Stats;
}

/** Every path segment a client may send: names OpenWrt publishes, nothing else. */
const SEGMENT = /^[\w.,-]+$/;
const SEGMENT_PATTERN = "^[\\w.,-]+$";

/** What owut reads from overview.json → `server`. */
export interface ServerInfo {
  version: string;
  allow_defaults: boolean;
  repository_allow_list: string[];
  max_custom_rootfs_size_mb: number;
  max_defaults_length: number;
}

export interface Overview extends BranchesOverview {
  upstream_url: string;
  server: ServerInfo;
}

export function serverInfo(config: AsuConfig): ServerInfo {
  return {
    version: VERSION,
    allow_defaults: config.allow_defaults,
    repository_allow_list: [...config.repository_allow_list],
    max_custom_rootfs_size_mb: config.max_custom_rootfs_size_mb,
    max_defaults_length: config.max_defaults_length,
  };
}

/** overview.json: the branch table (paths still with `{version}`, owut fills it in) plus server limits. */
export async function buildOverview(deps: MetadataDeps): Promise<Overview> {
  const { branches, latest } = await deps.catalog.branchesOverview();
  return { upstream_url: deps.config.upstream_url, server: serverInfo(deps.config), branches, latest };
}

function branchList(overview: BranchesOverview): BranchOverview[] {
  return Object.values(overview.branches);
}

/** A 400 from the catalog ("unsupported version") is a 404 for a metadata document. */
async function resolveOr404(catalog: Catalog, version: string): Promise<ResolvedVersion> {
  try {
    return await catalog.resolve(version);
  } catch (err) {
    if (err instanceof ValidationError) throw new NotFoundError(err.detail);
    throw err;
  }
}

function checkSegments(parts: string[], what: string): void {
  for (const part of parts) {
    if (!SEGMENT.test(part) || /^\.+$/.test(part)) {
      throw new NotFoundError(
        `No such ${what}: ${JSON.stringify(part)} is not a name OpenWrt publishes (letters, digits, ".", ",", "_" and "-" only).`,
      );
    }
  }
}

/** The version's `.targets.json` entry for `target`, reloaded once on a miss; 404 when absent. */
async function targetArch(
  upstream: UpstreamClient,
  resolved: ResolvedVersion,
  target: string,
): Promise<string> {
  const targets = await upstream.lookupTargets(resolved.path, (t) => Object.hasOwn(t, target));
  if (!targets) {
    throw new NotFoundError(
      `Unknown version: ${resolved.version}. The download server publishes no targets for it (yet).`,
    );
  }
  const arch = Object.hasOwn(targets, target) ? targets[target] : undefined;
  if (arch === undefined) {
    throw new NotFoundError(
      `Unknown target: ${target}. Version ${resolved.version} does not publish it; see /json/v1/overview.json for the targets of each branch.`,
    );
  }
  return arch;
}

/** The target's profiles.json, reloaded once when missing or without `name`; 404 when not published. */
async function profilesOf(
  upstream: UpstreamClient,
  resolved: ResolvedVersion,
  target: string,
  name?: string,
): Promise<ProfilesJson> {
  await targetArch(upstream, resolved, target);
  const profiles = await upstream.lookupProfiles(
    resolved.path,
    target,
    (p) => name === undefined || resolveProfile(p, name) !== undefined,
  );
  if (!profiles) {
    throw new NotFoundError(
      `Unknown target: ${target}. Version ${resolved.version} lists it, but its profiles.json is not published (yet). Try again later.`,
    );
  }
  return profiles;
}

/** The upstream profile merged with the target's metadata, as auc reads `{profile}.json`. */
export function profileDocument(profilesJson: ProfilesJson, id: string): Record<string, unknown> {
  const info = profilesJson.profiles[id] as ProfileInfo;
  const epoch = profilesJson.source_date_epoch;
  const doc: Record<string, unknown> = {
    ...info,
    id,
    target: profilesJson.target,
    arch_packages: profilesJson.arch_packages,
    version_code: profilesJson.version_code,
    version_number: profilesJson.version_number,
    metadata_version: profilesJson.metadata_version ?? 1,
    images: info.images ?? [],
    titles: info.titles ?? [],
    supported_devices: info.supported_devices ?? [],
    default_packages: profilesJson.default_packages ?? [],
    device_packages: info.device_packages ?? [],
  };
  if (epoch !== undefined) {
    doc.source_date_epoch = epoch;
    doc.build_at = new Date(epoch * 1000).toISOString();
  }
  if (profilesJson.linux_kernel) doc.linux_kernel = profilesJson.linux_kernel;
  return doc;
}

/**
 * Maps `releases/24.10.4/targets/...` or `snapshots/packages/...` back to a version, through
 * the path templates of the enabled branches. Returns the version and the rest of the path.
 */
export function splitMetadataPath(
  branches: BranchConfig[],
  segments: string[],
): { version: string; branch: BranchConfig; rest: string[] } | undefined {
  for (const branch of branches) {
    const template = branch.path.split("/").filter(Boolean);
    if (segments.length <= template.length) continue;
    let version: string | undefined = branch.snapshot ? "SNAPSHOT" : undefined;
    let ok = true;
    for (const [i, part] of template.entries()) {
      const seg = segments[i] as string;
      if (part === "{version}") version = seg;
      else if (part.replaceAll("{branch}", branch.name) !== seg) ok = false;
    }
    if (!ok || version === undefined) continue;
    // `releases/{version}` is shared by all release branches: the version picks the branch.
    if (branchNameOf(version) !== branch.name) continue;
    return { version, branch, rest: segments.slice(template.length) };
  }
  return undefined;
}

export function registerMetadataRoutes(root: FastifyInstance, deps: MetadataDeps): void {
  // Route types come from the schemas (params, responses), so they cannot drift apart.
  const app = root.withTypeProvider<TypeBoxTypeProvider>();
  const { config, catalog, upstream, stats } = deps;
  const tags = ["metadata"];

  // --- overview, branches, latest ----------------------------------------------------------

  app.get(
    "/json/v1/overview.json",
    {
      schema: {
        tags,
        summary: "Server limits, branches, versions and targets (owut, LuCI)",
        description:
          "`branches{}.path` still contains `{version}`; clients fill it in. `latest` lists the newest release of each branch, newest first.",
        response: { 200: OverviewSchema, ...ERROR_RESPONSES },
      },
    },
    async () => buildOverview(deps),
  );

  app.get(
    "/json/v1/branches.json",
    {
      schema: {
        tags,
        summary: "The branch objects of overview.json as a list (auc)",
        response: { 200: Type.Array(BranchOverviewSchema), ...ERROR_RESPONSES },
      },
    },
    async () => branchList(await catalog.branchesOverview()),
  );

  app.get(
    "/json/v1/latest.json",
    {
      schema: {
        tags,
        summary: "The newest release of each branch, newest first",
        response: { 200: LatestSchema, ...ERROR_RESPONSES },
      },
    },
    async () => ({ latest: (await catalog.branchesOverview()).latest }),
  );

  const redirect = (url: string, summary: string, path: string, deprecated = false) =>
    app.get(path, { schema: { tags, summary, ...(deprecated ? { deprecated: true } : {}) } }, (_req, reply) =>
      reply.redirect(url, 301),
    );
  redirect("/json/v1/overview.json", "Redirects (301) to /json/v1/overview.json (LuCI)", "/api/v1/overview");
  redirect(
    "/json/v1/overview.json",
    "Redirects (301) to /json/v1/overview.json (LuCI up to 23.05.3)",
    "/api/overview",
    true,
  );
  redirect("/json/v1/latest.json", "Redirects (301) to /json/v1/latest.json", "/api/v1/latest");

  // --- seed API (2020-2021 README) ----------------------------------------------------------

  app.get(
    "/api/latest",
    {
      schema: {
        tags,
        deprecated: true,
        summary: "Seed API: `{latest}`, as /json/v1/latest.json",
        response: { 200: LatestSchema, ...ERROR_RESPONSES },
      },
    },
    async () => ({ latest: (await catalog.branchesOverview()).latest }),
  );
  app.get(
    "/api/branches",
    {
      schema: {
        tags,
        deprecated: true,
        summary: "Seed API: the branch list, as /json/v1/branches.json",
        response: { 200: Type.Array(BranchOverviewSchema), ...ERROR_RESPONSES },
      },
    },
    async () => branchList(await catalog.branchesOverview()),
  );
  app.get(
    "/api/versions",
    {
      schema: {
        tags,
        deprecated: true,
        summary: "Seed API: every buildable version, `latest` and the branch list",
        description:
          "`{versions: [...], latest: [...], branches: [...]}`; `versions` is every version of every enabled branch, newest first, snapshots first.",
        response: { 200: VersionsSchema, ...ERROR_RESPONSES },
      },
    },
    async () => {
      const overview = await catalog.branchesOverview();
      const branches = branchList(overview);
      return { versions: branches.flatMap((b) => b.versions), latest: overview.latest, branches };
    },
  );

  // --- revision -------------------------------------------------------------------------------

  const Segment = Type.String({ pattern: SEGMENT_PATTERN, maxLength: 128 });
  app.get(
    "/api/v1/revision/:version/:target/:subtarget",
    {
      schema: {
        tags,
        summary: "The revision (version_code) a target of a version is built from (LuCI)",
        params: Type.Object({ version: Segment, target: Segment, subtarget: Segment }),
        response: { 200: RevisionSchema, ...ERROR_RESPONSES },
      },
    },
    async (request) => {
      const { version, target, subtarget } = request.params;
      checkSegments([version, target, subtarget], "revision");
      // Upstream ASU (and LuCI's error display) treat a bad version here as a bad request.
      const resolved = await catalog.resolve(version);
      const profiles = await profilesOf(upstream, resolved, `${target}/${subtarget}`);
      return { revision: profiles.version_code };
    },
  );

  // --- per-version documents ------------------------------------------------------------------

  app.get(
    "/json/v1/*",
    {
      schema: {
        tags,
        summary: "Per-version documents (auc, owut)",
        description: [
          "`{path}` is a branch path with the version filled in, e.g. `releases/24.10.4` or `snapshots`.",
          "- `{path}/targets/{target}/{subtarget}/{profile}.json`: the profile from profiles.json merged with the target's metadata (`metadata_version`, `arch_packages`, `version_code`, `build_at`, ...); a `supported_devices` name works as `{profile}` too.",
          "- `{path}/targets/{target}/{subtarget}/index.json`: `{architecture, packages{name: version}}`, kmods merged in.",
          "- `{path}/packages/{arch}-index.json`: `{name: version}` over every feed.",
        ].join("\n"),
        params: Type.Object({ "*": Type.String({ maxLength: 512 }) }),
        response: { 200: MetadataDocumentSchema, ...ERROR_RESPONSES },
      },
    },
    async (request) => {
      const wanted = request.params["*"];
      const segments = wanted.split("/");
      checkSegments(segments, "metadata document");
      const notFound = () =>
        new NotFoundError(
          `No such metadata document: /json/v1/${wanted}. Documents are {path}/targets/{target}/{subtarget}/{profile}.json, {path}/targets/{target}/{subtarget}/index.json and {path}/packages/{arch}-index.json, with {path} such as releases/24.10.4 or snapshots.`,
        );
      const split = splitMetadataPath(catalog.enabledBranches(), segments);
      if (!split) throw notFound();
      const { version, rest } = split;
      const [kind, a, b, file, ...extra] = rest;
      if (extra.length > 0) throw notFound();

      if (kind === "targets" && a !== undefined && b !== undefined && file?.endsWith(".json")) {
        const resolved = await resolveOr404(catalog, version);
        const target = `${a}/${b}`;
        if (file === "index.json") {
          await targetArch(upstream, resolved, target);
          const index = await upstream.getTargetIndex(resolved.path, target, resolved.branch.package_manager);
          if (!index) {
            throw new NotFoundError(
              `No package index for ${target} in ${version}: the download server does not publish it (yet).`,
            );
          }
          return { architecture: index.architecture, packages: index.packages };
        }
        const name = file.slice(0, -".json".length);
        const profiles = await profilesOf(upstream, resolved, target, name);
        const id = resolveProfile(profiles, name);
        if (id === undefined) {
          throw new NotFoundError(
            `Unknown profile: ${name}. ${target} in ${version} has no such profile or supported device.`,
          );
        }
        return profileDocument(profiles, id);
      }

      if (kind === "packages" && a?.endsWith("-index.json") && b === undefined) {
        const arch = a.slice(0, -"-index.json".length);
        const resolved = await resolveOr404(catalog, version);
        const targets = await upstream.lookupTargets(
          resolved.path,
          (t) => targetWithArch(t, arch) !== undefined,
        );
        const target = targetWithArch(targets, arch);
        if (target === undefined) {
          throw new NotFoundError(`Unknown architecture: ${arch}. No target of ${version} uses it.`);
        }
        const index = await upstream.getArchIndex(
          resolved.pathPackages,
          resolved.path,
          target,
          arch,
          resolved.branch.package_manager,
        );
        if (!index) {
          throw new NotFoundError(
            `No package feeds for ${arch} in ${version}: the download server publishes none (yet).`,
          );
        }
        return index;
      }
      throw notFound();
    },
  );

  // --- stats ------------------------------------------------------------------------------------

  app.get(
    "/api/v1/stats",
    { schema: { tags: ["stats"], summary: "Queue length and today's build and request counters" } },
    async () => stats.summary(),
  );

  // --- HTML overview ----------------------------------------------------------------------------

  app.get(
    "/",
    { schema: { tags, summary: "An HTML page about this server: branches, limits, links" } },
    async (request, reply: FastifyReply) => {
      let overview: BranchesOverview | undefined;
      let problem: string | undefined;
      try {
        overview = await catalog.branchesOverview();
      } catch (err) {
        problem = (err as { detail?: string }).detail ?? "The upstream download server could not be read.";
        request.log.warn({ err }, "overview page without upstream data");
      }
      const queueLength = await stats
        .summary()
        .then((s) => (typeof s.queue_length === "number" ? s.queue_length : undefined))
        .catch(() => undefined);
      const html = renderOverviewPage({
        server: serverInfo(config),
        upstreamUrl: config.upstream_url,
        maxPendingJobs: config.max_pending_jobs,
        ...(overview ? { branches: branchList(overview), latest: overview.latest } : {}),
        ...(problem !== undefined ? { problem } : {}),
        ...(queueLength !== undefined ? { queueLength } : {}),
      });
      return reply
        .type("text/html; charset=utf-8")
        .header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'")
        .header("X-Content-Type-Options", "nosniff")
        .send(html);
    },
  );
}

function targetWithArch(targets: Record<string, string> | undefined, arch: string): string | undefined {
  if (!targets) return undefined;
  return Object.keys(targets)
    .sort()
    .find((t) => targets[t] === arch);
}
