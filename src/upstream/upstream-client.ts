import type { TSchema } from "typebox";
import { Value } from "typebox/value";
import { UpstreamError, ValidationError } from "../shared/errors.js";
import { parseApkIndex } from "./apk-index.js";
import { opkgArchitecture, parseOpkgPackages } from "./opkg-index.js";
import { parseProfilesJson } from "./profiles-json.js";
import {
  TargetsJsonSchema,
  VersionsJsonSchema,
  type PackageManager,
  type PackageVersions,
  type ProfilesJson,
  type TargetIndex,
  type TargetsJson,
  type VersionsJson,
} from "./upstream-documents.js";

export interface UpstreamClientOptions {
  /** The download server, e.g. https://downloads.openwrt.org (config `upstream_url`). */
  baseUrl: string;
  /** Defaults to the global fetch (undici); tests may inject one. */
  fetch?: typeof fetch;
  /** How long a document counts as fresh before it is revalidated; default 5 minutes. */
  ttlMs?: number;
  /** Per request, headers and body together; default 30 s. */
  timeoutMs?: number;
  /** Forced reloads of one URL ("reload on a miss") happen at most this often; default 10 s. */
  reloadIntervalMs?: number;
  /** Documents kept in memory before the least recently fetched are dropped; default 2000. */
  maxEntries?: number;
  /**
   * Bytes of document text kept in memory before the least recently fetched are dropped;
   * default 256 MiB (config `upstream_cache_max_bytes`). Parsed forms come on top.
   */
  maxBytes?: number;
  /** Clock, for tests. */
  now?: () => number;
  /** Largest document read into memory; default 64 MiB (issue #10: no unbounded memory). */
  maxDocumentBytes?: number;
}

export interface GetOptions {
  /**
   * Revalidate now even if the cached copy is fresh, e.g. because a version, target or
   * profile was not found in it (a new release must work without a restart). Rate-limited
   * per URL so strangers asking for made-up targets cannot hammer the download server.
   */
  reload?: boolean;
  /**
   * Revalidate a cached copy older than this, even if the client's `ttlMs` is longer: a
   * snapshot's profiles.json is checked as often as the workers check its ImageBuilder.
   */
  maxAgeMs?: number;
}

/**
 * "Reload the document once on a miss", written once: a version, target or profile a client
 * names but the cached copy lacks may have been published since (GetOptions.reload).
 */
async function reloadOnMiss<T>(
  get: (opts: GetOptions) => Promise<T | undefined>,
  has: (doc: T) => boolean,
): Promise<T | undefined> {
  const cached = await get({});
  if (cached !== undefined && has(cached)) return cached;
  return get({ reload: true });
}

/** Default bound of the document cache: a few releases' indexes for every target. */
export const DEFAULT_MAX_CACHE_BYTES = 256 * 1024 * 1024;

/** Feeds every OpenWrt release has; used when `feeds.buildinfo` is missing. */
export const DEFAULT_FEEDS: readonly string[] = ["base", "luci", "packages", "routing", "telephony"];

interface CacheEntry {
  /** undefined = the server answered 404 (cached too, so misses do not refetch every time). */
  body: string | undefined;
  /** UTF-8 size of `body`, counted against maxBytes. */
  bytes: number;
  etag?: string | undefined;
  lastModified?: string | undefined;
  checkedAt: number;
  /** After a failed revalidation: served as is until then, whatever `maxAgeMs` asks. */
  retryAt?: number;
  /** Parsed forms of `body`, keyed by parser; dropped whenever the body changes. */
  derived: Map<string, unknown>;
}

/**
 * The only code that fetches OpenWrt metadata. Keeps each document in memory and
 * revalidates it with If-None-Match / If-Modified-Since once `ttlMs` has passed; identical
 * concurrent fetches share one request. When a revalidation fails but an older copy exists,
 * the older copy is served (a download-server hiccup should not fail every build request).
 */
export class UpstreamClient {
  readonly baseUrl: string;
  private readonly fetchImpl: typeof fetch;
  private readonly ttlMs: number;
  private readonly timeoutMs: number;
  private readonly maxDocumentBytes: number;
  private readonly reloadIntervalMs: number;
  private readonly maxEntries: number;
  private readonly maxBytes: number;
  private cacheBytes = 0;
  private readonly now: () => number;
  private readonly cache = new Map<string, CacheEntry>();
  private readonly inflight = new Map<string, Promise<CacheEntry>>();
  private readonly forcedAt = new Map<string, number>();
  private readonly merged = new Map<string, { deps: CacheEntry[]; value: unknown }>();

  constructor(options: UpstreamClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    this.ttlMs = options.ttlMs ?? 5 * 60_000;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxDocumentBytes = options.maxDocumentBytes ?? 64 * 1024 * 1024;
    this.reloadIntervalMs = options.reloadIntervalMs ?? 10_000;
    this.maxEntries = options.maxEntries ?? 2000;
    this.maxBytes = options.maxBytes ?? DEFAULT_MAX_CACHE_BYTES;
    this.now = options.now ?? Date.now;
  }

  /** The absolute URL of a path relative to the download server. */
  /** Documents held in the cache (readiness reports it; served stale while upstream is down). */
  get cachedDocuments(): number {
    return this.cache.size;
  }

  /** Bytes of document text held in the cache (at most maxBytes, beside the newest document). */
  get cachedBytes(): number {
    return this.cacheBytes;
  }

  url(path: string): string {
    return `${this.baseUrl}/${cleanPath(path)}`;
  }

  /** A document's text, or undefined when the server answers 404. */
  async getText(path: string, opts: GetOptions = {}): Promise<string | undefined> {
    return (await this.entry(cleanPath(path), opts)).body;
  }

  /**
   * Revalidates one document now, unless it was checked less than `reloadIntervalMs` ago.
   * Returns true when it asked the server.
   */
  async refresh(path: string): Promise<boolean> {
    const key = cleanPath(path);
    if (!this.mayForce(key)) return false;
    await this.entry(key, {}, true);
    return true;
  }

  /** Marks cached documents (all, or those whose path starts with `prefix`) for revalidation. */
  invalidate(prefix = ""): void {
    const start = prefix.replace(/^\/+/, "");
    for (const [key, entry] of this.cache) {
      if (key.startsWith(start)) entry.checkedAt = Number.NEGATIVE_INFINITY;
    }
  }

  /** `/.versions.json`; it must exist, so a 404 is an upstream failure. */
  async getVersions(opts: GetOptions = {}): Promise<VersionsJson> {
    const value = await this.getChecked(".versions.json", VersionsJsonSchema, opts);
    if (value === undefined) {
      throw new UpstreamError(
        502,
        `The upstream download server has no /.versions.json at ${this.baseUrl}. Check upstream_url in the server configuration.`,
      );
    }
    return value as VersionsJson;
  }

  /** `{path}/.targets.json`, e.g. `{"ath79/generic": "mips_24kc"}`; undefined when not published. */
  async getTargets(path: string, opts: GetOptions = {}): Promise<TargetsJson | undefined> {
    return (await this.getChecked(`${path}/.targets.json`, TargetsJsonSchema, opts)) as
      TargetsJson | undefined;
  }

  /**
   * `{path}/.targets.json` when it lists what `has` looks for. On a miss (no document, or
   * `has` false) it is reloaded once, so a target published since the last fetch works
   * without a restart; the reloaded document (or undefined) is returned either way.
   */
  async lookupTargets(
    path: string,
    has: (targets: TargetsJson) => boolean,
  ): Promise<TargetsJson | undefined> {
    return reloadOnMiss((opts) => this.getTargets(path, opts), has);
  }

  /** `{path}/targets/{target}/profiles.json`, reloaded once on a miss as `lookupTargets`. */
  async lookupProfiles(
    path: string,
    target: string,
    has: (profiles: ProfilesJson) => boolean,
  ): Promise<ProfilesJson | undefined> {
    return reloadOnMiss((opts) => this.getProfiles(path, target, opts), has);
  }

  /** `{path}/targets/{target}/profiles.json`; undefined when the target is not published. */
  async getProfiles(path: string, target: string, opts: GetOptions = {}): Promise<ProfilesJson | undefined> {
    const key = cleanPath(`${path}/targets/${target}/profiles.json`);
    const entry = await this.entry(key, opts);
    if (entry.body === undefined) return undefined;
    return this.derive(entry, "profiles", () => {
      try {
        return parseProfilesJson(parseJson(key, entry.body as string), target);
      } catch (err) {
        if (err instanceof UpstreamError) throw err;
        throw unreadable(key, (err as Error).message);
      }
    });
  }

  /**
   * The target's packages (`targets/{target}/packages/`), with the kernel modules merged in
   * for releases that publish them separately (profiles.json names them in `linux_kernel`).
   * A missing kmods folder does not hide the index (releases before 24.10 have none, and
   * auc and owut still need the rest); the answer is then marked `kmodsMissing`, so that
   * validation does not reject kmod-* packages it cannot see.
   */
  async getTargetIndex(
    path: string,
    target: string,
    packageManager: PackageManager,
    opts: GetOptions = {},
  ): Promise<TargetIndex | undefined> {
    const base = `${path}/targets/${target}`;
    const indexPath = `${base}/packages/${indexFile(packageManager)}`;
    const profilesPath = `${base}/profiles.json`;
    const profiles = await this.getProfiles(path, target, opts);
    const kernel = profiles?.linux_kernel;
    const kmodsPath = kernel
      ? `${base}/kmods/${kernel.version}-${kernel.release}-${kernel.vermagic}/${indexFile(packageManager)}`
      : undefined;

    const main = await this.entry(cleanPath(indexPath), opts);
    if (main.body === undefined) return undefined;
    const found = kmodsPath ? await this.entry(cleanPath(kmodsPath), opts) : undefined;
    const kmodsMissing = found !== undefined && found.body === undefined;
    const kmods = kmodsMissing ? undefined : found;
    const profilesEntry = this.cache.get(cleanPath(profilesPath));

    const deps = [main, ...(kmods ? [kmods] : []), ...(profilesEntry ? [profilesEntry] : [])];
    return this.memoMerged(`target:${packageManager}:${indexPath}:${kmodsMissing}`, deps, () => {
      const own = this.parseIndex(indexPath, main, packageManager);
      const mods = kmods && kmodsPath ? this.parseIndex(kmodsPath, kmods, packageManager) : undefined;
      const packages: PackageVersions = Object.create(null) as PackageVersions;
      Object.assign(packages, own.packages, mods?.packages ?? {});
      const architecture = own.architecture || profiles?.arch_packages || mods?.architecture || "";
      return kmodsMissing ? { architecture, packages, kmodsMissing } : { architecture, packages };
    });
  }

  /** Feed names from `targets/{target}/feeds.buildinfo` (`src-git <name> <url>` lines), base first. */
  async getFeeds(path: string, target: string, opts: GetOptions = {}): Promise<string[]> {
    const text = await this.getText(`${path}/targets/${target}/feeds.buildinfo`, opts);
    if (text === undefined) return [...DEFAULT_FEEDS];
    const feeds = ["base"];
    for (const line of text.split(/\r?\n/)) {
      const match = /^src-[\w-]+\s+([\w.-]+)\s/.exec(line.trim() + " ");
      if (match?.[1] && !feeds.includes(match[1])) feeds.push(match[1]);
    }
    return feeds.length > 1 ? feeds : [...DEFAULT_FEEDS];
  }

  /** One feed's packages: `{pathPackages}/{arch}/{feed}/Packages` (opkg) or `index.json` (apk). */
  async getFeedIndex(
    pathPackages: string,
    arch: string,
    feed: string,
    packageManager: PackageManager,
    opts: GetOptions = {},
  ): Promise<PackageVersions | undefined> {
    const path = `${pathPackages}/${arch}/${feed}/${indexFile(packageManager)}`;
    const entry = await this.entry(cleanPath(path), opts);
    if (entry.body === undefined) return undefined;
    return this.parseIndex(path, entry, packageManager).packages;
  }

  /**
   * All feeds of an architecture as one flat `{name: version}` (what auc and owut read from
   * `packages/{arch}-index.json`). A missing feed is skipped; undefined when none exists.
   */
  async getArchIndex(
    pathPackages: string,
    path: string,
    target: string,
    arch: string,
    packageManager: PackageManager,
    opts: GetOptions = {},
  ): Promise<PackageVersions | undefined> {
    const feeds = await this.getFeeds(path, target, opts);
    const paths = feeds.map((feed) => `${pathPackages}/${arch}/${feed}/${indexFile(packageManager)}`);
    const entries = await Promise.all(paths.map((p) => this.entry(cleanPath(p), opts)));
    const present = entries
      .map((entry, i) => ({ entry, path: paths[i] as string }))
      .filter((e) => e.entry.body);
    if (present.length === 0) return undefined;
    const key = `arch:${packageManager}:${paths.join("|")}`;
    return this.memoMerged(
      key,
      present.map((p) => p.entry),
      () => {
        const packages: PackageVersions = Object.create(null) as PackageVersions;
        for (const { entry, path: p } of present) {
          // Earlier feeds win (base before packages), as in feeds.conf order.
          for (const [name, version] of Object.entries(this.parseIndex(p, entry, packageManager).packages)) {
            if (!(name in packages)) packages[name] = version;
          }
        }
        return packages;
      },
    );
  }

  // ---------------------------------------------------------------------------------------

  private async getChecked(path: string, schema: TSchema, opts: GetOptions): Promise<unknown> {
    const key = cleanPath(path);
    const entry = await this.entry(key, opts);
    if (entry.body === undefined) return undefined;
    return this.derive(entry, "json", () => {
      const value = parseJson(key, entry.body as string);
      if (!Value.Check(schema, value)) throw unreadable(key, "it does not have the expected fields");
      return value;
    });
  }

  private parseIndex(path: string, entry: CacheEntry, packageManager: PackageManager): TargetIndex {
    return this.derive(entry, `index:${packageManager}`, () => {
      const text = entry.body ?? "";
      if (packageManager === "opkg") {
        return { architecture: opkgArchitecture(text) ?? "", packages: parseOpkgPackages(text) };
      }
      try {
        return parseApkIndex(text);
      } catch (err) {
        throw unreadable(cleanPath(path), (err as Error).message);
      }
    });
  }

  private derive<T>(entry: CacheEntry, key: string, make: () => T): T {
    if (entry.derived.has(key)) return entry.derived.get(key) as T;
    const value = make();
    entry.derived.set(key, value);
    return value;
  }

  private memoMerged<T>(key: string, deps: CacheEntry[], make: () => T): T {
    const hit = this.merged.get(key);
    if (hit && hit.deps.length === deps.length && hit.deps.every((d, i) => d === deps[i])) {
      return hit.value as T;
    }
    const value = make();
    this.merged.set(key, { deps, value });
    return value;
  }

  private mayForce(key: string): boolean {
    const now = this.now();
    const entry = this.cache.get(key);
    if (entry && now - entry.checkedAt < this.reloadIntervalMs) return false;
    const last = this.forcedAt.get(key);
    if (last !== undefined && now - last < this.reloadIntervalMs) return false;
    this.forcedAt.set(key, now);
    if (this.forcedAt.size > this.maxEntries) {
      const oldest = this.forcedAt.keys().next().value;
      if (oldest !== undefined) this.forcedAt.delete(oldest);
    }
    return true;
  }

  private entry(key: string, opts: GetOptions, forced = false): Promise<CacheEntry> {
    const cached = this.cache.get(key);
    const now = this.now();
    const maxAge = Math.min(this.ttlMs, opts.maxAgeMs ?? this.ttlMs);
    const stale =
      !cached ||
      now - cached.checkedAt >= this.ttlMs ||
      (now - cached.checkedAt >= maxAge && now >= (cached.retryAt ?? 0));
    const force = forced || (opts.reload === true && this.mayForce(key));
    if (cached && !stale && !force) return Promise.resolve(cached);
    const pending = this.inflight.get(key);
    if (pending) return pending;
    const request = this.revalidate(key, cached)
      .then(
        (entry) => {
          this.store(key, entry);
          return entry;
        },
        (err: unknown) => {
          if (!cached) throw err;
          // Serve the older copy, and try upstream again only after reloadIntervalMs, so an
          // outage does not make every request wait for the timeout.
          cached.checkedAt = Math.max(cached.checkedAt, this.now() - this.ttlMs + this.reloadIntervalMs);
          cached.retryAt = this.now() + this.reloadIntervalMs;
          return cached;
        },
      )
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, request);
    return request;
  }

  private store(key: string, entry: CacheEntry): void {
    const previous = this.cache.get(key);
    if (previous) {
      this.cache.delete(key);
      this.cacheBytes -= previous.bytes;
      if (previous !== entry) this.forgetMerged(previous);
    }
    this.cache.set(key, entry);
    this.cacheBytes += entry.bytes;
    // Least recently fetched first; the document just fetched stays whatever its size.
    while (this.cache.size > this.maxEntries || (this.cacheBytes > this.maxBytes && this.cache.size > 1)) {
      const [oldest, evicted] = this.cache.entries().next().value as [string, CacheEntry];
      this.cache.delete(oldest);
      this.cacheBytes -= evicted.bytes;
      this.forgetMerged(evicted);
    }
  }

  /** Merged indexes built from a dropped document would keep it alive: drop them too. */
  private forgetMerged(entry: CacheEntry): void {
    for (const [key, merged] of this.merged) {
      if (merged.deps.includes(entry)) this.merged.delete(key);
    }
  }

  private async revalidate(key: string, cached: CacheEntry | undefined): Promise<CacheEntry> {
    const url = this.url(key);
    const headers: Record<string, string> = {};
    if (cached?.etag) headers["if-none-match"] = cached.etag;
    if (cached?.lastModified) headers["if-modified-since"] = cached.lastModified;
    let response: Response;
    let body: string | undefined;
    try {
      response = await this.fetchImpl(url, { headers, signal: AbortSignal.timeout(this.timeoutMs) });
      if (response.status === 304 && cached) {
        await response.body?.cancel();
        cached.checkedAt = this.now();
        return cached;
      }
      if (response.status === 404 || response.status === 410) {
        await response.body?.cancel();
        if (cached && cached.body === undefined) {
          cached.checkedAt = this.now();
          return cached;
        }
        return { body: undefined, bytes: 0, checkedAt: this.now(), derived: new Map() };
      }
      if (!response.ok) {
        await response.body?.cancel();
        throw new UpstreamError(
          502,
          `The upstream download server answered HTTP ${response.status} for /${key}. Try again in a few minutes; if it persists, tell the server operator.`,
        );
      }
      body = await readCapped(response, this.maxDocumentBytes, key);
    } catch (err) {
      if (err instanceof UpstreamError) throw err;
      const name = (err as Error).name;
      if (name === "TimeoutError" || name === "AbortError") {
        throw new UpstreamError(
          504,
          `The upstream download server did not answer within ${formatMs(this.timeoutMs)} for /${key}. Try again in a few minutes.`,
        );
      }
      throw new UpstreamError(
        502,
        `Could not reach the upstream download server for /${key} (${describeNetworkError(err)}). Try again in a few minutes; if it persists, tell the server operator.`,
      );
    }
    // An error page sent with 200 must not replace a good copy: failing here serves the
    // cached one (stale-if-error, issue #10). The typed getters check the fields later.
    if (key.endsWith(".json")) {
      try {
        JSON.parse(body);
      } catch {
        throw unreadable(key, "it is not valid JSON");
      }
    }
    const etag = response.headers.get("etag") ?? undefined;
    const lastModified = response.headers.get("last-modified") ?? undefined;
    // Same bytes as before (a server without validators): keep the entry and its parsed forms.
    const entry: CacheEntry =
      cached && cached.body === body
        ? cached
        : { body, bytes: Buffer.byteLength(body), checkedAt: 0, derived: new Map<string, unknown>() };
    entry.checkedAt = this.now();
    entry.etag = etag;
    entry.lastModified = lastModified;
    return entry;
  }
}

/** The body as text, or a 502 once it grows past `max` bytes (the rest is not read). */
async function readCapped(response: Response, max: number, key: string): Promise<string> {
  if (!response.body) return "";
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    if (size > max) {
      await response.body.cancel().catch(() => undefined);
      throw new UpstreamError(
        502,
        `The upstream download server sent a /${key} larger than ${Math.round(max / 1024 / 1024)} MiB. Tell the server operator.`,
      );
    }
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString("utf8");
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}

function indexFile(packageManager: PackageManager): string {
  return packageManager === "apk" ? "index.json" : "Packages";
}

/**
 * Paths are built from config and from request fields that already passed strict patterns;
 * this is a second line of defence so nothing can leave the download tree.
 */
function cleanPath(path: string): string {
  const key = path.replace(/^\/+/, "");
  if (!/^[\w.,+~/-]*$/.test(key) || key.split("/").some((part) => part === ".." || part === ".")) {
    throw new ValidationError(
      `Invalid upstream path: ${JSON.stringify(path)}. Use only names OpenWrt publishes.`,
    );
  }
  return key;
}

function parseJson(key: string, body: string): unknown {
  try {
    return JSON.parse(body) as unknown;
  } catch {
    throw unreadable(key, "it is not valid JSON");
  }
}

function unreadable(key: string, why: string): UpstreamError {
  return new UpstreamError(
    502,
    `The upstream download server sent an unreadable /${key} (${why}). Try again in a few minutes; if it persists, tell the server operator.`,
  );
}

function describeNetworkError(err: unknown): string {
  const cause = (err as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (err as Error).message ?? "network error";
}
