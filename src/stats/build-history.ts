import type { ChainableCommander, Redis } from "ioredis";

/** What a worker knows about a build it finished or failed (recorded off the API's hot path). */
export interface BuildRecord {
  version: string;
  target: string;
  profile: string;
  ok: boolean;
  detail?: string;
  /** The normalised request's packages; `-name` removals are not counted. */
  packages?: readonly string[];
}

/** One anonymised failure: no request hash, client address, package list or `defaults`. */
export interface BuildErrorEntry {
  time: string;
  version: string;
  target: string;
  profile: string;
  detail: string;
}

/** A Chart.js-ready series, the shape of upstream ASU's stats endpoints. */
export interface ChartData {
  labels: string[];
  datasets: { label: string; data: number[]; color?: string }[];
}

/** Packages of one version's builds, or of one target's. */
export interface PackageFilter {
  by: "version" | "target";
  value: string;
}

export interface Ranked {
  name: string;
  count: number;
}

const DAY_MS = 24 * 3600 * 1000;
const DAY_SECONDS = 24 * 3600;
/** Days of builds-per-day, top packages and top targets (upstream's N_DAYS). */
export const HISTORY_DAYS = 30;
/** Weeks of builds-by-version (upstream: 26 weeks, about six months). */
export const VERSION_WEEKS = 26;
/** The failure log keeps this many entries (newest first). */
export const MAX_ERRORS = 200;
/** Members kept per daily package (and target) ranking; the least requested are dropped. */
export const MAX_RANKED_PER_DAY = 1000;
/** Members kept per daily ranking of one version's or one target's packages. */
export const MAX_RANKED_PER_DAY_FILTERED = 250;
/** How long an API process reuses an answer of the rankings and weekly counts. */
export const READ_CACHE_MS = 30_000;
/** Length of an error detail kept in the failure log. */
export const MAX_DETAIL_LENGTH = 500;

/** `YYYY-MM-DD` (UTC) of a time. */
export function dayOf(time: Date | number): string {
  return new Date(time).toISOString().slice(0, 10);
}

/**
 * Build history for the stats endpoints and the /stats page, kept in plain Redis keys that
 * expire on their own, so nothing grows without bound (docs/decisions/009):
 * - `stats:builds:<day>` {success, failure}, 31 days; `stats:hours:<day>T<hh>` the same, 26 h;
 * - `stats:versions:<day>` {version: builds}, 26 weeks and a day;
 * - `stats:packages:<day>` and `stats:targets:<day>`, sorted sets trimmed to
 *   MAX_RANKED_PER_DAY members, and `stats:packages:<day>:version:<v>` and `:target:<t>`,
 *   trimmed to MAX_RANKED_PER_DAY_FILTERED, 31 days;
 * - `stats:errors`, a list trimmed to MAX_ERRORS anonymised entries.
 * Only workers write (when a build ends); API servers only read.
 */
export class BuildHistory {
  private readonly cache = new Map<string, { until: number; value: Promise<unknown> }>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    /** Rankings and weekly counts are reused this long (0 = always read Redis). */
    private readonly cacheMs = READ_CACHE_MS,
  ) {}

  /**
   * The stats page asks for all rankings at once, and a ZUNION over 30 days costs Redis tens of
   * milliseconds (bench/stats-history.ts): one read per key and period is enough.
   */
  private cached<T>(key: string, load: () => Promise<T>): Promise<T> {
    if (this.cacheMs <= 0) return load();
    const now = Date.now();
    const hit = this.cache.get(key);
    if (hit && hit.until > now) return hit.value as Promise<T>;
    const value = load();
    this.cache.delete(key);
    this.cache.set(key, { until: now + this.cacheMs, value });
    value.catch(() => this.cache.delete(key));
    // Filters are arbitrary (valid) strings: keep the map small, oldest entries out first.
    for (const old of this.cache.keys()) {
      if (this.cache.size <= 256) break;
      this.cache.delete(old);
    }
    return value;
  }

  private key(...parts: string[]): string {
    return [this.prefix, "stats", ...parts].join(":");
  }

  /** Adds a finished or failed build to `multi` (one round trip with the worker's other counters). */
  append(multi: ChainableCommander, build: BuildRecord, now = new Date()): void {
    const day = dayOf(now);
    const outcome = build.ok ? "success" : "failure";
    const daily = this.key("builds", day);
    const hourly = this.key("hours", now.toISOString().slice(0, 13));
    const versions = this.key("versions", day);
    multi
      .hincrby(daily, outcome, 1)
      .expire(daily, (HISTORY_DAYS + 1) * DAY_SECONDS)
      .hincrby(hourly, outcome, 1)
      .expire(hourly, 26 * 3600)
      .hincrby(versions, build.version, 1)
      .expire(versions, (VERSION_WEEKS * 7 + 1) * DAY_SECONDS);
    // The API counts requests per day on its hot path without an expiry; bound that key from here.
    multi.expire(this.key("requests", day), (HISTORY_DAYS + 1) * DAY_SECONDS);

    this.rank(multi, this.key("targets", day), [build.target]);
    const packages = (build.packages ?? []).filter((p) => p !== "" && !p.startsWith("-"));
    if (packages.length > 0) {
      this.rank(multi, this.key("packages", day), packages);
      const filtered = MAX_RANKED_PER_DAY_FILTERED;
      this.rank(multi, this.key("packages", day, "version", build.version), packages, filtered);
      this.rank(multi, this.key("packages", day, "target", build.target), packages, filtered);
    }

    if (!build.ok) {
      const entry: BuildErrorEntry = {
        time: now.toISOString(),
        version: build.version,
        target: build.target,
        profile: build.profile,
        detail: anonymiseDetail(build.detail ?? ""),
      };
      multi.lpush(this.key("errors"), JSON.stringify(entry)).ltrim(this.key("errors"), 0, MAX_ERRORS - 1);
    }
  }

  private rank(
    multi: ChainableCommander,
    key: string,
    names: readonly string[],
    cap = MAX_RANKED_PER_DAY,
  ): void {
    for (const name of names) multi.zincrby(key, 1, name);
    multi.zremrangebyrank(key, 0, -(cap + 1)).expire(key, (HISTORY_DAYS + 1) * DAY_SECONDS);
  }

  /** Successes and failures of the last 24 hours, by the hour (the current hour and 23 before). */
  async last24Hours(now = new Date()): Promise<{ success: number; failure: number }> {
    const pipeline = this.redis.pipeline();
    for (let h = 0; h < 24; h++) {
      pipeline.hmget(
        this.key("hours", new Date(now.getTime() - h * 3600_000).toISOString().slice(0, 13)),
        "success",
        "failure",
      );
    }
    const rows = await execOrThrow(pipeline);
    let success = 0;
    let failure = 0;
    for (const row of rows as (string | null)[][]) {
      success += Number(row[0] ?? 0);
      failure += Number(row[1] ?? 0);
    }
    return { success, failure };
  }

  /** Today's build requests and cache hits, as counted by the API servers. */
  async requestsToday(now = new Date()): Promise<{ requests: number; cacheHits: number }> {
    const [requests, cacheHits] = await this.redis.hmget(
      this.key("requests", dayOf(now)),
      "request",
      "cache_hit",
    );
    return { requests: Number(requests ?? 0), cacheHits: Number(cacheHits ?? 0) };
  }

  /**
   * The last HISTORY_DAYS days, today last: requests and cache hits (counted by the API
   * servers), and successful and failed builds (counted by the workers).
   */
  async buildsPerDay(now = new Date()): Promise<ChartData> {
    const { labels, days } = dayBuckets(now, HISTORY_DAYS, 1);
    const pipeline = this.redis.pipeline();
    for (const [day] of days) {
      pipeline.hmget(this.key("requests", day), "request", "cache_hit");
      pipeline.hmget(this.key("builds", day), "success", "failure");
    }
    const rows = (await execOrThrow(pipeline)) as (string | null)[][];
    const series = (row: number, field: number) =>
      days.map((_, i) => Number(rows[i * 2 + row]?.[field] ?? 0));
    return {
      labels,
      datasets: [
        { label: "Requests", data: series(0, 0), color: "green" },
        { label: "Cache-Hits", data: series(0, 1), color: "orange" },
        { label: "Successes", data: series(1, 0), color: "blue" },
        { label: "Failures", data: series(1, 1), color: "red" },
      ],
    };
  }

  /**
   * Builds per week over VERSION_WEEKS weeks (the newest week ends today), one dataset per
   * `group(version)`; versions for which `group` answers undefined are left out.
   */
  async buildsByVersion(
    group: (version: string) => string | undefined,
    now = new Date(),
  ): Promise<ChartData> {
    const { labels, days } = dayBuckets(now, VERSION_WEEKS, 7);
    const rows = await this.cached(`versions:${dayOf(now)}`, async () => {
      const pipeline = this.redis.pipeline();
      for (const [day] of days) pipeline.hgetall(this.key("versions", day));
      return (await execOrThrow(pipeline)) as Record<string, string>[];
    });
    const buckets = new Map<string, number[]>();
    rows.forEach((row, i) => {
      const week = days[i]?.[1] ?? 0;
      for (const [version, count] of Object.entries(row)) {
        const label = group(version);
        if (label === undefined) continue;
        let data = buckets.get(label);
        if (!data) buckets.set(label, (data = new Array<number>(VERSION_WEEKS).fill(0)));
        data[week] = (data[week] ?? 0) + Number(count);
      }
    });
    return {
      labels,
      datasets: [...buckets.keys()].sort().map((label) => ({ label, data: buckets.get(label) ?? [] })),
    };
  }

  /** The most built packages of the last HISTORY_DAYS days, overall or for one version or target. */
  async topPackages(filter: PackageFilter | undefined, limit: number, now = new Date()): Promise<Ranked[]> {
    const suffix = filter ? [filter.by, filter.value] : [];
    return this.top((day) => this.key("packages", day, ...suffix), limit, now);
  }

  /** The most built targets of the last HISTORY_DAYS days. */
  async topTargets(limit: number, now = new Date()): Promise<Ranked[]> {
    return this.top((day) => this.key("targets", day), limit, now);
  }

  private async top(keyOf: (day: string) => string, limit: number, now: Date): Promise<Ranked[]> {
    const keys = dayBuckets(now, HISTORY_DAYS, 1).days.map(([day]) => keyOf(day));
    const ranked = await this.cached(`top:${keys.at(-1) ?? ""}`, async () => {
      // ZUNION (Redis 6.2+) sums the daily scores; every daily set is capped, so the answer is too.
      const flat = await this.redis.zunion(keys.length, ...keys, "WITHSCORES");
      const out: Ranked[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2)
        out.push({ name: flat[i] ?? "", count: Number(flat[i + 1]) });
      return out.sort((a, b) => b.count - a.count || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
    return ranked.slice(0, limit);
  }

  /** The newest failures first, at most `limit`; older entries are projected to the same fields. */
  async recentErrors(limit: number): Promise<{ total: number; errors: BuildErrorEntry[] }> {
    const [total, rows] = await Promise.all([
      this.redis.llen(this.key("errors")),
      this.redis.lrange(this.key("errors"), 0, Math.max(0, limit - 1)),
    ]);
    const errors: BuildErrorEntry[] = [];
    for (const row of rows) {
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(row) as Record<string, unknown>;
      } catch {
        continue;
      }
      // Entries written before this format carried the request hash: never show more than these.
      const text = (v: unknown) => (typeof v === "string" ? v : "");
      errors.push({
        time: text(parsed.time ?? parsed.at),
        version: text(parsed.version),
        target: text(parsed.target),
        profile: text(parsed.profile),
        detail: anonymiseDetail(text(parsed.detail)),
      });
    }
    return { total, errors };
  }
}

/**
 * An error detail fit for a public page: request hashes (which would let anyone fetch the
 * failed request, `defaults` included) and other long hex ids replaced, length capped.
 */
export function anonymiseDetail(detail: string): string {
  const cleaned = detail.replace(/\b[0-9a-f]{32,}\b/gi, "[hash]");
  return cleaned.length > MAX_DETAIL_LENGTH ? `${cleaned.slice(0, MAX_DETAIL_LENGTH - 1)}…` : cleaned;
}

/**
 * `count` buckets of `width` days, the newest ending today (UTC), labelled with their first
 * day as upstream ASU does (`2024-06-01Z`), and every day of them with its bucket's index.
 */
function dayBuckets(now: Date, count: number, width: number): { labels: string[]; days: [string, number][] } {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const first = today - (count * width - 1) * DAY_MS;
  const labels: string[] = [];
  const days: [string, number][] = [];
  for (let b = 0; b < count; b++) {
    labels.push(`${dayOf(first + b * width * DAY_MS)}Z`);
    for (let d = 0; d < width; d++) days.push([dayOf(first + (b * width + d) * DAY_MS), b]);
  }
  return { labels, days };
}

async function execOrThrow(pipeline: ChainableCommander): Promise<unknown[]> {
  const results = (await pipeline.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
