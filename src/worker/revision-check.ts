import type { BuildJobData } from "../queue/build-job.js";
import { BuildError } from "../shared/errors.js";
import { isSnapshotVersion } from "../upstream/catalog.js";

/**
 * How long a snapshot build that upstream cannot serve yet is remembered: a snapshot is
 * published target by target, so a minute later the ImageBuilder is likely there.
 */
export const STALE_REVISION_TTL_SECONDS = 60;

/**
 * A snapshot's ImageBuilder still has another revision than the build must have, although
 * sha256sums was read again just now: upstream is publishing, or the client asked for a
 * revision upstream no longer offers. The server's view, not the user's doing: kept for
 * STALE_REVISION_TTL_SECONDS, not build_failure_ttl.
 */
export class StaleRevisionError extends BuildError {
  constructor(detail: string, logs: { stdout: string; stderr: string }) {
    super(detail, { userFault: false, retryable: false, ...logs });
  }
}

/** The tree may be a snapshot behind: the pipeline re-reads sha256sums and builds again, once. */
export class ImageBuilderBehindError extends Error {
  constructor(actual: string, expected: string) {
    super(`the ImageBuilder has ${actual}, the build needs ${expected}`);
    this.name = "ImageBuilderBehindError";
  }
}

/** The revision a build must have: the client's version_code, or the API's snapshot pin. */
export function expectedRevision(job: BuildJobData): { revision: string; pinned: boolean } | undefined {
  if (job.request.version_code) return { revision: job.request.version_code, pinned: false };
  if (job.snapshot_revision) return { revision: job.snapshot_revision, pinned: true };
  return undefined;
}

/**
 * Compares the ImageBuilder's revision (from `make info`) with the one the build must have.
 * Returns when the build may go on. Throws ImageBuilderBehindError for a snapshot tree that
 * is not yet `refreshed` (owut sends the version_code of upstream's newest profiles.json,
 * which may be newer than the sha256sums the worker read up to a minute ago, issue #11), and
 * a BuildError when the revision is wrong for good.
 */
export function checkRevision(
  actual: string,
  job: BuildJobData,
  refreshed: boolean,
  logs: { stdout: string; stderr: string },
): void {
  const expected = expectedRevision(job);
  if (expected === undefined || actual === expected.revision) return;
  const wanted = expected.revision;
  if (!isSnapshotVersion(job.request.version)) {
    // A release's ImageBuilder never changes: asking for another revision is the client's error.
    throw new BuildError(`Error: Received incorrect version ${actual} (requested ${wanted})`, {
      userFault: true,
      ...logs,
    });
  }
  // The API's copy of profiles.json may be older than this worker's sha256sums: a newer tree
  // serves a pinned request (it sent no version_code) at least as well.
  if (expected.pinned && isNewerRevision(actual, wanted)) return;
  if (!refreshed) throw new ImageBuilderBehindError(actual, wanted);
  throw new StaleRevisionError(
    expected.pinned
      ? `Error: Upstream's profiles.json names snapshot ${wanted}, but the newest ImageBuilder upstream offers has ${actual}: the snapshot is still being published. Please try again in a minute.`
      : `Error: Received incorrect version ${actual} (requested ${wanted}). The newest ImageBuilder upstream offers (checked just now) has ${actual}; if ${wanted} was just published, try again in a minute.`,
    logs,
  );
}

/** r30042-… is newer than r30000-…; false when either is not written that way. */
function isNewerRevision(a: string, b: string): boolean {
  const x = /^r(\d+)-/.exec(a);
  const y = /^r(\d+)-/.exec(b);
  return x !== null && y !== null && Number(x[1]) > Number(y[1]);
}
