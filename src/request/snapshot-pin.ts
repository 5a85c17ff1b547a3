import type { AsuConfig } from "../config/config.js";
import { isSnapshotVersion, type Catalog } from "../upstream/catalog.js";
import type { UpstreamClient } from "../upstream/upstream-client.js";
import type { NormalizedRequest } from "./normalize-request.js";

export interface SnapshotPinDeps {
  config: Pick<AsuConfig, "imagebuilder_check_interval">;
  catalog: Pick<Catalog, "pathsFor">;
  upstream: Pick<UpstreamClient, "getTargets" | "getProfiles">;
  /** Longest a request waits for upstream because of the pin; default 5 s. */
  pinWaitMs?: number;
}

// A revision as profiles.json writes it (`r28427-6df0e3d02a`); it goes into a hash and a job.
const REVISION = /^[\w.,-]{1,64}$/;

/**
 * The revision a snapshot request without `version_code` is built at: the `version_code` of
 * upstream's current profiles.json for the target (docs/decisions/014). It is part of the
 * request hash, so a result cached before a new snapshot is not served after it (the Firmware
 * Selector and LuCI send no version_code), and the worker builds exactly that revision.
 *
 * Cheap on the cache-hit path: both documents come from the UpstreamClient's memory; the
 * profiles.json is revalidated (a conditional GET) at most once per
 * `imagebuilder_check_interval`, the same interval at which workers re-read sha256sums.
 * Releases, requests that name a version_code, unknown targets and an upstream that does not
 * answer within `pinWaitMs` give undefined: the request is then hashed as it was sent (the
 * revalidation goes on, and the next request has the pin).
 */
export async function snapshotPin(
  request: NormalizedRequest,
  deps: SnapshotPinDeps,
): Promise<string | undefined> {
  if (request.version_code !== "" || !isSnapshotVersion(request.version)) return undefined;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), deps.pinWaitMs ?? 5000);
  });
  try {
    return await Promise.race([currentRevision(request, deps), late]);
  } finally {
    clearTimeout(timer);
  }
}

async function currentRevision(
  request: NormalizedRequest,
  deps: SnapshotPinDeps,
): Promise<string | undefined> {
  try {
    const paths = deps.catalog.pathsFor(request.version);
    if (!paths) return undefined;
    // Only targets upstream lists: made-up ones must not fill the cache with 404s.
    const targets = await deps.upstream.getTargets(paths.path);
    if (!targets || !Object.hasOwn(targets, request.target)) return undefined;
    const profiles = await deps.upstream.getProfiles(paths.path, request.target, {
      maxAgeMs: deps.config.imagebuilder_check_interval * 1000,
    });
    const revision = profiles?.version_code;
    return revision && REVISION.test(revision) ? revision : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a job's pinned revision is one the API could have set (checked by the worker). */
export function isPinnedRevision(value: unknown): value is string {
  return typeof value === "string" && REVISION.test(value);
}
