import path from "node:path";
import type { BranchConfig } from "../config/config.js";
import { ValidationError } from "../shared/errors.js";
import { ImageBuilderUnpackError } from "./imagebuilder-errors.js";
import { ImageBuilderInstaller, type ImageBuilderStage } from "./imagebuilder-installer.js";
import { ImageBuilderLeases, type ImageBuilderLease } from "./imagebuilder-leases.js";
import type { ImageBuilderLogger } from "./imagebuilder-tree.js";
import { KeyLock } from "./key-lock.js";
import type { ProcessRunner } from "./process-runner.js";
import { Sha256sumsSource } from "./sha256sums-source.js";

export type { ImageBuilderStage } from "./imagebuilder-installer.js";
export type { ImageBuilderLease } from "./imagebuilder-leases.js";
export type { ImageBuilderLogger } from "./imagebuilder-tree.js";

export interface ImageBuilderManagerOptions {
  cacheDir: string;
  /** e.g. https://downloads.openwrt.org, without a trailing slash. */
  upstreamUrl: string;
  /** Refuse branches without a usign pubkey (asu.toml `require_signatures`). */
  requireSignatures: boolean;
  fetch?: typeof fetch;
  logger: ImageBuilderLogger;
  processRunner: ProcessRunner;
  /** How long a fetched sha256sums is trusted before it is fetched again. Default 60 s. */
  checkIntervalMs?: number;
  /** Timeout for sha256sums and its signature. Default 30 s. */
  fetchTimeoutMs?: number;
  /** Timeout for the archive download. Default 30 min. */
  downloadTimeoutMs?: number;
  /** Timeout for listing and for extracting the archive, each. Default 15 min. */
  tarTimeoutMs?: number;
  /** Default 4 GiB. */
  maxArchiveBytes?: number;
  /** Sum of the file sizes in the archive. Default 16 GiB. */
  maxUnpackedBytes?: number;
  /** How long to wait for another process that is unpacking the same ImageBuilder. Default 1 h. */
  lockWaitMs?: number;
  /** A lease marker older than this is stale even if its process seems alive. Default 24 h. */
  maxLeaseAgeMs?: number;
  /**
   * Runs once on a freshly unpacked tree, before any build may use it (prepare-imagebuilder.ts:
   * host prerequisite check, local keys, package index). A failure leaves nothing installed.
   */
  prepare?: (tree: string) => Promise<void>;
}

export interface AcquireRequest {
  version: string;
  /** "ath79/generic" */
  target: string;
  branch: BranchConfig;
  onStage?: (stage: ImageBuilderStage) => void;
  /**
   * Read sha256sums now instead of trusting the copy of the last `checkIntervalMs`: the
   * caller's tree had another revision than the build must have (a new snapshot, issue #11).
   */
  refresh?: boolean;
}

const VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const TARGET = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\/[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/**
 * Gets each ImageBuilder once and shares it. Three parts, each in its own module:
 * - which ImageBuilder upstream offers: the signed sha256sums (sha256sums-source.ts);
 * - putting it on disk: download, verify, check the archive, unpack, prepare
 *   (imagebuilder-installer.ts);
 * - leases on the unpacked tree and cleanup of trees nobody needs (imagebuilder-leases.ts).
 * A newer sha256sums (a new snapshot) yields a new tree; old trees go once their last lease
 * is released. The on-disk layout is described in imagebuilder-tree.ts.
 */
export class ImageBuilderManager {
  private readonly sums: Sha256sumsSource;
  private readonly installer: ImageBuilderInstaller;
  private readonly leases: ImageBuilderLeases;

  constructor(options: ImageBuilderManagerOptions) {
    const cacheDir = path.resolve(options.cacheDir);
    const upstreamUrl = options.upstreamUrl.replace(/\/+$/, "");
    const fetchImpl = options.fetch ?? globalThis.fetch;
    const { logger } = options;
    const lockWaitMs = options.lockWaitMs ?? 60 * 60_000;
    // One lock set for installs and leases: its in-process queue must see both.
    const locks = new KeyLock({
      staleMs: 30_000,
      pollMs: 200,
      onCompromised: (lockPath, err) =>
        logger.warn({ lock: `${lockPath}.lock`, err: err.message }, `lost the lock ${lockPath}.lock`),
    });
    this.sums = new Sha256sumsSource({
      cacheDir,
      upstreamUrl,
      requireSignatures: options.requireSignatures,
      fetch: fetchImpl,
      logger,
      checkIntervalMs: options.checkIntervalMs ?? 60_000,
      fetchTimeoutMs: options.fetchTimeoutMs ?? 30_000,
    });
    this.installer = new ImageBuilderInstaller({
      upstreamUrl,
      fetch: fetchImpl,
      logger,
      processRunner: options.processRunner,
      locks,
      lockWaitMs,
      downloadTimeoutMs: options.downloadTimeoutMs ?? 30 * 60_000,
      tarTimeoutMs: options.tarTimeoutMs ?? 15 * 60_000,
      maxArchiveBytes: options.maxArchiveBytes ?? 4 * 1024 ** 3,
      maxUnpackedBytes: options.maxUnpackedBytes ?? 16 * 1024 ** 3,
      prepare: options.prepare,
      onStaleSums: (revision) => this.sums.forget(revision),
    });
    this.leases = new ImageBuilderLeases({
      cacheDir,
      logger,
      locks,
      lockWaitMs,
      maxLeaseAgeMs: options.maxLeaseAgeMs ?? 24 * 60 * 60_000,
    });
  }

  /** Returns a lease on an unpacked, verified ImageBuilder, downloading it first if needed. */
  async acquire(req: AcquireRequest): Promise<ImageBuilderLease> {
    checkVersionAndTarget(req.version, req.target);
    const revision = await this.sums.resolve(req, { fresh: req.refresh === true });
    // gc of another process may remove a tree between "installed" and "leased" if an even
    // newer revision appeared meanwhile; install it again then.
    for (let attempt = 1; ; attempt++) {
      await this.installer.ensureInstalled(revision, req.onStage);
      const lease = await this.leases.lease(revision);
      if (lease !== undefined) return lease;
      if (attempt === 3) {
        throw new ImageBuilderUnpackError(
          `the ImageBuilder ${revision.archiveName} vanished while it was being leased`,
        );
      }
    }
  }

  /**
   * Deletes unpacked trees that are not the newest for their version and target and have no
   * live lease. Returns the deleted revision folders. Trees busy in another process's lock
   * are skipped; the next gc gets them.
   */
  gc(): Promise<string[]> {
    return this.leases.gc();
  }

  /** Leases this manager holds, per unpacked tree (for metrics and tests). */
  activeLeases(): Record<string, number> {
    return this.leases.active();
  }
}

function checkVersionAndTarget(version: string, target: string): void {
  if (!VERSION.test(version) || version.includes("..")) {
    throw new ValidationError(`"${version}" is not a valid version`);
  }
  if (!TARGET.test(target))
    throw new ValidationError(`"${target}" is not a valid target (expected "target/subtarget")`);
}
