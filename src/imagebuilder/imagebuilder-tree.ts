import { mkdir, readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { ImageBuilderUnavailableError } from "./imagebuilder-errors.js";
import { LockTimeoutError, type KeyLock } from "./key-lock.js";
import type { Log } from "../shared/log.js";

/**
 * What the three parts of the ImageBuilder cache share (sha256sums-source.ts,
 * imagebuilder-installer.ts, imagebuilder-leases.ts): a revision, its folders, and the
 * marker that says a tree is complete.
 *
 * Layout under cacheDir:
 * - imagebuilders/<version>/<target_>/<revisionKey>/{<top folder>, .complete, .leases/}
 * - imagebuilders/<version>/<target_>.lock (proper-lockfile)
 */

/** The process logger (structured fields and a message), see src/shared/log.ts. */
export type ImageBuilderLogger = Log;

/** One ImageBuilder as a signed sha256sums names it. */
export interface Revision {
  version: string;
  target: string;
  archiveName: string;
  sha256: string;
  compression: "zst" | "xz";
  revisionKey: string;
  /** The target's folder on the download server, with a trailing slash. */
  baseUrl: string;
  /** imagebuilders/<version>/<target with _>: one lock and one gc unit. */
  keyDir: string;
  revDir: string;
}

/** Written last into a revision folder; its presence means the tree is complete and verified. */
export interface CompleteMarker {
  archiveName: string;
  sha256: string;
  topDir: string;
  version: string;
  target: string;
  completedAt: number;
}

export const COMPLETE = ".complete";

/** The marker of a revision's tree, if that tree is complete and is this very archive. */
export async function readComplete(revision: Revision): Promise<CompleteMarker | undefined> {
  const marker = await readMarker(revision.revDir);
  // The revision key is a short hash; the full sha256 decides.
  if (
    marker === undefined ||
    marker.sha256 !== revision.sha256 ||
    marker.archiveName !== revision.archiveName
  ) {
    return undefined;
  }
  return marker;
}

export async function readMarker(revDir: string): Promise<CompleteMarker | undefined> {
  try {
    return JSON.parse(await readFile(path.join(revDir, COMPLETE), "utf8")) as CompleteMarker;
  } catch {
    return undefined;
  }
}

export async function readdirOrEmpty(dir: string) {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
}

/**
 * Runs fn under the lock of the revision's version and target, which installs and leases
 * share across processes: gc cannot delete a tree between a check and a lease.
 */
export async function withKeyLock<T>(
  locks: KeyLock,
  revision: Revision,
  waitMs: number,
  fn: () => Promise<T>,
): Promise<T> {
  await mkdir(revision.keyDir, { recursive: true, mode: 0o700 });
  try {
    return await locks.withLock(revision.keyDir, waitMs, fn);
  } catch (err) {
    if (err instanceof LockTimeoutError) {
      throw new ImageBuilderUnavailableError(`${err.message} (ImageBuilder ${revision.archiveName})`);
    }
    throw err;
  }
}
