import { SchemaError } from "../shared/errors.js";
import {
  REQUEST_LIMITS,
  type BuildRequestBody,
  type Filesystem,
  type RepositoriesMode,
} from "./build-request-schema.js";
import { canonicalRepositoryUrl } from "./repository-url.js";

/**
 * A build request in one canonical form: what the hash is computed from, what the worker
 * builds, and what is echoed back as `request` (owut reads `version_code`, `rootfs_size_mb`
 * and `defaults` from it, so they are always present, null when unset). `client` is echoed
 * as upstream does, but request-hash.ts leaves it out: the same image must have the same
 * hash whichever client asked.
 */
export interface NormalizedRequest {
  distro: string;
  version: string;
  version_code: string;
  target: string;
  /** Commas turned into underscores (`tplink,archer-c7-v5` → `tplink_archer-c7-v5`). */
  profile: string;
  /** The user's order, deduplicated; `+` stripped; `-name` kept as a removal; no `kernel`/`libc`. */
  packages: string[];
  packages_versions: Record<string, string>;
  diff_packages: boolean;
  /** null when absent or empty. */
  defaults: string | null;
  rootfs_size_mb: number | null;
  filesystem: Filesystem | null;
  repositories: Record<string, string>;
  repositories_mode: RepositoriesMode;
  repository_keys: string[];
  /** e.g. `luci/git-24.086`; null when not sent (auc). Not part of the hash. */
  client: string | null;
}

/**
 * Packages that are always part of an image and cannot be asked for: LuCI's package list
 * (rpcd's packagelist) includes `kernel` and `libc` because they appear in the router's
 * package database, but the ImageBuilder installs both itself, and `kernel`'s version
 * carries a vermagic hash that would never match a request. They are dropped, never errors.
 */
export const PSEUDO_PACKAGES: ReadonlySet<string> = new Set(["kernel", "libc"]);

/** Turns a schema-valid body into a NormalizedRequest; also tolerates missing optional fields. */
export function normalizeRequest(body: BuildRequestBody): NormalizedRequest {
  const packagesVersions = ownEntries(body.packages_versions);
  const names = [...(body.packages ?? []), ...packagesVersions.map(([name]) => name)];
  const packages: string[] = [];
  const seen = new Set<string>();
  for (const raw of names) {
    // "+name" is how LuCI and OFS mark an added package; it means the same as "name".
    const name = raw.trim().replace(/^\+/, "");
    if (name === "" || name === "-") continue;
    if (PSEUDO_PACKAGES.has(name.replace(/^-/, ""))) continue;
    if (seen.has(name)) continue;
    seen.add(name);
    packages.push(name);
  }
  // Each list is capped by the schema; together they must stay under the same cap.
  if (packages.length > REQUEST_LIMITS.packages) {
    throw new SchemaError(
      `The request names ${packages.length} packages (packages and packages_versions together); ` +
        `this server accepts at most ${REQUEST_LIMITS.packages}. An OpenWrt image has a few hundred; remove the ones you do not need.`,
    );
  }

  return {
    distro: (body.distro ?? "openwrt").trim() || "openwrt",
    version: body.version.trim(),
    version_code: (body.version_code ?? "").trim(),
    target: body.target.trim(),
    // auc and owut already send underscores; LuCI sends the board_name with its comma.
    profile: body.profile.trim().replaceAll(",", "_"),
    packages,
    packages_versions: Object.fromEntries(packagesVersions),
    diff_packages: body.diff_packages ?? false,
    // OFS sends "" when the user typed no script.
    defaults:
      body.defaults === undefined || body.defaults === null || body.defaults === "" ? null : body.defaults,
    rootfs_size_mb: normalizeRootfsSize(body.rootfs_size_mb),
    filesystem: body.filesystem ?? null,
    repositories: Object.fromEntries(
      ownEntries(body.repositories).map(([name, url]) => [name, repositoryUrl(name, url)]),
    ),
    // Upstream's default: custom repositories replace the ImageBuilder's feeds unless
    // "append" is asked for ("" is what OFS sends when the user chose nothing).
    repositories_mode: body.repositories_mode === "append" ? "append" : "replace",
    repository_keys: [...(body.repository_keys ?? [])],
    client: body.client ?? null,
  };
}

/** LuCI sends `"512"`; owut an integer; "" and null mean "the device's default". */
function normalizeRootfsSize(value: number | string | null | undefined): number | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "number") return value;
  const trimmed = value.trim();
  if (trimmed === "") return null;
  if (!/^\d+$/.test(trimmed)) {
    throw new SchemaError(
      `rootfs_size_mb must be a whole number of MB, such as 512; got ${JSON.stringify(value)}.`,
    );
  }
  return Number(trimmed);
}

/**
 * The server's own spelling of a repository URL (see repository-url.ts): the hash, the
 * allow-list check and the feed file all see this, never the client's text.
 */
function repositoryUrl(name: string, url: string): string {
  const result = canonicalRepositoryUrl(url);
  if (result.ok) return result.url;
  throw new SchemaError(`Repository ${name}: the URL ${JSON.stringify(url)} ${result.problem}.`);
}

function ownEntries(record: Record<string, string> | undefined): [string, string][] {
  return record ? Object.entries(record) : [];
}
