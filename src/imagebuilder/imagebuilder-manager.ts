import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { BranchConfig } from "../config/config.js";
import { ValidationError } from "../shared/errors.js";
import { verifyMessage } from "../shared/usign.js";
import { checkArchiveEntries, parseTarListing, type ArchiveCheck } from "./archive-listing.js";
import {
  describeError,
  ImageBuilderError,
  ImageBuilderNotFoundError,
  ImageBuilderUnavailableError,
  ImageBuilderUnpackError,
  ImageBuilderVerificationError,
} from "./imagebuilder-errors.js";
import { KeyLock, LockTimeoutError } from "./key-lock.js";
import type { ProcessRunner } from "./process-runner.js";
import { findImageBuilderArchive } from "./sha256sums.js";

export type ImageBuilderStage = "download_imagebuilder" | "unpack_imagebuilder";

export interface ImageBuilderLogger {
  info(msg: string): void;
  warn(msg: string): void;
}

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
}

export interface ImageBuilderLease {
  /** The unpacked ImageBuilder's top folder. */
  root: string;
  revisionKey: string;
  archiveName: string;
  /** Gives the tree back; it may then be garbage-collected if a newer one exists. Idempotent. */
  release(): Promise<void>;
}

interface Revision {
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
interface CompleteMarker {
  archiveName: string;
  sha256: string;
  topDir: string;
  version: string;
  target: string;
  completedAt: number;
}

interface LeaseMarker {
  hostname: string;
  pid: number;
  createdAt: number;
}

interface InstallState {
  promise: Promise<void>;
  stage?: ImageBuilderStage;
  listeners: Set<(stage: ImageBuilderStage) => void>;
}

const COMPLETE = ".complete";
const LEASES = ".leases";
const TAR_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" };
const MAX_SUMS_BYTES = 4 * 1024 * 1024;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const TARGET = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\/[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const UPSTREAM_DEFAULT = /https?:\/\/downloads\.openwrt\.org(?=[/\s"']|$)/gm;

/**
 * Lease ids held by any manager in this process. A lease marker with our pid whose id is not
 * here was left by an earlier process that had the same pid (containers restart as pid 1).
 */
const liveLeases = new Set<string>();

/**
 * Gets each ImageBuilder once and shares it: downloads it (streamed to disk), checks its
 * sha256 against sha256sums and that file's usign signature, checks the archive before
 * unpacking it, and hands out leases on the unpacked tree. A newer sha256sums (a new
 * snapshot) yields a new tree; old trees go once their last lease is released.
 *
 * Layout under cacheDir:
 * - imagebuilders/<version>/<target_>/<revisionKey>/{<top folder>, .complete, .leases/}
 * - imagebuilders/<version>/<target_>.lock (proper-lockfile)
 * - dl/<version>/<target>/ (package downloads, shared by all revisions of the target)
 */
export class ImageBuilderManager {
  private readonly cacheDir: string;
  private readonly upstreamUrl: string;
  private readonly requireSignatures: boolean;
  private readonly fetch: typeof fetch;
  private readonly logger: ImageBuilderLogger;
  private readonly processRunner: ProcessRunner;
  private readonly checkIntervalMs: number;
  private readonly prepare: ((tree: string) => Promise<void>) | undefined;
  private readonly fetchTimeoutMs: number;
  private readonly downloadTimeoutMs: number;
  private readonly tarTimeoutMs: number;
  private readonly maxArchiveBytes: number;
  private readonly maxUnpackedBytes: number;
  private readonly lockWaitMs: number;
  private readonly maxLeaseAgeMs: number;
  private readonly locks: KeyLock;
  private readonly revisions = new Map<string, { at: number; revision: Revision }>();
  private readonly resolving = new Map<string, Promise<Revision>>();
  private readonly installs = new Map<string, InstallState>();
  /** revDir -> lease ids held by this manager. */
  private readonly leases = new Map<string, Set<string>>();

  constructor(options: ImageBuilderManagerOptions) {
    this.cacheDir = path.resolve(options.cacheDir);
    this.upstreamUrl = options.upstreamUrl.replace(/\/+$/, "");
    this.requireSignatures = options.requireSignatures;
    this.fetch = options.fetch ?? globalThis.fetch;
    this.logger = options.logger;
    this.processRunner = options.processRunner;
    this.checkIntervalMs = options.checkIntervalMs ?? 60_000;
    this.fetchTimeoutMs = options.fetchTimeoutMs ?? 30_000;
    this.prepare = options.prepare;
    this.downloadTimeoutMs = options.downloadTimeoutMs ?? 30 * 60_000;
    this.tarTimeoutMs = options.tarTimeoutMs ?? 15 * 60_000;
    this.maxArchiveBytes = options.maxArchiveBytes ?? 4 * 1024 ** 3;
    this.maxUnpackedBytes = options.maxUnpackedBytes ?? 16 * 1024 ** 3;
    this.lockWaitMs = options.lockWaitMs ?? 60 * 60_000;
    this.maxLeaseAgeMs = options.maxLeaseAgeMs ?? 24 * 60 * 60_000;
    this.locks = new KeyLock({
      staleMs: 30_000,
      pollMs: 200,
      onCompromised: (lockPath, err) => this.logger.warn(`lost the lock ${lockPath}.lock: ${err.message}`),
    });
  }

  /** Returns a lease on an unpacked, verified ImageBuilder, downloading it first if needed. */
  async acquire(req: AcquireRequest): Promise<ImageBuilderLease> {
    checkVersionAndTarget(req.version, req.target);
    const revision = await this.resolve(req);
    // gc of another process may remove a tree between "installed" and "leased" if an even
    // newer revision appeared meanwhile; install it again then.
    for (let attempt = 1; ; attempt++) {
      await this.ensureInstalled(revision, req.onStage);
      const lease = await this.withKeyLock(revision, () => this.createLease(revision));
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
  async gc(): Promise<string[]> {
    const root = path.join(this.cacheDir, "imagebuilders");
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

  /** Leases this manager holds, per unpacked tree (for metrics and tests). */
  activeLeases(): Record<string, number> {
    return Object.fromEntries([...this.leases].map(([dir, ids]) => [dir, ids.size]));
  }

  // --- sha256sums ---------------------------------------------------------------------------

  private async resolve(req: AcquireRequest): Promise<Revision> {
    const key = `${req.version}/${req.target}`;
    const cached = this.revisions.get(key);
    if (cached && Date.now() - cached.at < this.checkIntervalMs) return cached.revision;
    let pending = this.resolving.get(key);
    if (!pending) {
      pending = this.fetchRevision(req)
        .then((revision) => {
          this.revisions.set(key, { at: Date.now(), revision });
          return revision;
        })
        .finally(() => this.resolving.delete(key));
      this.resolving.set(key, pending);
    }
    return pending;
  }

  private async fetchRevision(req: AcquireRequest): Promise<Revision> {
    const { branch, version, target } = req;
    const branchPath = branch.path.replaceAll("{version}", version);
    if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(branchPath) || branchPath.split("/").includes("..")) {
      throw new ValidationError(`branches.${branch.name}.path "${branch.path}" does not give a usable path`);
    }
    const baseUrl = `${this.upstreamUrl}/${branchPath}/targets/${target}/`;
    const sumsUrl = `${baseUrl}sha256sums`;
    if (branch.pubkey === undefined && this.requireSignatures) {
      throw new ImageBuilderVerificationError(
        `branch "${branch.name}" has no pubkey, and require_signatures is on: set branches.${branch.name}.pubkey ` +
          `to the usign public key that signs ${sumsUrl}`,
      );
    }
    const sums = await this.fetchSmall(sumsUrl);
    if (branch.pubkey !== undefined) {
      const sigUrl = `${sumsUrl}.sig`;
      let sig: Buffer;
      try {
        sig = await this.fetchSmall(sigUrl);
      } catch (err) {
        if (err instanceof ImageBuilderNotFoundError) {
          throw new ImageBuilderVerificationError(
            `${sigUrl} is missing, but branches.${branch.name}.pubkey is set; refusing an unsigned sha256sums`,
          );
        }
        throw err;
      }
      const verdict = verifyMessage(sums, sig.toString("utf8"), branch.pubkey);
      if (!verdict.ok) {
        throw new ImageBuilderVerificationError(
          `the signature ${sigUrl} does not verify with branches.${branch.name}.pubkey (${verdict.reason}); ` +
            "refusing the ImageBuilder",
        );
      }
    } else {
      this.logger.warn(
        `branch "${branch.name}" has no pubkey: trusting ${sumsUrl} without a signature check`,
      );
    }
    const ref = findImageBuilderArchive(sums.toString("utf8"));
    if (ref === undefined) {
      throw new ImageBuilderNotFoundError(
        `${sumsUrl} lists no ImageBuilder (openwrt-imagebuilder-*.Linux-x86_64.tar.zst or .tar.xz)`,
      );
    }
    const revisionKey = createHash("sha256").update(ref.line).digest("hex").slice(0, 16);
    const keyDir = path.join(this.cacheDir, "imagebuilders", version, target.replace("/", "_"));
    return {
      version,
      target,
      archiveName: ref.name,
      sha256: ref.sha256,
      compression: ref.compression,
      revisionKey,
      baseUrl,
      keyDir,
      revDir: path.join(keyDir, revisionKey),
    };
  }

  /** Fetches a small file (sha256sums, its signature) with a size cap and a timeout. */
  private async fetchSmall(url: string): Promise<Buffer> {
    const signal = AbortSignal.timeout(this.fetchTimeoutMs);
    try {
      const res = await this.fetch(url, { signal, redirect: "follow" });
      if (!res.ok) {
        await res.body?.cancel().catch(() => undefined);
        throw httpError(url, res.status);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      if (res.body) {
        for await (const chunk of Readable.fromWeb(res.body as WebReadableStream<Uint8Array>)) {
          size += (chunk as Buffer).length;
          if (size > MAX_SUMS_BYTES) {
            throw new ImageBuilderVerificationError(`${url} is larger than ${MAX_SUMS_BYTES} bytes`);
          }
          chunks.push(chunk as Buffer);
        }
      }
      return Buffer.concat(chunks);
    } catch (err) {
      if (err instanceof ImageBuilderError) throw err;
      throw new ImageBuilderUnavailableError(`could not fetch ${url}: ${describeError(err)}`);
    }
  }

  // --- download and unpack ------------------------------------------------------------------

  private async ensureInstalled(
    revision: Revision,
    onStage?: (stage: ImageBuilderStage) => void,
  ): Promise<void> {
    if ((await readComplete(revision)) !== undefined) return;
    let state = this.installs.get(revision.revDir);
    if (!state) {
      const listeners = new Set<(stage: ImageBuilderStage) => void>();
      const created: InstallState = { promise: Promise.resolve(), listeners };
      const setStage = (stage: ImageBuilderStage): void => {
        created.stage = stage;
        for (const listener of listeners) {
          try {
            listener(stage);
          } catch (err) {
            this.logger.warn(`onStage callback failed: ${describeError(err)}`);
          }
        }
      };
      created.promise = this.withKeyLock(revision, () => this.install(revision, setStage)).finally(() =>
        this.installs.delete(revision.revDir),
      );
      state = created;
      this.installs.set(revision.revDir, state);
    }
    if (onStage) {
      state.listeners.add(onStage);
      if (state.stage !== undefined) onStage(state.stage);
    }
    await state.promise;
  }

  /** Runs under the key lock: only one process downloads and unpacks a given ImageBuilder. */
  private async install(revision: Revision, setStage: (stage: ImageBuilderStage) => void): Promise<void> {
    if ((await readComplete(revision)) !== undefined) return;
    const { keyDir, archiveName } = revision;
    // Under the lock, leftovers are from a process that died mid-way.
    for (const entry of await readdirOrEmpty(keyDir)) {
      if (entry.name.startsWith(".tmp-"))
        await rm(path.join(keyDir, entry.name), { recursive: true, force: true });
    }
    await rm(revision.revDir, { recursive: true, force: true });

    const started = performance.now();
    this.logger.info(`downloading ImageBuilder ${revision.baseUrl}${archiveName}`);
    setStage("download_imagebuilder");
    const tmp = await mkdtemp(path.join(keyDir, ".tmp-"));
    try {
      const archive = path.join(tmp, `archive.tar.${revision.compression}`);
      const bytes = await this.download(revision, archive);
      setStage("unpack_imagebuilder");
      const topDir = await this.checkArchive(revision, archive);
      const staging = path.join(tmp, "rev");
      await mkdir(staging);
      await this.extract(revision, archive, staging);
      const root = path.join(staging, topDir);
      const st = await lstat(root).catch(() => undefined);
      if (!st?.isDirectory()) {
        throw new ImageBuilderUnpackError(`${archiveName} did not unpack to a folder "${topDir}"`);
      }
      await this.rewriteFeeds(root);
      if (this.prepare) {
        const prepStarted = performance.now();
        try {
          await this.prepare(root);
        } catch (err) {
          this.logger.warn(`ImageBuilder ${archiveName} could not be prepared: ${describeError(err)}`);
          throw err;
        }
        this.logger.info(
          `ImageBuilder ${archiveName} prepared in ${Math.round(performance.now() - prepStarted)} ms`,
        );
      }
      const marker: CompleteMarker = {
        archiveName,
        sha256: revision.sha256,
        topDir,
        version: revision.version,
        target: revision.target,
        completedAt: Date.now(),
      };
      await writeFile(path.join(staging, COMPLETE), `${JSON.stringify(marker)}\n`);
      await rm(archive, { force: true });
      // One rename: other processes see either no tree or a complete one.
      try {
        await rename(staging, revision.revDir);
      } catch (err) {
        // Only if our lock was lost (onCompromised) can another process have won the race.
        if ((await readComplete(revision)) === undefined) throw err;
        this.logger.warn(`another process unpacked ${archiveName} at the same time; using its tree`);
        return;
      }
      const ms = Math.round(performance.now() - started);
      this.logger.info(
        `ImageBuilder ${archiveName} (${bytes} bytes) ready in ${ms} ms at ${revision.revDir}`,
      );
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  /** Streams the archive to disk while hashing it; never holds it in memory. */
  private async download(revision: Revision, file: string): Promise<number> {
    const url = `${revision.baseUrl}${revision.archiveName}`;
    const hash = createHash("sha256");
    let bytes = 0;
    const max = this.maxArchiveBytes;
    try {
      const res = await this.fetch(url, {
        signal: AbortSignal.timeout(this.downloadTimeoutMs),
        redirect: "follow",
      });
      if (!res.ok || !res.body) {
        await res.body?.cancel().catch(() => undefined);
        // A 404 here usually means a new snapshot replaced the archive after we read
        // sha256sums: worth a retry with a fresh sha256sums.
        this.forget(revision);
        throw new ImageBuilderUnavailableError(`could not download ${url}: HTTP ${res.status}`);
      }
      const length = Number(res.headers.get("content-length") ?? "0");
      if (length > max) {
        throw new ImageBuilderVerificationError(`${url} is ${length} bytes, more than the limit of ${max}`);
      }
      await pipeline(
        Readable.fromWeb(res.body as WebReadableStream<Uint8Array>),
        async function* (source: AsyncIterable<Buffer>) {
          for await (const chunk of source) {
            bytes += chunk.length;
            if (bytes > max)
              throw new ImageBuilderVerificationError(`${url} is larger than the limit of ${max} bytes`);
            hash.update(chunk);
            yield chunk;
          }
        },
        createWriteStream(file, { mode: 0o600 }),
      );
    } catch (err) {
      if (err instanceof ImageBuilderError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOSPC" || code === "EDQUOT") {
        // Kept as the cause: the worker tells the user and the operator the disk is full.
        throw Object.assign(new ImageBuilderUnpackError(`could not save ${url}: ${describeError(err)}`), {
          cause: err,
        });
      }
      throw new ImageBuilderUnavailableError(`could not download ${url}: ${describeError(err)}`);
    }
    const digest = hash.digest("hex");
    if (digest !== revision.sha256) {
      this.forget(revision);
      throw new ImageBuilderVerificationError(
        `sha256 mismatch for ${revision.archiveName}: sha256sums says ${revision.sha256}, the download has ${digest}`,
      );
    }
    return bytes;
  }

  /** Lists the archive and refuses anything that could write outside the tree. */
  private async checkArchive(revision: Revision, archive: string): Promise<string> {
    const result = await this.processRunner.run({
      argv: [
        "tar",
        compressionFlag(revision),
        "-tv",
        "--quoting-style=escape",
        "--numeric-owner",
        "--full-time",
      ].concat(["-f", archive]),
      env: TAR_ENV,
      timeoutMs: this.tarTimeoutMs,
      maxOutputBytes: 256 * 1024 * 1024,
    });
    if (result.code !== 0) {
      throw new ImageBuilderUnpackError(
        `listing ${revision.archiveName} failed (${exitText(result)}): ${lastLines(result.stderr)}`,
      );
    }
    const unsafe = (reason: string): ImageBuilderVerificationError =>
      new ImageBuilderVerificationError(`unsafe ImageBuilder archive ${revision.archiveName}: ${reason}`);
    if (result.truncated) throw unsafe("its file list is too long to check");
    let check: ArchiveCheck;
    try {
      check = checkArchiveEntries(parseTarListing(result.stdout), this.maxUnpackedBytes);
    } catch (err) {
      throw unsafe(describeError(err));
    }
    if (!check.ok) throw unsafe(check.reason);
    return check.topDir;
  }

  private async extract(revision: Revision, archive: string, dest: string): Promise<void> {
    const result = await this.processRunner.run({
      argv: [
        "tar",
        compressionFlag(revision),
        "-x",
        "--no-same-owner",
        "--no-same-permissions",
        "-f",
        archive,
      ].concat(["-C", dest]),
      env: TAR_ENV,
      timeoutMs: this.tarTimeoutMs,
      maxOutputBytes: 1024 * 1024,
    });
    if (result.code !== 0) {
      throw new ImageBuilderUnpackError(
        `unpacking ${revision.archiveName} failed (${exitText(result)}): ${lastLines(result.stderr)}`,
      );
    }
  }

  /**
   * Points the ImageBuilder's package feeds at upstream_url. Without this, a mirror or cache
   * configured as upstream_url is bypassed for packages (upstream ASU issue #1623).
   */
  private async rewriteFeeds(root: string): Promise<void> {
    if (this.upstreamUrl === "https://downloads.openwrt.org") return;
    for (const name of ["repositories.conf", "repositories"]) {
      const file = path.join(root, name);
      const st = await lstat(file).catch(() => undefined);
      if (st === undefined) continue;
      if (!st.isFile()) {
        this.logger.warn(`not rewriting ${name} in the ImageBuilder: it is not a regular file`);
        continue;
      }
      const text = await readFile(file, "utf8");
      const rewritten = text.replace(UPSTREAM_DEFAULT, () => this.upstreamUrl);
      if (rewritten === text) continue;
      // A new file and a rename: the old name may be a hardlink to another file in the tree.
      await writeFile(`${file}.asu-new`, rewritten, { mode: st.mode & 0o777 });
      await rename(`${file}.asu-new`, file);
    }
  }

  /** Drops the cached sha256sums so that the next acquire fetches it again. */
  private forget(revision: Revision): void {
    const key = `${revision.version}/${revision.target}`;
    if (this.revisions.get(key)?.revision.revDir === revision.revDir) this.revisions.delete(key);
  }

  // --- leases and gc ------------------------------------------------------------------------

  private async withKeyLock<T>(revision: Revision, fn: () => Promise<T>): Promise<T> {
    await mkdir(revision.keyDir, { recursive: true, mode: 0o700 });
    try {
      return await this.locks.withLock(revision.keyDir, this.lockWaitMs, fn);
    } catch (err) {
      if (err instanceof LockTimeoutError) {
        throw new ImageBuilderUnavailableError(`${err.message} (ImageBuilder ${revision.archiveName})`);
      }
      throw err;
    }
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
    const held = this.leases.get(revision.revDir) ?? new Set<string>();
    held.add(leaseId);
    this.leases.set(revision.revDir, held);

    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      liveLeases.delete(leaseId);
      const ids = this.leases.get(revision.revDir);
      ids?.delete(leaseId);
      if (ids?.size === 0) this.leases.delete(revision.revDir);
      await rm(leaseFile, { force: true });
      try {
        await this.gcKey(revision.keyDir);
      } catch (err) {
        this.logger.warn(`ImageBuilder gc after release failed: ${describeError(err)}`);
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
    const outcome = await this.locks.tryWithLock(keyDir, async () => {
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
        this.logger.warn(`could not delete ${dir}: ${describeError(err)}`),
      );
    }
    for (const dir of outcome.value.removed) this.logger.info(`removed unused ImageBuilder ${dir}`);
    return outcome.value.removed;
  }

  /** Whether any process still holds a lease on a tree; removes markers of dead holders. */
  private async isLeased(revDir: string): Promise<boolean> {
    if ((this.leases.get(revDir)?.size ?? 0) > 0) return true;
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
      this.logger.warn(`removing the stale ImageBuilder lease ${file}`);
      await rm(file, { force: true });
    }
    return alive;
  }

  private isStaleLease(leaseId: string, marker: LeaseMarker): boolean {
    if (Date.now() - marker.createdAt > this.maxLeaseAgeMs) return true;
    if (marker.hostname !== os.hostname()) return false;
    if (marker.pid === process.pid) return !liveLeases.has(leaseId);
    return !pidAlive(marker.pid);
  }
}

function checkVersionAndTarget(version: string, target: string): void {
  if (!VERSION.test(version) || version.includes("..")) {
    throw new ValidationError(`"${version}" is not a valid version`);
  }
  if (!TARGET.test(target))
    throw new ValidationError(`"${target}" is not a valid target (expected "target/subtarget")`);
}

async function readComplete(revision: Revision): Promise<CompleteMarker | undefined> {
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

async function readMarker(revDir: string): Promise<CompleteMarker | undefined> {
  try {
    return JSON.parse(await readFile(path.join(revDir, COMPLETE), "utf8")) as CompleteMarker;
  } catch {
    return undefined;
  }
}

async function readdirOrEmpty(dir: string) {
  try {
    return await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
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

function httpError(url: string, status: number): ImageBuilderError {
  if (status === 404 || status === 410)
    return new ImageBuilderNotFoundError(`${url} was not found (HTTP ${status})`);
  if (status >= 500 || status === 408 || status === 429) {
    return new ImageBuilderUnavailableError(`${url} answered HTTP ${status}`);
  }
  return new ImageBuilderError(502, "imagebuilder_unavailable", `${url} answered HTTP ${status}`, false);
}

function compressionFlag(revision: Revision): string {
  return revision.compression === "zst" ? "--zstd" : "--xz";
}

function exitText(result: { code: number | null; signal: string | null; timedOut: boolean }): string {
  if (result.timedOut) return "timed out";
  return result.code !== null ? `exit ${result.code}` : `signal ${result.signal}`;
}

function lastLines(text: string): string {
  return text.trim().split("\n").slice(-5).join("\n");
}
