import { createHash, randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { link, lstat, mkdir, readFile, rename, rm, unlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { gunzipSync } from "node:zlib";
import { BuildError } from "../shared/errors.js";
import { describeError } from "./imagebuilder-errors.js";
import {
  isSafeFileName,
  packageClosure,
  parseApkDump,
  parseOpkgFeed,
  type FeedPackage,
} from "./feed-index.js";
import type { Workspace } from "./runners/index.js";

/**
 * Builds run without network (issue #9). Before `make manifest`, the worker reads the feed
 * list the ImageBuilder would use, fetches every remote index exactly as published (with its
 * signature: opkg and apk check them inside the build as usual), works out which package files
 * the build may need, downloads those into a shared cache (checked against the index's sha256,
 * written by rename), and gives the build a local copy of each feed in `ws.feedsDir`, read-only.
 * The feed list in the workspace is then rewritten to point there.
 *
 * This also ends the shared `dl/` race of the real ImageBuilder (issue #8): each build has its
 * own lists; only verified package files are shared.
 */

export type PackageManager = "opkg" | "apk";

/** One feed line of the ImageBuilder's `repositories.conf` (opkg) or `repositories` (apk). */
export interface RemoteFeed {
  /** opkg's feed name; for apk a generated one. */
  name: string;
  /** opkg: the feed folder URL; apk: the URL of `packages.adb`. */
  url: string;
}

export interface FeedList {
  manager: PackageManager;
  /** The file in the workspace that lists the feeds. */
  file: string;
  remote: RemoteFeed[];
  /** Lines kept as they are (options, the ImageBuilder's local `file:packages` feed). */
  kept: string[];
}

export interface StageResult {
  feeds: number;
  packages: number;
  downloaded: number;
  downloadedBytes: number;
  /** Milliseconds per part: fetching and reading indexes, the closure, package files, feed list. */
  timings: { indexes: number; closure: number; packages: number; feed_list: number };
}

export interface FeedStagerOptions {
  /** Where verified package files and fetched indexes are kept between builds. */
  cacheDir: string;
  fetch?: typeof fetch;
  /** Per request. Default 60 s. */
  fetchTimeoutMs?: number;
  /** Cap on one index file. Default 64 MiB. */
  maxIndexBytes?: number;
  /** Cap on one package file. Default 512 MiB. */
  maxPackageBytes?: number;
  /** Cap on the packages one build may pull in. Default 5000. */
  maxPackages?: number;
  /** Parallel downloads. Default 4. */
  concurrency?: number;
  /**
   * How long a fetched index is used without asking upstream again (issue #13); after that it
   * is revalidated with If-None-Match/If-Modified-Since. Default 60 s (the server passes
   * imagebuilder_check_interval); 0 revalidates on every build.
   */
  indexTtlMs?: number;
  /** Bytes of fetched indexes kept in memory (as published, plus opkg's unpacked text). Default 64 MiB. */
  maxCachedIndexBytes?: number;
}

/** A feed index as last fetched: the files as published, what they list, and how to revalidate. */
interface CachedIndex {
  checkedAt: number;
  /** The ImageBuilder tree it was last checked for (StageOptions.imagebuilder). */
  imagebuilder?: string;
  etag?: string;
  lastModified?: string;
  /** File name in the feed folder → bytes as published (opkg's Packages: unpacked). */
  files: Map<string, Buffer>;
  packages: FeedPackage[];
  bytes: number;
}

/** Reads the feed list of a workspace before the build first runs (it is the worker's copy). */
export async function readFeedList(ws: Pick<Workspace, "dir">): Promise<FeedList> {
  const opkgFile = path.join(ws.dir, "repositories.conf");
  const apkFile = path.join(ws.dir, "repositories");
  const opkg = await readRegular(opkgFile);
  if (opkg !== undefined) return parseOpkgConf(opkgFile, opkg);
  const apk = await readRegular(apkFile);
  if (apk !== undefined) return parseApkRepositories(apkFile, apk);
  throw new BuildError("Error: The ImageBuilder has no repositories.conf or repositories file.", {
    userFault: false,
  });
}

export function parseOpkgConf(file: string, text: string): FeedList {
  const remote: RemoteFeed[] = [];
  const kept: string[] = [];
  for (const line of text.split("\n")) {
    const parts = line.trim().split(/\s+/);
    if (
      (parts[0] === "src/gz" || parts[0] === "src") &&
      parts.length >= 3 &&
      /^https?:\/\//.test(parts[2] ?? "")
    ) {
      const name = parts[1] as string;
      if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) {
        throw new BuildError(`Error: Feed name ${JSON.stringify(name)} is not usable.`, { userFault: false });
      }
      remote.push({ name, url: (parts[2] as string).replace(/\/+$/, "") });
    } else {
      kept.push(line);
    }
  }
  return { manager: "opkg", file, remote, kept };
}

export function parseApkRepositories(file: string, text: string): FeedList {
  const remote: RemoteFeed[] = [];
  const kept: string[] = [];
  for (const line of text.split("\n")) {
    const url = line.trim();
    if (/^https?:\/\//.test(url)) remote.push({ name: `feed${remote.length}`, url });
    else kept.push(line);
  }
  return { manager: "apk", file, remote, kept };
}

interface FetchedFeed {
  feed: RemoteFeed;
  dir: string;
  packages: FeedPackage[];
}

interface Candidate extends FeedPackage {
  feed: FetchedFeed;
}

export class FeedStager {
  private readonly cacheDir: string;
  private readonly fetch: typeof fetch;
  private readonly fetchTimeoutMs: number;
  private readonly maxIndexBytes: number;
  private readonly maxPackageBytes: number;
  private readonly maxPackages: number;
  private readonly concurrency: number;
  private readonly indexTtlMs: number;
  private readonly maxCachedIndexBytes: number;
  /** By package manager and URL; most recently used last. */
  private readonly indexes = new Map<string, CachedIndex>();
  private cachedIndexBytes = 0;

  constructor(options: FeedStagerOptions) {
    this.cacheDir = path.resolve(options.cacheDir);
    this.fetch = options.fetch ?? globalThis.fetch;
    this.fetchTimeoutMs = options.fetchTimeoutMs ?? 60_000;
    this.maxIndexBytes = options.maxIndexBytes ?? 64 * 1024 * 1024;
    this.maxPackageBytes = options.maxPackageBytes ?? 512 * 1024 * 1024;
    this.maxPackages = options.maxPackages ?? 5000;
    this.concurrency = options.concurrency ?? 4;
    this.indexTtlMs = options.indexTtlMs ?? 60_000;
    this.maxCachedIndexBytes = options.maxCachedIndexBytes ?? 64 * 1024 * 1024;
  }

  /**
   * Fetches the feeds of `list`, stages what `wanted` may need in `ws.feedsDir`, and rewrites
   * the workspace's feed list. `dumpApkIndex` runs the ImageBuilder's own `apk adbdump` on a
   * staged index (inside the sandbox) and returns its JSON. `customUrls` are the request's own
   * repositories: their failures are the user's to fix, not the server's.
   */
  async stage(
    ws: Pick<Workspace, "feedsDir">,
    list: FeedList,
    wanted: string[],
    opts: {
      dumpApkIndex: (file: string) => Promise<string>;
      customUrls?: Set<string>;
      signal?: AbortSignal;
      /**
       * The identity of the build's ImageBuilder tree (src/worker/make-info-cache.ts, treeKey).
       * An index is reused unchecked only for the tree it was checked for: a new tree, such as
       * a snapshot published with new packages, revalidates every index first.
       */
      imagebuilder?: string;
    },
  ): Promise<StageResult> {
    let mark = performance.now();
    const lap = (): number => {
      const now = performance.now();
      const ms = now - mark;
      mark = now;
      return ms;
    };
    const fetched: FetchedFeed[] = [];
    for (const [i, feed] of list.remote.entries()) {
      const dir = path.join(ws.feedsDir, String(i));
      await mkdir(dir);
      const custom = opts.customUrls?.has(feed.url) ?? false;
      try {
        fetched.push({ feed, dir, packages: await this.fetchIndex(list.manager, feed, dir, opts) });
      } catch (err) {
        throw feedError(feed, custom, err);
      }
    }
    const indexes = lap();
    const candidates: Candidate[] = fetched.flatMap((f) => f.packages.map((p) => ({ ...p, feed: f })));
    let selected: Candidate[];
    try {
      selected = packageClosure(candidates, wanted, { maxPackages: this.maxPackages });
    } catch (err) {
      throw new BuildError(`Error: ${(err as Error).message}. Request fewer packages.`, { userFault: true });
    }
    const closure = lap();
    let downloaded = 0;
    let downloadedBytes = 0;
    await mapLimit(selected, this.concurrency, async (pkg) => {
      const custom = opts.customUrls?.has(pkg.feed.feed.url) ?? false;
      try {
        const got = await this.cachedPackage(list.manager, pkg, opts.signal);
        if (got.downloaded) {
          downloaded += 1;
          downloadedBytes += got.bytes;
        }
        await linkOrCopy(got.file, path.join(pkg.feed.dir, pkg.filename));
      } catch (err) {
        // The index may be older than the feed (a snapshot moved on): the next build reads it anew.
        this.forgetIndex(list.manager, pkg.feed.feed.url);
        throw feedError(pkg.feed.feed, custom, err, pkg.filename);
      }
    });
    const packages = lap();
    await this.rewriteFeedList(list, fetched);
    return {
      feeds: fetched.length,
      packages: selected.length,
      downloaded,
      downloadedBytes,
      timings: { indexes, closure, packages, feed_list: lap() },
    };
  }

  /**
   * Puts the feed's index into `dir`, exactly as published, and returns what it lists. An index
   * fetched less than indexTtlMs ago is used as it is; an older one is revalidated, and what
   * upstream says is unchanged (304) is not fetched or parsed again (issue #13).
   */
  private async fetchIndex(
    manager: PackageManager,
    feed: RemoteFeed,
    dir: string,
    opts: { dumpApkIndex: (file: string) => Promise<string>; signal?: AbortSignal; imagebuilder?: string },
  ): Promise<FeedPackage[]> {
    const key = `${manager} ${feed.url}`;
    let entry = this.indexes.get(key);
    if (
      entry === undefined ||
      Date.now() - entry.checkedAt >= this.indexTtlMs ||
      entry.imagebuilder !== opts.imagebuilder
    ) {
      const fresh = await this.loadIndex(manager, feed, dir, entry, opts);
      if (fresh === entry && entry !== undefined) {
        entry.checkedAt = Date.now();
        entry.imagebuilder = opts.imagebuilder;
      } else {
        entry = fresh;
        if (opts.imagebuilder !== undefined) entry.imagebuilder = opts.imagebuilder;
        this.remember(key, fresh);
        return fresh.packages;
      }
    }
    this.indexes.delete(key);
    this.indexes.set(key, entry);
    for (const [name, bytes] of entry.files) await writeFile(path.join(dir, name), bytes, { flag: "wx" });
    return entry.packages;
  }

  /**
   * Fetches an index (conditionally when `cached` is given): `cached` itself when upstream says
   * it is unchanged, else a new entry whose files are already in `dir`.
   */
  private async loadIndex(
    manager: PackageManager,
    feed: RemoteFeed,
    dir: string,
    cached: CachedIndex | undefined,
    opts: { dumpApkIndex: (file: string) => Promise<string>; signal?: AbortSignal },
  ): Promise<CachedIndex> {
    const url = manager === "apk" ? feed.url : `${feed.url}/Packages.gz`;
    const got = await this.fetchSmall(url, opts.signal, { revalidate: cached });
    if (got === "unchanged" && cached !== undefined) return cached;
    if (got === "unchanged" || got === undefined) throw new Error(`${url} answered HTTP 304`);
    const files = new Map<string, Buffer>();
    const entry = (packages: FeedPackage[]): CachedIndex => ({
      checkedAt: Date.now(),
      ...(got.etag !== undefined ? { etag: got.etag } : {}),
      ...(got.lastModified !== undefined ? { lastModified: got.lastModified } : {}),
      files,
      packages,
      bytes: [...files.values()].reduce((n, b) => n + b.length, 0),
    });
    if (manager === "apk") {
      const index = path.join(dir, "packages.adb");
      files.set("packages.adb", got.body);
      await writeFile(index, got.body, { flag: "wx" });
      return entry(parseApkDump(await opts.dumpApkIndex(index)));
    }
    let text: Buffer;
    try {
      text = gunzipSync(got.body, { maxOutputLength: this.maxIndexBytes });
    } catch {
      throw new Error(`${feed.url}/Packages.gz is not a readable gzip file`);
    }
    files.set("Packages.gz", got.body);
    files.set("Packages", text);
    // Missing signatures are left for opkg to report in its own words (check_signature).
    const sig = await this.fetchSmall(`${feed.url}/Packages.sig`, opts.signal, { optional: true });
    if (sig !== undefined && sig !== "unchanged") files.set("Packages.sig", sig.body);
    for (const [name, bytes] of files) await writeFile(path.join(dir, name), bytes, { flag: "wx" });
    return entry(parseOpkgFeed(text.toString("utf8")));
  }

  private remember(key: string, entry: CachedIndex): void {
    this.forget(key);
    if (this.maxCachedIndexBytes <= 0 || entry.bytes > this.maxCachedIndexBytes) return;
    this.indexes.set(key, entry);
    this.cachedIndexBytes += entry.bytes;
    for (const [oldest, old] of this.indexes) {
      if (this.cachedIndexBytes <= this.maxCachedIndexBytes) break;
      this.indexes.delete(oldest);
      this.cachedIndexBytes -= old.bytes;
    }
  }

  private forget(key: string): void {
    const old = this.indexes.get(key);
    if (old === undefined) return;
    this.indexes.delete(key);
    this.cachedIndexBytes -= old.bytes;
  }

  private forgetIndex(manager: PackageManager, url: string): void {
    this.forget(`${manager} ${url}`);
  }

  /**
   * A small file (an index), or undefined for a 404 when `optional`, or "unchanged" when
   * upstream answers 304 to the validators of `revalidate`.
   */
  private async fetchSmall(
    url: string,
    signal: AbortSignal | undefined,
    opts: { optional?: boolean; revalidate?: CachedIndex | undefined } = {},
  ): Promise<{ body: Buffer; etag?: string; lastModified?: string } | "unchanged" | undefined> {
    const headers: Record<string, string> = {};
    if (opts.revalidate?.etag !== undefined) headers["if-none-match"] = opts.revalidate.etag;
    if (opts.revalidate?.lastModified !== undefined)
      headers["if-modified-since"] = opts.revalidate.lastModified;
    const res = await this.request(url, signal, headers);
    if (res.status === 304 && opts.revalidate !== undefined) {
      await res.body?.cancel();
      return "unchanged";
    }
    if (res.status === 404 && opts.optional) {
      await res.body?.cancel();
      return undefined;
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new Error(`${url} answered HTTP ${res.status}`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of Readable.fromWeb(res.body as never) as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > this.maxIndexBytes) throw new Error(`${url} is larger than ${this.maxIndexBytes} bytes`);
      chunks.push(chunk);
    }
    const etag = res.headers.get("etag") ?? undefined;
    const lastModified = res.headers.get("last-modified") ?? undefined;
    return {
      body: Buffer.concat(chunks),
      ...(etag !== undefined ? { etag } : {}),
      ...(lastModified !== undefined ? { lastModified } : {}),
    };
  }

  private async request(
    url: string,
    signal: AbortSignal | undefined,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    const timeout = AbortSignal.timeout(this.fetchTimeoutMs);
    const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      return await this.fetch(url, { signal: combined, redirect: "follow", headers });
    } catch (err) {
      throw new Error(`could not fetch ${url}: ${describeError(err)}`);
    }
  }

  /**
   * The cached file of a package, downloading it first when needed. opkg files are stored by
   * their sha256 from the index and checked against it; apk files (whose index hash covers
   * only the package's signed metadata, which apk checks inside the build) by feed URL and
   * identity, with their size checked.
   */
  private async cachedPackage(
    manager: PackageManager,
    pkg: Candidate,
    signal: AbortSignal | undefined,
  ): Promise<{ file: string; downloaded: boolean; bytes: number }> {
    const key =
      pkg.sha256 ??
      createHash("sha256")
        .update(`${manager}\0${pkg.feed.feed.url}\0${pkg.filename}\0${pkg.identity ?? ""}\0${pkg.size ?? ""}`)
        .digest("hex");
    const file = path.join(this.cacheDir, key.slice(0, 2), `${key}${manager === "apk" ? ".apk" : ".ipk"}`);
    const st = await lstat(file).catch(() => undefined);
    if (st?.isFile() && (pkg.size === undefined || st.size === pkg.size)) {
      return { file, downloaded: false, bytes: 0 };
    }
    const base = pkg.feed.feed.url.replace(manager === "apk" ? /\/[^/]*$/ : /$/, "");
    const url = `${base}/${pkg.filename}`;
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      const res = await this.request(url, signal);
      if (!res.ok || res.body === null) {
        await res.body?.cancel();
        throw new Error(`${url} answered HTTP ${res.status}`);
      }
      const limit = Math.min(this.maxPackageBytes, pkg.size ?? Infinity);
      const hash = createHash("sha256");
      let bytes = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          bytes += chunk.length;
          if (bytes > limit) return done(new Error(`${url} is larger than the index says (${limit} bytes)`));
          hash.update(chunk);
          done(null, chunk);
        },
      });
      await pipeline(Readable.fromWeb(res.body as never), meter, createWriteStream(tmp, { flags: "wx" }));
      if (pkg.size !== undefined && bytes !== pkg.size) {
        throw new Error(`${url} has ${bytes} bytes, the index says ${pkg.size}`);
      }
      const digest = hash.digest("hex");
      if (pkg.sha256 !== undefined && digest !== pkg.sha256) {
        throw new Error(`${url} has sha256 ${digest}, the index says ${pkg.sha256}`);
      }
      await rename(tmp, file);
      return { file, downloaded: true, bytes };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Points the workspace's feed list at the staged copies; the build has not run yet or is dead. */
  private async rewriteFeedList(list: FeedList, fetched: FetchedFeed[]): Promise<void> {
    const lines =
      list.manager === "opkg"
        ? fetched.map((f) => `src/gz ${f.feed.name} file://${f.dir}`)
        : fetched.map((f) => `file://${path.join(f.dir, "packages.adb")}`);
    // Unlink first: never write through whatever now stands at that name.
    await unlink(list.file).catch(() => undefined);
    await writeFile(list.file, [...lines, ...list.kept].join("\n"), { flag: "wx", mode: 0o644 });
  }
}

function feedError(feed: RemoteFeed, custom: boolean, err: unknown, file?: string): BuildError {
  if (err instanceof BuildError) return err;
  const what = file ? `${file} from ${feed.url}` : `the package index of ${feed.url}`;
  const why = (err as Error).message;
  return custom
    ? new BuildError(
        `Error: Could not fetch ${what}: ${why}. Check the repository URL and that it is online.`,
        {
          userFault: true,
        },
      )
    : new BuildError(
        `Error: Could not fetch ${what}: ${why}. This is a problem on the server; try again later.`,
        {
          userFault: false,
          retryable: true,
        },
      );
}

async function readRegular(file: string): Promise<string | undefined> {
  const st = await lstat(file).catch(() => undefined);
  if (!st?.isFile()) return undefined;
  return readFile(file, "utf8");
}

/** Hardlinks a cached file into a feed folder (copy across filesystems). */
async function linkOrCopy(from: string, to: string): Promise<void> {
  if (!isSafeFileName(path.basename(to))) throw new Error(`unsafe file name ${path.basename(to)}`);
  try {
    await link(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return;
    if (code !== "EXDEV" && code !== "EPERM") throw err;
    await writeFile(to, await readFile(from), { flag: "wx" });
  }
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++] as T);
  });
  await Promise.all(workers);
}
