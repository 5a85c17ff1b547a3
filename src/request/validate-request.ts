import type { AsuConfig, BranchConfig } from "../config/config.js";
import { loadPackageChanges } from "../config/package-changes.js";
import { SchemaError, UnknownPackageError, UpstreamError, ValidationError } from "../shared/errors.js";
import type { Catalog } from "../upstream/catalog.js";
import type { PackageVersions, ProfileInfo, ProfilesJson } from "../upstream/upstream-documents.js";
import type { UpstreamClient } from "../upstream/upstream-client.js";
import type { NormalizedRequest } from "./normalize-request.js";
import { applyPackageChanges } from "./package-changes.js";
import { PackageNameIndex } from "./package-suggestions.js";
import { isRepositoryAllowed } from "./repository-allow-list.js";
import { repositoryFolderUrl } from "./repository-url.js";

export interface ValidationDeps {
  config: AsuConfig;
  catalog: Catalog;
  upstream: UpstreamClient;
}

/** Why the unknown-package check did or did not run (logs and tests read it). */
export type PackageCheck = "checked" | "skipped_custom_repositories" | "skipped_no_index";

/** A request that passed every check, with what the worker needs to know about it. */
export interface ValidatedRequest extends NormalizedRequest {
  branch: BranchConfig;
  /** `releases/24.10.4`, `snapshots`, ... */
  path: string;
  /** `releases/24.10.4/packages`, `snapshots/packages`, ... */
  pathPackages: string;
  /** The resolved profile id (after supported_devices mapping); the request's own is `requestedProfile`. */
  profile: string;
  requestedProfile: string;
  profileInfo: ProfileInfo;
  profilesJson: ProfilesJson;
  /** Package architecture of the target, e.g. `mips_24kc`. */
  arch: string;
  packageCheck: PackageCheck;
}

/**
 * Checks a normalized request against the server's configuration and what the download
 * server publishes. Cheap local checks come first, so a bad request costs no upstream
 * traffic. A version, target or profile that is not found forces one reload of the
 * document that should list it before the request is refused (see UpstreamClient).
 * Throws ValidationError (400), SchemaError (422) or UnknownPackageError (422).
 */
export async function validateRequest(
  req: NormalizedRequest,
  deps: ValidationDeps,
): Promise<ValidatedRequest> {
  const { config, catalog, upstream } = deps;

  if (req.distro !== "openwrt") {
    throw new ValidationError(
      `Unsupported distro: ${req.distro}. This server builds only OpenWrt; send "distro": "openwrt" or leave the field out.`,
    );
  }
  checkDefaults(req, config);
  checkRootfsSize(req, config);
  checkRepositories(req, config);

  const resolved = await catalog.resolve(req.version);
  const { branch, path, pathPackages } = resolved;

  const targets = await upstream.lookupTargets(path, (t) => Object.hasOwn(t, req.target));
  if (!targets) {
    throw new ValidationError(
      `Unsupported version: ${req.version}. The download server publishes no targets for it (yet). Please choose another version or try again later.`,
    );
  }
  if (!Object.hasOwn(targets, req.target)) throw unsupportedTarget(req.target);

  const profilesJson = await upstream.lookupProfiles(
    path,
    req.target,
    (p) => resolveProfile(p, req.profile) !== undefined,
  );
  const profile = profilesJson ? resolveProfile(profilesJson, req.profile) : undefined;
  // .targets.json lists the target but its profiles.json is not there: still being uploaded.
  if (!profilesJson) throw unsupportedTarget(req.target);
  if (profile === undefined) throw unsupportedProfile(req, profilesJson);
  const profileInfo = profilesJson.profiles[profile] as ProfileInfo;
  const arch = targets[req.target] || profilesJson.arch_packages;

  const packageCheck = await checkPackages(req, {
    upstream,
    branch,
    path,
    pathPackages,
    arch,
    profile,
    profilesJson,
    profileInfo,
  });

  return {
    ...req,
    branch,
    path,
    pathPackages,
    profile,
    requestedProfile: req.profile,
    profileInfo,
    profilesJson,
    arch,
    packageCheck,
  };
}

/**
 * Maps the requested profile to a profile id of profiles.json:
 *   1. the id itself;
 *   2. a profile whose `supported_devices` has the name, raw (`tplink,archer-c7-v5`) or with
 *      commas as underscores (the form the request has after normalisation), first one wins
 *      (some boards are listed by several profiles, e.g. `wndr3700`);
 *   3. `generic`, when it is the target's only profile (x86/64, armsr: the board_name of a
 *      PC such as `pc-engines-apu2` is listed nowhere).
 */
export function resolveProfile(profilesJson: ProfilesJson, requested: string): string | undefined {
  const profiles = profilesJson.profiles;
  if (Object.hasOwn(profiles, requested)) return requested;
  const wanted = requested.replaceAll(",", "_");
  for (const [id, info] of Object.entries(profiles)) {
    for (const device of info.supported_devices ?? []) {
      if (device === requested || device.replaceAll(",", "_") === wanted) return id;
    }
  }
  const ids = Object.keys(profiles);
  if (ids.length === 1 && ids[0] === "generic") return "generic";
  return undefined;
}

function unsupportedTarget(target: string): ValidationError {
  // Wording fixed by the client contract; people search the forums for it.
  return new ValidationError(
    `Unsupported target: ${target}. The requested target was either dropped, is still being built or is not supported by the selected version. Please check the forums or try again later.`,
  );
}

function unsupportedProfile(req: NormalizedRequest, profilesJson: ProfilesJson): ValidationError {
  const known = new PackageNameIndex(Object.keys(profilesJson.profiles)).suggest(req.profile);
  const hint = known ? ` Did you mean ${known}?` : "";
  return new ValidationError(
    `Unsupported profile: ${req.profile}. The requested profile is not available for ${req.target} in ${req.version}.${hint} ` +
      `Use the router's board_name (ubus call system board) or a profile id from the firmware selector, or choose another version.`,
  );
}

function checkDefaults(req: NormalizedRequest, config: AsuConfig): void {
  if (req.defaults === null) return;
  if (!config.allow_defaults) {
    throw new ValidationError(
      `This server does not allow "defaults" (a first-boot script). Remove "defaults" from the request, or use a server that allows it.`,
    );
  }
  const bytes = Buffer.byteLength(req.defaults, "utf8");
  if (bytes > config.max_defaults_length) {
    throw new SchemaError(
      `"defaults" is ${bytes} bytes; this server accepts at most ${config.max_defaults_length} bytes. Shorten the script.`,
    );
  }
}

function checkRootfsSize(req: NormalizedRequest, config: AsuConfig): void {
  const size = req.rootfs_size_mb;
  if (size === null) return;
  if (!Number.isInteger(size) || size < 1) {
    throw new SchemaError(`rootfs_size_mb must be a whole number of MB, at least 1; got ${size}.`);
  }
  if (size > config.max_custom_rootfs_size_mb) {
    throw new SchemaError(
      `rootfs_size_mb ${size} is more than this server allows (${config.max_custom_rootfs_size_mb} MB). Ask for ${config.max_custom_rootfs_size_mb} MB or less, or leave it out for the device's default.`,
    );
  }
}

function checkRepositories(req: NormalizedRequest, config: AsuConfig): void {
  for (const [name, url] of Object.entries(req.repositories)) {
    // `url` is already the canonical form (normalizeRequest); the feed file gets exactly this text.
    if (isRepositoryAllowed(repositoryFolderUrl(url), config.repository_allow_list)) continue;
    const allowed =
      config.repository_allow_list.length > 0
        ? `Allowed locations: ${config.repository_allow_list.join(", ")}.`
        : "This server allows no extra repositories.";
    throw new ValidationError(
      `Repository ${name} (${url}) is not allowed. ${allowed} Use an allowed location, or remove it from "repositories".`,
    );
  }
}

interface PackageCheckContext {
  upstream: UpstreamClient;
  branch: BranchConfig;
  path: string;
  pathPackages: string;
  arch: string;
  profile: string;
  profilesJson: ProfilesJson;
  profileInfo: ProfileInfo;
}

/**
 * Unknown names listed (with suggestions) in the answer; the rest are counted. Each
 * suggestion costs a scan of the index, and some HTTP clients refuse huge headers.
 */
export const MAX_LISTED = 20;

/**
 * Rejects packages that exist in no feed of the release, before a build slot is spent on
 * them. Skipped when the request brings its own repositories (their packages are not in
 * our indexes) and when the indexes cannot be read: the build then reports what is missing.
 */
async function checkPackages(req: NormalizedRequest, ctx: PackageCheckContext): Promise<PackageCheck> {
  if (Object.keys(req.repositories).length > 0) return "skipped_custom_repositories";
  const wanted = requestedNames(req, ctx.profile);
  if (wanted.length === 0) return "checked";

  const pm = ctx.branch.package_manager;
  let targetIndex: PackageVersions | undefined;
  let archIndex: PackageVersions | undefined;
  try {
    const [t, a] = await Promise.all([
      ctx.upstream.getTargetIndex(ctx.path, req.target, pm),
      ctx.upstream.getArchIndex(ctx.pathPackages, ctx.path, req.target, ctx.arch, pm),
    ]);
    // Without the kmods folder, kmod-* names cannot be checked: let the build decide.
    targetIndex = t?.kmodsMissing ? undefined : t?.packages;
    archIndex = a;
  } catch (err) {
    if (err instanceof UpstreamError) return "skipped_no_index";
    throw err;
  }
  if (!targetIndex || !archIndex) return "skipped_no_index";

  const index = nameIndex(targetIndex, archIndex);
  const alsoKnown = new Set([
    ...(ctx.profilesJson.default_packages ?? []),
    ...(ctx.profileInfo.device_packages ?? []),
  ]);
  const unknown = wanted.filter(
    (name) => !index.has(name) && !alsoKnown.has(name) && !knownWithoutAbi(name, index),
  );
  if (unknown.length === 0) return "checked";

  // A Map: names such as "toString" or "__proto__" must not find Object.prototype's members.
  const suggestions = new Map<string, string>();
  const listedNames = unknown.slice(0, MAX_LISTED);
  for (const name of listedNames) {
    const suggestion = index.suggest(name);
    if (suggestion !== undefined) suggestions.set(name, suggestion);
  }
  const listed = listedNames.map((name) => {
    const suggestion = suggestions.get(name);
    return suggestion !== undefined ? `${name} (did you mean ${suggestion}?)` : name;
  });
  const more = unknown.length - listedNames.length;
  const detail =
    unknown.length === 1
      ? `Unknown package: ${listed[0]}. Check the name, or remove it from the request.`
      : `Unknown packages: ${listed.join(", ")}${more > 0 ? `, and ${more} more` : ""}. Check the names, or remove them from the request.`;
  // Bounded like the detail: 1,000 unknown names must not make a 100 KB answer (issue #9, item 8).
  throw new UnknownPackageError(detail, listedNames, {
    suggestions: Object.fromEntries(suggestions),
    unknown_packages_count: unknown.length,
  });
}

/**
 * The names the user asked for, after OpenWrt's renames, without removals and without the
 * packages add_rules put in (those come from our data, not the user; the build reports them).
 */
function requestedNames(req: NormalizedRequest, profile: string): string[] {
  const data = loadPackageChanges();
  const changed = applyPackageChanges(
    req.packages,
    { version: req.version, target: req.target, profile },
    { ...data, add_rules: [] },
  );
  return changed.filter((p) => !p.startsWith("-"));
}

/**
 * A router's own package list may still carry opkg ABI suffixes (`libubox20230523`); the
 * ImageBuilder installs those by their plain name, so the plain name counts as known.
 */
function knownWithoutAbi(name: string, index: PackageNameIndex): boolean {
  const plain = name.replace(/\d+$/, "");
  return plain !== name && plain !== "" && index.has(plain);
}

// The upstream client returns the same objects while the documents are unchanged, so the
// index (a Set of ~10,000 names plus its part index) is built once per release and target.
const indexCache = new WeakMap<PackageVersions, WeakMap<PackageVersions, PackageNameIndex>>();

function nameIndex(targetIndex: PackageVersions, archIndex: PackageVersions): PackageNameIndex {
  let inner = indexCache.get(targetIndex);
  if (!inner) {
    inner = new WeakMap();
    indexCache.set(targetIndex, inner);
  }
  let index = inner.get(archIndex);
  if (!index) {
    index = new PackageNameIndex([...Object.keys(targetIndex), ...Object.keys(archIndex)]);
    inner.set(archIndex, index);
  }
  return index;
}
