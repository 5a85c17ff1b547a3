import { createHash } from "node:crypto";
import path from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { BranchConfig } from "../config/config.js";
import { ValidationError } from "../shared/errors.js";
import { verifyMessage } from "../shared/usign.js";
import {
  describeError,
  ImageBuilderError,
  ImageBuilderNotFoundError,
  ImageBuilderUnavailableError,
  ImageBuilderVerificationError,
} from "./imagebuilder-errors.js";
import type { ImageBuilderLogger, Revision } from "./imagebuilder-tree.js";
import { findImageBuilderArchive } from "./sha256sums.js";

export interface Sha256sumsSourceOptions {
  /** Absolute; revision folders are placed below `<cacheDir>/imagebuilders`. */
  cacheDir: string;
  /** e.g. https://downloads.openwrt.org, without a trailing slash. */
  upstreamUrl: string;
  requireSignatures: boolean;
  fetch: typeof fetch;
  logger: ImageBuilderLogger;
  /** How long a fetched sha256sums is trusted before it is fetched again. */
  checkIntervalMs: number;
  /** Timeout for sha256sums and its signature. */
  fetchTimeoutMs: number;
}

export interface RevisionRequest {
  version: string;
  /** "ath79/generic" */
  target: string;
  branch: BranchConfig;
}

const MAX_SUMS_BYTES = 4 * 1024 * 1024;

/**
 * Which ImageBuilder upstream offers for a version and target: reads the target's
 * `sha256sums`, checks its usign signature against the branch's pubkey, and finds the
 * archive in it. The answer is kept for `checkIntervalMs` (a new snapshot shows up after
 * that); concurrent reads of one target share one fetch.
 */
export class Sha256sumsSource {
  private readonly revisions = new Map<string, { at: number; revision: Revision }>();
  private readonly resolving = new Map<string, Promise<Revision>>();

  constructor(private readonly options: Sha256sumsSourceOptions) {}

  /**
   * `fresh`: read sha256sums now, whatever the interval (a build found its tree older than the
   * revision it must build: a new snapshot is likely out). A read already under way is shared.
   */
  async resolve(req: RevisionRequest, opts: { fresh?: boolean } = {}): Promise<Revision> {
    const key = `${req.version}/${req.target}`;
    const cached = this.revisions.get(key);
    if (cached && !opts.fresh && Date.now() - cached.at < this.options.checkIntervalMs)
      return cached.revision;
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

  /** Drops the cached sha256sums so that the next resolve fetches it again. */
  forget(revision: Revision): void {
    const key = `${revision.version}/${revision.target}`;
    if (this.revisions.get(key)?.revision.revDir === revision.revDir) this.revisions.delete(key);
  }

  private async fetchRevision(req: RevisionRequest): Promise<Revision> {
    const { branch, version, target } = req;
    const branchPath = branch.path.replaceAll("{version}", version);
    if (!/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(branchPath) || branchPath.split("/").includes("..")) {
      throw new ValidationError(`branches.${branch.name}.path "${branch.path}" does not give a usable path`);
    }
    const baseUrl = `${this.options.upstreamUrl}/${branchPath}/targets/${target}/`;
    const sumsUrl = `${baseUrl}sha256sums`;
    if (branch.pubkey === undefined && this.options.requireSignatures) {
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
      this.options.logger.warn(
        { branch: branch.name, url: sumsUrl },
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
    const keyDir = path.join(this.options.cacheDir, "imagebuilders", version, target.replace("/", "_"));
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
    const signal = AbortSignal.timeout(this.options.fetchTimeoutMs);
    try {
      const res = await this.options.fetch(url, { signal, redirect: "follow" });
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
}

function httpError(url: string, status: number): ImageBuilderError {
  if (status === 404 || status === 410)
    return new ImageBuilderNotFoundError(`${url} was not found (HTTP ${status})`);
  if (status >= 500 || status === 408 || status === 429) {
    return new ImageBuilderUnavailableError(`${url} answered HTTP ${status}`);
  }
  return new ImageBuilderError(502, "imagebuilder_unavailable", `${url} answered HTTP ${status}`, false);
}
