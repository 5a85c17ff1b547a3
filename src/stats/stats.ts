import type { Redis } from "ioredis";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export type RequestEvent = "request" | "cache_hit" | "enqueued" | "overloaded" | "rate_limited";

export interface BuildOutcome {
  hash: string;
  version: string;
  target: string;
  profile: string;
  ok: boolean;
  detail?: string;
  durationMs: number;
  makeMs: number;
}

/**
 * Counters in plain Redis hashes (no RedisTimeSeries module needed, unlike the Python
 * server), the recent-failure log, and Prometheus metrics for this process.
 */
export class Stats {
  readonly registry = new Registry();
  readonly metricsContentType = this.registry.contentType;
  private readonly requests: Counter<"event">;
  private readonly builds: Counter<"outcome" | "version">;
  private readonly buildSeconds: Histogram<"outcome">;
  private readonly overheadSeconds: Histogram;
  private readonly queueLength: Gauge;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly queueLengthFn: () => Promise<number>,
    private readonly onError: (err: unknown) => void = () => undefined,
  ) {
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: "asu_build_requests_total",
      help: "Build requests by what happened to them",
      labelNames: ["event"],
      registers: [this.registry],
    });
    this.builds = new Counter({
      name: "asu_builds_total",
      help: "Finished builds",
      labelNames: ["outcome", "version"],
      registers: [this.registry],
    });
    this.buildSeconds = new Histogram({
      name: "asu_build_duration_seconds",
      help: "Time from job start to stored result",
      labelNames: ["outcome"],
      buckets: [1, 5, 10, 30, 60, 120, 300, 600],
      registers: [this.registry],
    });
    this.overheadSeconds = new Histogram({
      name: "asu_build_overhead_seconds",
      help: "Build time not spent in make (ImageBuilder download excluded)",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5],
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

  countRequest(event: RequestEvent): void {
    this.requests.inc({ event });
    this.redis.hincrby(`${this.prefix}:stats:requests:${this.day()}`, event, 1).catch(this.onError);
  }

  async recordBuild(outcome: BuildOutcome): Promise<void> {
    const label = outcome.ok ? "success" : "failure";
    this.builds.inc({ outcome: label, version: outcome.version });
    this.buildSeconds.observe({ outcome: label }, outcome.durationMs / 1000);
    if (outcome.ok) this.overheadSeconds.observe(Math.max(0, outcome.durationMs - outcome.makeMs) / 1000);
    const multi = this.redis
      .multi()
      .hincrby(`${this.prefix}:stats:builds:${this.day()}`, label, 1)
      .hincrby(`${this.prefix}:stats:versions`, outcome.version, 1)
      .hincrby(`${this.prefix}:stats:targets`, outcome.target, 1);
    if (!outcome.ok) {
      multi
        .lpush(`${this.prefix}:stats:errors`, JSON.stringify({ at: new Date().toISOString(), ...outcome }))
        .ltrim(`${this.prefix}:stats:errors`, 0, 199);
    }
    await multi.exec();
  }

  async summary(): Promise<Record<string, unknown>> {
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

  async recentErrors(limit = 50): Promise<unknown[]> {
    const rows = await this.redis.lrange(`${this.prefix}:stats:errors`, 0, limit - 1);
    return rows.map((r) => JSON.parse(r) as unknown);
  }

  async metricsText(): Promise<string> {
    return this.registry.metrics();
  }
}
