import type { ChainableCommander, Redis } from "ioredis";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { BuildHistory, HISTORY_DAYS } from "./build-history.js";

export type RequestEvent = "request" | "cache_hit" | "enqueued" | "overloaded" | "rate_limited";

export interface BuildOutcome {
  hash: string;
  version: string;
  target: string;
  profile: string;
  ok: boolean;
  detail?: string;
  /** The request's packages, for /api/v1/top-packages; never logged. */
  packages?: readonly string[];
  durationMs: number;
  makeMs: number;
}

const DURATION_BUCKETS = [1, 5, 10, 30, 60, 120, 300, 600];
/** A worker refreshes its active-builds gauge more often than this (build-worker.ts). */
export const ACTIVE_TTL_SECONDS = 60;
const OVERHEAD_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5];
/** Request counts reach Redis this long after the first one counted (issue #13). */
const REQUEST_FLUSH_MS = 1000;

/** Build metrics kept in Redis so the API's /metrics covers every worker (decision 006). */
const CLUSTER_HISTOGRAMS = {
  asu_build_duration_seconds: { help: "Time from job start to stored result", buckets: DURATION_BUCKETS },
  asu_build_overhead_seconds: {
    help: "Build time not spent in make (ImageBuilder download excluded)",
    buckets: OVERHEAD_BUCKETS,
  },
} as const;
type ClusterHistogram = keyof typeof CLUSTER_HISTOGRAMS;

/**
 * Counters in plain Redis hashes (no RedisTimeSeries module needed, unlike the Python
 * server), the recent-failure log, and Prometheus metrics for this process.
 */
export class Stats {
  readonly registry = new Registry();
  readonly metricsContentType = this.registry.contentType;
  private readonly requests: Counter<"event">;
  private readonly queueLength: Gauge;
  /** Per-day history for /api/v1/builds-per-day and the other stats endpoints. */
  readonly history: BuildHistory;
  /** Request counts not yet written to Redis (see countRequest). */
  private readonly pendingRequests = new Map<RequestEvent, number>();
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly queueLengthFn: () => Promise<number>,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {
    this.history = new BuildHistory(redis, prefix);
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: "asu_build_requests_total",
      help: "Build requests by what happened to them",
      labelNames: ["event"],
      registers: [this.registry],
    });
    const queueLength = this.queueLengthFn;
    this.queueLength = new Gauge({
      name: "asu_queue_length",
      help: "Builds waiting",
      registers: [this.registry],
      async collect() {
        this.set(await queueLength());
      },
    });
  }

  private day(): string {
    return new Date().toISOString().slice(0, 10);
  }

  /**
   * Counts a build request event. The hot path of a cache hit: no Redis write here; counts
   * wait in memory and go out in one pipeline within a second (issue #13), and at close().
   */
  countRequest(event: RequestEvent): void {
    this.requests.labels(event).inc();
    this.pendingRequests.set(event, (this.pendingRequests.get(event) ?? 0) + 1);
    if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        this.flushRequests().catch(this.onError);
      }, REQUEST_FLUSH_MS);
      this.flushTimer.unref();
    }
  }

  /**
   * Adds the counts waiting in memory to today's Redis hash, which every process's
   * /api/v1/stats reads. Counts a failed write could not deliver wait for the next flush.
   */
  async flushRequests(): Promise<void> {
    if (this.pendingRequests.size === 0) return;
    const counts = [...this.pendingRequests];
    this.pendingRequests.clear();
    const key = `${this.prefix}:stats:requests:${this.day()}`;
    const pipeline = this.redis.pipeline();
    for (const [event, n] of counts) pipeline.hincrby(key, event, n);
    // Bounded like the build history's per-day keys, also on a day on which no build ends.
    pipeline.expire(key, (HISTORY_DAYS + 1) * 24 * 3600);
    try {
      const results = (await pipeline.exec()) ?? [];
      const failed = results.find(([err]) => err !== null);
      if (failed) throw failed[0];
    } catch (err) {
      for (const [event, n] of counts) {
        this.pendingRequests.set(event, (this.pendingRequests.get(event) ?? 0) + n);
      }
      throw err;
    }
  }

  /** Shutdown: writes the counts still in memory. */
  async close(): Promise<void> {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    await this.flushRequests();
  }

  async recordBuild(outcome: BuildOutcome): Promise<void> {
    const label = outcome.ok ? "success" : "failure";
    const multi = this.redis
      .multi()
      .hincrby(`${this.prefix}:metrics:builds`, `${label}\t${outcome.version}`, 1)
      .hincrby(`${this.prefix}:stats:versions`, outcome.version, 1)
      .hincrby(`${this.prefix}:stats:targets`, outcome.target, 1);
    this.observe(multi, "asu_build_duration_seconds", label, outcome.durationMs / 1000);
    if (outcome.ok) {
      this.observe(
        multi,
        "asu_build_overhead_seconds",
        "",
        Math.max(0, outcome.durationMs - outcome.makeMs) / 1000,
      );
    }
    this.history.append(multi, outcome);
    await multi.exec();
  }

  async summary(): Promise<Record<string, unknown>> {
    // This process's latest counts are part of the answer.
    await this.flushRequests();
    const day = this.day();
    const [requests, builds, versions, targets, queueLength] = await Promise.all([
      this.redis.hgetall(`${this.prefix}:stats:requests:${day}`),
      this.redis.hgetall(`${this.prefix}:stats:builds:${day}`),
      this.redis.hgetall(`${this.prefix}:stats:versions`),
      this.redis.hgetall(`${this.prefix}:stats:targets`),
      this.queueLengthFn(),
    ]);
    const numbers = (h: Record<string, string>) =>
      Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Number(v)]));
    return {
      queue_length: queueLength,
      today: { requests: numbers(requests), builds: numbers(builds) },
      versions: numbers(versions),
      targets: numbers(targets),
    };
  }

  /** A histogram observation as Redis hash fields: "<label>\tsum", "<label>\tcount", "<label>\t<le>". */
  private observe(multi: ChainableCommander, name: ClusterHistogram, label: string, seconds: number): void {
    const key = `${this.prefix}:metrics:${name}`;
    multi.hincrbyfloat(key, `${label}\tsum`, seconds).hincrby(key, `${label}\tcount`, 1);
    for (const le of CLUSTER_HISTOGRAMS[name].buckets) {
      if (seconds <= le) multi.hincrby(key, `${label}\t${le}`, 1);
    }
  }

  /** An ImageBuilder lease: `download` when it had to be fetched and unpacked, else `cache_hit`. */
  async recordImageBuilder(result: "download" | "cache_hit"): Promise<void> {
    await this.redis.hincrby(`${this.prefix}:metrics:imagebuilders`, result, 1);
  }

  /**
   * How many builds a worker process runs right now. Kept with a TTL and refreshed while the
   * worker lives, so a worker that died stops being reported within a minute.
   */
  async setActiveBuilds(worker: string, active: number): Promise<void> {
    await this.redis.set(`${this.prefix}:metrics:active:${worker}`, String(active), "EX", ACTIVE_TTL_SECONDS);
  }

  /** Last store size seen by garbage collection (listing S3 on every scrape would cost too much). */
  async recordStoreUsage(bytes: number): Promise<void> {
    await this.redis.set(`${this.prefix}:metrics:store_bytes`, String(bytes));
  }

  async metricsText(): Promise<string> {
    return (await this.registry.metrics()) + (await this.clusterMetricsText());
  }

  /**
   * Prometheus text for what every worker wrote to Redis: builds by outcome and version, and
   * the duration histograms. Counters only grow; Prometheus' rate() handles the rest.
   */
  private async clusterMetricsText(): Promise<string> {
    const [builds, storeBytes, imagebuilders, active, ...histograms] = await Promise.all([
      this.redis.hgetall(`${this.prefix}:metrics:builds`),
      this.redis.get(`${this.prefix}:metrics:store_bytes`),
      this.redis.hgetall(`${this.prefix}:metrics:imagebuilders`),
      this.activeBuilds(),
      ...Object.keys(CLUSTER_HISTOGRAMS).map((name) => this.redis.hgetall(`${this.prefix}:metrics:${name}`)),
    ]);
    const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
    const lines = [
      "# HELP asu_builds_total Finished builds, from every worker",
      "# TYPE asu_builds_total counter",
    ];
    for (const [field, value] of Object.entries(builds).sort()) {
      const [outcome = "", version = ""] = field.split("\t");
      lines.push(`asu_builds_total{outcome="${esc(outcome)}",version="${esc(version)}"} ${value}`);
    }
    for (const [i, name] of (Object.keys(CLUSTER_HISTOGRAMS) as ClusterHistogram[]).entries()) {
      const { help, buckets } = CLUSTER_HISTOGRAMS[name];
      const fields = histograms[i] ?? {};
      lines.push(`# HELP ${name} ${help}, from every worker`, `# TYPE ${name} histogram`);
      const labels = [...new Set(Object.keys(fields).map((f) => f.split("\t")[0] ?? ""))].sort();
      for (const label of labels) {
        const l = label === "" ? "" : `outcome="${esc(label)}",`;
        for (const le of buckets)
          lines.push(`${name}_bucket{${l}le="${le}"} ${fields[`${label}\t${le}`] ?? 0}`);
        const count = fields[`${label}\tcount`] ?? "0";
        lines.push(`${name}_bucket{${l}le="+Inf"} ${count}`);
        const braces = label === "" ? "" : `{${l.slice(0, -1)}}`;
        lines.push(
          `${name}_sum${braces} ${fields[`${label}\tsum`] ?? "0"}`,
          `${name}_count${braces} ${count}`,
        );
      }
    }
    lines.push(
      "# HELP asu_imagebuilder_leases_total ImageBuilders handed to builds: downloaded and unpacked, or reused",
      "# TYPE asu_imagebuilder_leases_total counter",
    );
    for (const result of ["cache_hit", "download"]) {
      lines.push(`asu_imagebuilder_leases_total{result="${result}"} ${imagebuilders[result] ?? 0}`);
    }
    lines.push(
      "# HELP asu_builds_active Builds running now, per worker process",
      "# TYPE asu_builds_active gauge",
    );
    for (const [worker, n] of active) lines.push(`asu_builds_active{worker="${esc(worker)}"} ${n}`);
    if (storeBytes !== null) {
      lines.push(
        "# HELP asu_store_bytes Bytes in the store at the last garbage collection",
        "# TYPE asu_store_bytes gauge",
        `asu_store_bytes ${storeBytes}`,
      );
    }
    return `${lines.join("\n")}\n`;
  }

  /** Every live worker's gauge; SCAN keeps one scrape bounded however many workers there are. */
  async activeBuilds(): Promise<[string, string][]> {
    const match = `${this.prefix}:metrics:active:*`;
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, found] = await this.redis.scan(cursor, "MATCH", match, "COUNT", 200);
      cursor = next;
      keys.push(...found);
    } while (cursor !== "0" && keys.length < 1000);
    if (keys.length === 0) return [];
    const values = await this.redis.mget(...keys);
    const cut = match.length - 1;
    return keys
      .map((k, i): [string, string] => [k.slice(cut), values[i] ?? "0"])
      .filter(([, v]) => v !== null)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }
}
