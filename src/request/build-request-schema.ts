import Type, { type Static } from "typebox";
import type { AsuConfig } from "../config/config.js";

/*
 * The body of POST /api/v1/build. Every string that can reach a command line (PROFILE=,
 * PACKAGES=, repository files) must match a strict pattern here, so Fastify rejects a bad
 * request with 422 before anything runs. The patterns are upstream ASU's
 * (asu/build_request.py); `\w` is ASCII-only in JavaScript, which is stricter than Python's.
 * Unknown fields are ignored, as upstream's pydantic model does: older clients send extras.
 */

/** Plain strings (distro, version, version_code, profile): upstream's STRING_PATTERN, non-empty where required. */
export const STRING_PATTERN = "^[\\w.,-]*$";
/** `target/subtarget`, e.g. `ath79/generic`. */
export const TARGET_PATTERN = "^\\w+/\\w+$";
/**
 * A package name as clients send it: `+name` (add; LuCI and OFS use it), `-name` (remove
 * from the image; OFS), or `name`. Names start with a letter, digit or underscore.
 */
export const PACKAGE_PATTERN = "^[+-]?\\w[\\w.,-]*$";
/** Keys of `packages_versions`: a plain package name. */
export const PACKAGE_NAME_PATTERN = "^\\w[\\w.,-]*$";
/** Package versions: opkg `2024.03.29~eb9bcb64-1`, apk `1.2.3-r1`, kernel `6.6.86-1-<vermagic>`. */
export const PACKAGE_VERSION_PATTERN = "^[\\w+.,~-]*$";
export const REPOSITORY_NAME_PATTERN = "^[\\w.-]+$";
export const REPOSITORY_URL_PATTERN = "^https?://\\S+$";
/** usign public keys (`untrusted comment: ...` + base64 line) and apk PEM keys. */
export const REPOSITORY_KEY_PATTERN = "^[\\w+/=:.,\\s-]*$";
/** A numeric string, as LuCI sends `rootfs_size_mb` (`"512"`); empty means "not set". */
export const ROOTFS_SIZE_STRING_PATTERN = "^([1-9][0-9]{0,6})?$";
/** The client's name and version, e.g. `luci/git-24.086.45142-09d5a38`, `owut/2024.07.01~r1`. */
export const CLIENT_PATTERN = "^[\\x20-\\x7e]*$";

/** The root filesystems an ImageBuilder can be asked for (ROOTFS_FILESYSTEM). */
export const FILESYSTEMS = [
  "squashfs",
  "ext4",
  "ubifs",
  "erofs",
  "jffs2",
  "jffs2-nand",
  "targz",
  "cpiogz",
] as const;
export type Filesystem = (typeof FILESYSTEMS)[number];
// Spelled out (not FILESYSTEMS.map) so Static<> keeps the literal types.
const FILESYSTEM_LITERALS = [
  Type.Literal("squashfs"),
  Type.Literal("ext4"),
  Type.Literal("ubifs"),
  Type.Literal("erofs"),
  Type.Literal("jffs2"),
  Type.Literal("jffs2-nand"),
  Type.Literal("targz"),
  Type.Literal("cpiogz"),
] as const;

/**
 * `repositories_mode`: how `repositories` combine with the release's own feeds (upstream
 * ASU PR #1602, sent by OFS). `""` (the default) means the server's default, which is
 * `replace` as upstream; normalisation turns it into `replace` so both hash alike.
 */
export const REPOSITORIES_MODES = ["", "append", "replace"] as const;
export type RepositoriesMode = "append" | "replace";

/**
 * Size caps that do not depend on the configuration. Chosen so that real clients never hit
 * them: LuCI sends every installed package (a big x86 install has a few hundred), and an
 * opkg/apk name or version is well under 128 characters.
 */
export const REQUEST_LIMITS = {
  /** distro */
  distroLength: 32,
  /** version, e.g. `24.10-SNAPSHOT`, `25.12.0-rc1` */
  versionLength: 32,
  /** version_code, e.g. `r28427-6df0e3d02a` */
  versionCodeLength: 64,
  targetLength: 64,
  profileLength: 128,
  packages: 1000,
  packageNameLength: 128,
  packageVersionLength: 128,
  repositories: 16,
  repositoryNameLength: 64,
  repositoryUrlLength: 512,
  repositoryKeys: 16,
  repositoryKeyLength: 4096,
  clientLength: 128,
  /** Absolute ceilings; the configured `max_defaults_length` / `max_custom_rootfs_size_mb` apply below them. */
  defaultsLength: 1024 * 1024,
  rootfsSizeMb: 1_048_576,
} as const;

/** The config-dependent bounds; `makeBuildRequestSchema(config)` puts them into the schema. */
export type BuildRequestBounds = Pick<AsuConfig, "max_defaults_length" | "max_custom_rootfs_size_mb">;

/**
 * The schema with the server's own limits for `defaults` and `rootfs_size_mb`, so the
 * OpenAPI document shows them. validateRequest() checks the same limits again (with a
 * friendlier message), so using the static BuildRequestSchema instead is also safe.
 */
export function makeBuildRequestSchema(bounds: BuildRequestBounds) {
  const L = REQUEST_LIMITS;
  const maxDefaults = Math.min(bounds.max_defaults_length, L.defaultsLength);
  const maxRootfs = Math.min(bounds.max_custom_rootfs_size_mb, L.rootfsSizeMb);
  return Type.Object(
    {
      distro: Type.Optional(
        Type.String({
          pattern: STRING_PATTERN,
          maxLength: L.distroLength,
          default: "openwrt",
          description: 'Only "openwrt" is supported.',
        }),
      ),
      version: Type.String({
        pattern: STRING_PATTERN,
        minLength: 1,
        maxLength: L.versionLength,
        examples: ["24.10.4", "SNAPSHOT", "24.10-SNAPSHOT"],
        description: "The OpenWrt release to build, or a snapshot.",
      }),
      version_code: Type.Optional(
        Type.String({
          pattern: STRING_PATTERN,
          maxLength: L.versionCodeLength,
          default: "",
          examples: ["r28427-6df0e3d02a"],
          description:
            "The revision the client expects. When set, the build fails if the ImageBuilder has another revision.",
        }),
      ),
      target: Type.String({
        pattern: TARGET_PATTERN,
        maxLength: L.targetLength,
        examples: ["ath79/generic"],
        description: "target/subtarget, as in `ubus call system board` → release.target.",
      }),
      profile: Type.String({
        pattern: STRING_PATTERN,
        minLength: 1,
        maxLength: L.profileLength,
        examples: ["tplink_archer-c7-v5", "tplink,archer-c7-v5"],
        description:
          "The ImageBuilder PROFILE, or the router's board_name (`ubus call system board`); commas become underscores.",
      }),
      packages: Type.Optional(
        Type.Array(Type.String({ pattern: PACKAGE_PATTERN, maxLength: L.packageNameLength }), {
          maxItems: L.packages,
          default: [],
          examples: [["luci", "tcpdump", "-ppp"]],
          description:
            "Packages to install. A leading `-` removes a package from the image; a leading `+` is ignored. " +
            "`kernel` and `libc` are accepted and ignored (always installed).",
        }),
      ),
      packages_versions: Type.Optional(
        Type.Record(
          Type.String({ pattern: PACKAGE_NAME_PATTERN, maxLength: L.packageNameLength }),
          Type.String({ pattern: PACKAGE_VERSION_PATTERN, maxLength: L.packageVersionLength }),
          {
            additionalProperties: false,
            maxProperties: L.packages,
            default: {},
            examples: [{ tcpdump: "4.99.5-r1" }],
            description:
              "Packages with the exact version expected in the image; they are installed like `packages`, " +
              "and the build fails if another version would be installed.",
          },
        ),
      ),
      diff_packages: Type.Optional(
        Type.Boolean({
          default: false,
          description:
            "If true, `packages` is the complete list: default packages not listed are removed from the image.",
        }),
      ),
      defaults: Type.Optional(
        Type.Union(
          [
            Type.String({
              maxLength: maxDefaults,
              description: "A shell script run once on first boot (uci-defaults). Empty means none.",
            }),
            Type.Null(),
          ],
          {
            description: `First-boot script; accepted only when the server allows it, at most ${maxDefaults} bytes.`,
          },
        ),
      ),
      rootfs_size_mb: Type.Optional(
        Type.Union(
          [
            Type.Integer({ minimum: 1, maximum: maxRootfs }),
            // LuCI sends the size as a string ("512").
            Type.String({ pattern: ROOTFS_SIZE_STRING_PATTERN }),
            Type.Null(),
          ],
          {
            description: `Root filesystem partition size in MB (ROOTFS_PARTSIZE), 1 to ${maxRootfs}; a numeric string is accepted.`,
          },
        ),
      ),
      filesystem: Type.Optional(
        Type.Union([...FILESYSTEM_LITERALS, Type.Null()], {
          description: "Root filesystem type (ROOTFS_FILESYSTEM); leave out for the device's default.",
        }),
      ),
      repositories: Type.Optional(
        Type.Record(
          Type.String({ pattern: REPOSITORY_NAME_PATTERN, maxLength: L.repositoryNameLength }),
          Type.String({ pattern: REPOSITORY_URL_PATTERN, maxLength: L.repositoryUrlLength }),
          {
            additionalProperties: false,
            maxProperties: L.repositories,
            default: {},
            description:
              "Extra package feeds, name → URL. Each URL must be on the server's repository_allow_list.",
          },
        ),
      ),
      repositories_mode: Type.Optional(
        Type.Union([Type.Literal(""), Type.Literal("append"), Type.Literal("replace")], {
          default: "",
          description:
            '"replace" (the default, as upstream; "" means the same) uses only `repositories`; "append" adds them to the release feeds.',
        }),
      ),
      repository_keys: Type.Optional(
        Type.Array(Type.String({ pattern: REPOSITORY_KEY_PATTERN, maxLength: L.repositoryKeyLength }), {
          maxItems: L.repositoryKeys,
          default: [],
          description: "Public keys (usign or apk PEM) that sign `repositories`.",
        }),
      ),
      client: Type.Optional(
        Type.Union([Type.String({ pattern: CLIENT_PATTERN, maxLength: L.clientLength }), Type.Null()], {
          examples: ["luci/git-24.086.45142-09d5a38"],
          description: "Name and version of the client; for statistics only, it does not change the image.",
        }),
      ),
    },
    { additionalProperties: true },
  );
}

/** The schema with only the fixed ceilings (config limits are then enforced by validateRequest). */
export const BuildRequestSchema = makeBuildRequestSchema({
  max_defaults_length: REQUEST_LIMITS.defaultsLength,
  max_custom_rootfs_size_mb: REQUEST_LIMITS.rootfsSizeMb,
});

/** A build request body after schema validation (Fastify applies the defaults). */
export type BuildRequestBody = Static<typeof BuildRequestSchema>;
