import { createHash } from "node:crypto";
import type { NormalizedRequest } from "./normalize-request.js";

/** Bump when the encoding changes, so old cache entries are not mistaken for new ones. */
const ENCODING_VERSION = "asu-ts/request/1";

/**
 * The canonical text of a request: JSON of a fixed-order array, so no two different
 * requests can encode alike (`["a,b"]` and `["a","b"]` differ, unlike a comma-joined string).
 * Set-like fields are sorted and deduplicated, because their order does not change the
 * image: packages (with `+` already stripped), packages_versions, repositories, keys.
 * Sorting compares code units, never the locale, so every server computes the same text.
 * A snapshot request without `version_code` is pinned by the server to upstream's current
 * revision (snapshot-pin.ts); the pin is one more element, so pinned and unpinned requests,
 * and requests pinned to different revisions, never share a cache entry (docs/decisions/014).
 */
export function canonicalRequest(req: NormalizedRequest, pinnedRevision?: string): string {
  const hasRepositories = Object.keys(req.repositories).length > 0;
  return JSON.stringify([
    ENCODING_VERSION,
    req.distro,
    req.version,
    req.version_code,
    req.target,
    req.profile,
    sortedUnique(req.packages.map((p) => p.replace(/^\+/, ""))),
    sortedEntries(req.packages_versions),
    req.diff_packages,
    req.defaults,
    req.rootfs_size_mb,
    req.filesystem,
    sortedEntries(req.repositories),
    // Without repositories the mode cannot change the image.
    hasRepositories ? req.repositories_mode : "append",
    sortedUnique(req.repository_keys),
    ...(pinnedRevision ? [pinnedRevision] : []),
  ]);
}

/**
 * The full sha256 (64 hex digits) of the canonical request: the cache key, job id and store
 * folder. Never truncated: a truncated hash once let an attacker poison upstream's cache.
 */
export function requestHash(req: NormalizedRequest, pinnedRevision?: string): string {
  return createHash("sha256").update(canonicalRequest(req, pinnedRevision)).digest("hex");
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function sortedUnique(values: string[]): string[] {
  return [...new Set(values)].sort(byCodeUnit);
}

function sortedEntries(record: Record<string, string>): [string, string][] {
  return Object.entries(record).sort(([a], [b]) => byCodeUnit(a, b));
}
