import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { checkArchiveEntries, parseTarListing, type ArchiveCheck } from "./archive-listing.js";
import {
  describeError,
  ImageBuilderError,
  ImageBuilderUnavailableError,
  ImageBuilderUnpackError,
  ImageBuilderVerificationError,
} from "./imagebuilder-errors.js";
import {
  COMPLETE,
  readComplete,
  readdirOrEmpty,
  withKeyLock,
  type CompleteMarker,
  type ImageBuilderLogger,
  type Revision,
} from "./imagebuilder-tree.js";
import type { KeyLock } from "./key-lock.js";
import type { ProcessRunner } from "./process-runner.js";

export type ImageBuilderStage = "download_imagebuilder" | "unpack_imagebuilder";

export interface ImageBuilderInstallerOptions {
  /** e.g. https://downloads.openwrt.org, without a trailing slash. */
  upstreamUrl: string;
  fetch: typeof fetch;
  logger: ImageBuilderLogger;
  processRunner: ProcessRunner;
  /** Shared with the leases: one lock per version and target. */
  locks: KeyLock;
  lockWaitMs: number;
  downloadTimeoutMs: number;
  /** For listing and for extracting the archive, each. */
  tarTimeoutMs: number;
  maxArchiveBytes: number;
  /** Sum of the file sizes in the archive. */
  maxUnpackedBytes: number;
  /** Runs once on a freshly unpacked tree, before any build may use it. */
  prepare: ((tree: string) => Promise<void>) | undefined;
  /**
   * The archive is gone or is not what sha256sums said (a new snapshot replaced it after
   * sha256sums was read): sha256sums must be read again before the next attempt.
   */
  onStaleSums: (revision: Revision) => void;
}

interface InstallState {
  promise: Promise<void>;
  stage?: ImageBuilderStage;
  listeners: Set<(stage: ImageBuilderStage) => void>;
}

const TAR_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" };
const UPSTREAM_DEFAULT = /https?:\/\/downloads\.openwrt\.org(?=[/\s"']|$)/gm;

/**
 * Puts a verified ImageBuilder on disk once: downloads it (streamed, hashed on the way),
 * checks its sha256 against sha256sums, lists the archive and refuses anything that could
 * write outside the tree, unpacks it, points its feeds at upstream_url, runs the `prepare`
 * hook, and only then renames the complete tree into place. One install per revision runs
 * at a time in this process (others wait for it) and across processes (the key lock).
 */
export class ImageBuilderInstaller {
  private readonly installs = new Map<string, InstallState>();

  constructor(private readonly options: ImageBuilderInstallerOptions) {}

  async ensureInstalled(revision: Revision, onStage?: (stage: ImageBuilderStage) => void): Promise<void> {
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
            this.options.logger.warn({ err: describeError(err) }, "onStage callback failed");
          }
        }
      };
      created.promise = withKeyLock(this.options.locks, revision, this.options.lockWaitMs, () =>
        this.install(revision, setStage),
      ).finally(() => this.installs.delete(revision.revDir));
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
    const { logger, prepare } = this.options;
    const { keyDir, archiveName } = revision;
    // Under the lock, leftovers are from a process that died mid-way.
    for (const entry of await readdirOrEmpty(keyDir)) {
      if (entry.name.startsWith(".tmp-"))
        await rm(path.join(keyDir, entry.name), { recursive: true, force: true });
    }
    await rm(revision.revDir, { recursive: true, force: true });

    const started = performance.now();
    logger.info(
      { url: `${revision.baseUrl}${archiveName}` },
      `downloading ImageBuilder ${revision.baseUrl}${archiveName}`,
    );
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
      if (prepare) {
        const prepStarted = performance.now();
        try {
          await prepare(root);
        } catch (err) {
          logger.warn(
            { archive: archiveName, err: describeError(err) },
            `ImageBuilder ${archiveName} could not be prepared: ${describeError(err)}`,
          );
          throw err;
        }
        const prepMs = Math.round(performance.now() - prepStarted);
        logger.info(
          { archive: archiveName, ms: prepMs },
          `ImageBuilder ${archiveName} prepared in ${prepMs} ms`,
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
        logger.warn(
          { archive: archiveName },
          `another process unpacked ${archiveName} at the same time; using its tree`,
        );
        return;
      }
      const ms = Math.round(performance.now() - started);
      logger.info(
        { archive: archiveName, bytes, ms, dir: revision.revDir },
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
    const max = this.options.maxArchiveBytes;
    try {
      const res = await this.options.fetch(url, {
        signal: AbortSignal.timeout(this.options.downloadTimeoutMs),
        redirect: "follow",
      });
      if (!res.ok || !res.body) {
        await res.body?.cancel().catch(() => undefined);
        // A 404 here usually means a new snapshot replaced the archive after we read
        // sha256sums: worth a retry with a fresh sha256sums.
        this.options.onStaleSums(revision);
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
      this.options.onStaleSums(revision);
      throw new ImageBuilderVerificationError(
        `sha256 mismatch for ${revision.archiveName}: sha256sums says ${revision.sha256}, the download has ${digest}`,
      );
    }
    return bytes;
  }

  /** Lists the archive and refuses anything that could write outside the tree. */
  private async checkArchive(revision: Revision, archive: string): Promise<string> {
    const result = await this.options.processRunner.run({
      argv: [
        "tar",
        compressionFlag(revision),
        "-tv",
        "--quoting-style=escape",
        "--numeric-owner",
        "--full-time",
      ].concat(["-f", archive]),
      env: TAR_ENV,
      timeoutMs: this.options.tarTimeoutMs,
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
      check = checkArchiveEntries(parseTarListing(result.stdout), this.options.maxUnpackedBytes);
    } catch (err) {
      throw unsafe(describeError(err));
    }
    if (!check.ok) throw unsafe(check.reason);
    return check.topDir;
  }

  private async extract(revision: Revision, archive: string, dest: string): Promise<void> {
    const result = await this.options.processRunner.run({
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
      timeoutMs: this.options.tarTimeoutMs,
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
    const { upstreamUrl, logger } = this.options;
    if (upstreamUrl === "https://downloads.openwrt.org") return;
    for (const name of ["repositories.conf", "repositories"]) {
      const file = path.join(root, name);
      const st = await lstat(file).catch(() => undefined);
      if (st === undefined) continue;
      if (!st.isFile()) {
        logger.warn({ file: name }, `not rewriting ${name} in the ImageBuilder: it is not a regular file`);
        continue;
      }
      const text = await readFile(file, "utf8");
      const rewritten = text.replace(UPSTREAM_DEFAULT, () => upstreamUrl);
      if (rewritten === text) continue;
      // A new file and a rename: the old name may be a hardlink to another file in the tree.
      await writeFile(`${file}.asu-new`, rewritten, { mode: st.mode & 0o777 });
      await rename(`${file}.asu-new`, file);
    }
  }
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
