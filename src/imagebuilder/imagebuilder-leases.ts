import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describeError } from "./imagebuilder-errors.js";
import {
  readComplete,
  readdirOrEmpty,
  readMarker,
  withKeyLock,
  type CompleteMarker,
  type ImageBuilderLogger,
  type Revision,
} from "./imagebuilder-tree.js";
import type { KeyLock } from "./key-lock.js";

export interface ImageBuilderLease {
  /** The unpacked ImageBuilder's top folder. */
  root: string;
  revisionKey: string;
  archiveName: string;
  /** Gives the tree back; it may then be garbage-collected if a newer one exists. Idempotent. */
  release(): Promise<void>;
}

export interface ImageBuilderLeasesOptions {
  /** Absolute; trees live below `<cacheDir>/imagebuilders`. */
  cacheDir: string;
  logger: ImageBuilderLogger;
  /** Shared with the installer: one lock per version and target. */
  locks: KeyLock;
  lockWaitMs: number;
  /** A lease marker older than this is stale even if its process seems alive. */
  maxLeaseAgeMs: number;
}

interface LeaseMarker {
  hostname: string;
  pid: number;
  createdAt: number;
}

const LEASES = ".leases";

/**
 * Lease ids held by any manager in this process. A lease marker with our pid whose id is not
 * here was left by an earlier process that had the same pid (containers restart as pid 1).
 */
const liveLeases = new Set<string>();

/**
 * Leases on unpacked trees, and their cleanup. A lease is a marker file in the tree's
 * `.leases/` (so other processes on the host see it too); a tree that is not the newest of
 * its version and target and has no live lease is deleted, by the gc after a release or by
 * an explicit gc. Markers of dead processes, or older than maxLeaseAgeMs, are stale.
 */
export class ImageBuilderLeases {
  /** revDir -> lease ids held by this manager. */
  private readonly held = new Map<string, Set<string>>();

  constructor(private readonly options: ImageBuilderLeasesOptions) {}

  /** A lease on the revision's tree, or undefined if the tree is not (or no longer) there. */
  lease(revision: Revision): Promise<ImageBuilderLease | undefined> {
    return withKeyLock(this.options.locks, revision, this.options.lockWaitMs, () =>
      this.createLease(revision),
    );
  }

  /**
   * Deletes unpacked trees that are not the newest for their version and target and have no
   * live lease. Returns the deleted revision folders. Trees busy in another process's lock
   * are skipped; the next gc gets them.
   */
  async gc(): Promise<string[]> {
    const root = path.join(this.options.cacheDir, "imagebuilders");
    const removed: string[] = [];
    for (const version of await readdirOrEmpty(root)) {
      if (!version.isDirectory()) continue;
      for (const target of await readdirOrEmpty(path.join(root, version.name))) {
        if (!target.isDirectory() || target.name.endsWith(".lock")) continue;
        removed.push(...(await this.gcKey(path.join(root, version.name, target.name))));
      }
    }
    return removed;
  }

  /** Leases this manager holds, per unpacked tree. */
  active(): Record<string, number> {
    return Object.fromEntries([...this.held].map(([dir, ids]) => [dir, ids.size]));
  }

  /** Runs under the key lock, so gc cannot delete the tree between the check and the marker. */
  private async createLease(revision: Revision): Promise<ImageBuilderLease | undefined> {
    const marker = await readComplete(revision);
    if (marker === undefined) return undefined;
    const hostname = os.hostname();
    const leaseId = `${hostname.replace(/[^\w.-]/g, "_")}-${process.pid}-${randomBytes(6).toString("hex")}`;
    const leaseDir = path.join(revision.revDir, LEASES);
    const leaseFile = path.join(leaseDir, leaseId);
    await mkdir(leaseDir, { recursive: true });
    const content: LeaseMarker = { hostname, pid: process.pid, createdAt: Date.now() };
    await writeFile(leaseFile, `${JSON.stringify(content)}\n`);
    liveLeases.add(leaseId);
    const ids = this.held.get(revision.revDir) ?? new Set<string>();
    ids.add(leaseId);
    this.held.set(revision.revDir, ids);

    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      liveLeases.delete(leaseId);
      const mine = this.held.get(revision.revDir);
      mine?.delete(leaseId);
      if (mine?.size === 0) this.held.delete(revision.revDir);
      await rm(leaseFile, { force: true });
      try {
        await this.gcKey(revision.keyDir);
      } catch (err) {
        this.options.logger.warn({ err: describeError(err) }, "ImageBuilder gc after release failed");
      }
    };
    return {
      root: path.join(revision.revDir, marker.topDir),
      revisionKey: revision.revisionKey,
      archiveName: marker.archiveName,
      release,
    };
  }

  private async gcKey(keyDir: string): Promise<string[]> {
    const { locks, logger } = this.options;
    const outcome = await locks.tryWithLock(keyDir, async () => {
      const trash: string[] = [];
      const removed: string[] = [];
      const complete: { dir: string; marker: CompleteMarker }[] = [];
      for (const entry of await readdirOrEmpty(keyDir)) {
        if (!entry.isDirectory()) continue;
        const dir = path.join(keyDir, entry.name);
        if (entry.name.startsWith(".trash-")) {
          trash.push(dir);
          continue;
        }
        if (entry.name.startsWith(".")) continue;
        const marker = await readMarker(dir);
        if (marker !== undefined) complete.push({ dir, marker });
      }
      // Newest per target: two targets could share a folder name ("a_b/c", "a/b_c").
      const newest = new Map<string, number>();
      for (const { marker } of complete) {
        newest.set(marker.target, Math.max(newest.get(marker.target) ?? 0, marker.completedAt));
      }
      for (const { dir, marker } of complete) {
        if (marker.completedAt === newest.get(marker.target)) continue;
        if (await this.isLeased(dir)) continue;
        // Rename under the lock, delete after it: acquire never sees a half-deleted tree.
        const doomed = path.join(keyDir, `.trash-${randomBytes(6).toString("hex")}`);
        await rename(dir, doomed);
        trash.push(doomed);
        removed.push(dir);
      }
      return { trash, removed };
    });
    if (!outcome.locked) return [];
    for (const dir of outcome.value.trash) {
      await rm(dir, { recursive: true, force: true }).catch((err: unknown) =>
        logger.warn({ dir, err: describeError(err) }, `could not delete ${dir}: ${describeError(err)}`),
      );
    }
    for (const dir of outcome.value.removed) logger.info({ dir }, `removed unused ImageBuilder ${dir}`);
    return outcome.value.removed;
  }

  /** Whether any process still holds a lease on a tree; removes markers of dead holders. */
  private async isLeased(revDir: string): Promise<boolean> {
    if ((this.held.get(revDir)?.size ?? 0) > 0) return true;
    const leaseDir = path.join(revDir, LEASES);
    let alive = false;
    for (const entry of await readdirOrEmpty(leaseDir)) {
      const file = path.join(leaseDir, entry.name);
      let marker: LeaseMarker | undefined;
      try {
        marker = JSON.parse(await readFile(file, "utf8")) as LeaseMarker;
      } catch {
        marker = undefined;
      }
      if (marker !== undefined && !this.isStaleLease(entry.name, marker)) {
        alive = true;
        continue;
      }
      this.options.logger.warn({ file }, `removing the stale ImageBuilder lease ${file}`);
      await rm(file, { force: true });
    }
    return alive;
  }

  private isStaleLease(leaseId: string, marker: LeaseMarker): boolean {
    if (Date.now() - marker.createdAt > this.options.maxLeaseAgeMs) return true;
    if (marker.hostname !== os.hostname()) return false;
    if (marker.pid === process.pid) return !liveLeases.has(leaseId);
    return !pidAlive(marker.pid);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
