import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { Redis } from "ioredis";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { Stats } from "./stats.js";

const redis = new Redis(process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379");
const prefix = `asu-test-stats-${randomBytes(4).toString("hex")}`;

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

describe("Stats", () => {
  it("shows builds recorded by one process (a worker) in another's /metrics text (the API)", async () => {
    const worker = new Stats(redis, prefix, async () => 0);
    const api = new Stats(redis, prefix, async () => 3);
    const facts = { hash: "h", version: "24.10.4", target: "ath79/generic", profile: "p" };
    await worker.recordBuild({ ...facts, ok: true, durationMs: 7000, makeMs: 6800 });
    await worker.recordBuild({ ...facts, ok: false, detail: "Error", durationMs: 500, makeMs: 0 });
    await worker.recordStoreUsage(12345);
    const text = await api.metricsText();
    expect(text).toContain('asu_builds_total{outcome="success",version="24.10.4"} 1');
    expect(text).toContain('asu_builds_total{outcome="failure",version="24.10.4"} 1');
    expect(text).toContain('asu_build_duration_seconds_bucket{outcome="success",le="5"} 0');
    expect(text).toContain('asu_build_duration_seconds_bucket{outcome="success",le="10"} 1');
    expect(text).toContain('asu_build_duration_seconds_count{outcome="failure"} 1');
    expect(text).toContain('asu_build_duration_seconds_sum{outcome="success"} 7');
    expect(text).toContain('asu_build_overhead_seconds_bucket{le="0.25"} 1');
    expect(text).toContain("asu_store_bytes 12345");
    expect(text).toContain("asu_queue_length 3");
    // one TYPE line per metric name, as Prometheus requires
    const types = text.split("\n").filter((l) => l.startsWith("# TYPE asu_builds_total"));
    expect(types).toHaveLength(1);
  });

  it("shows every worker's active builds and the ImageBuilder leases in any process's /metrics", async () => {
    const a = new Stats(redis, prefix, async () => 0);
    const b = new Stats(redis, prefix, async () => 0);
    const api = new Stats(redis, prefix, async () => 0);
    await a.setActiveBuilds("host-a-101", 2);
    await b.setActiveBuilds("host-b-202", 0);
    await a.recordImageBuilder("download");
    await a.recordImageBuilder("cache_hit");
    await b.recordImageBuilder("cache_hit");
    const text = await api.metricsText();
    expect(text).toContain('asu_builds_active{worker="host-a-101"} 2');
    expect(text).toContain('asu_builds_active{worker="host-b-202"} 0');
    expect(text).toContain('asu_imagebuilder_leases_total{result="download"} 1');
    expect(text).toContain('asu_imagebuilder_leases_total{result="cache_hit"} 2');
    // A worker that stops refreshing drops out when its key expires.
    expect(await redis.ttl(`${prefix}:metrics:active:host-a-101`)).toBeGreaterThan(0);
    await redis.del(`${prefix}:metrics:active:host-b-202`);
    expect(await api.metricsText()).not.toContain("host-b-202");
  });
});

describe("Stats request counters (issue #13: no Redis write on a cache hit)", () => {
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  const today = async (p: string) =>
    ((await new Stats(redis, p, async () => 0).summary()) as { today: { requests: Record<string, number> } })
      .today.requests;

  it("counts in memory and writes every count in one pipeline, which another process's stats show", async () => {
    const p = `${prefix}-count`;
    const api = new Stats(redis, p, async () => 0);
    const hincrby = vi.spyOn(redis, "hincrby");
    const pipeline = vi.spyOn(redis, "pipeline");
    for (let i = 0; i < 500; i++) api.countRequest("request");
    for (let i = 0; i < 499; i++) api.countRequest("cache_hit");
    api.countRequest("enqueued");
    expect(hincrby).not.toHaveBeenCalled();
    expect(pipeline).not.toHaveBeenCalled();
    await api.flushRequests();
    expect(pipeline).toHaveBeenCalledTimes(1);
    expect(await today(p)).toEqual({ request: 500, cache_hit: 499, enqueued: 1 });
    // The day's key expires with the rest of the history, even when no build ends that day.
    const ttl = await redis.ttl(`${p}:stats:requests:${new Date().toISOString().slice(0, 10)}`);
    expect(ttl).toBeGreaterThan(30 * 24 * 3600);
    expect(await api.metricsText()).toContain('asu_build_requests_total{event="cache_hit"} 499');
    await api.close();
  });

  it("flushes by itself a second after the first count", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const p = `${prefix}-timer`;
    const api = new Stats(redis, p, async () => 0);
    const flush = vi.spyOn(api, "flushRequests");
    api.countRequest("request");
    api.countRequest("request");
    vi.advanceTimersByTime(999);
    expect(flush).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(flush).toHaveBeenCalledTimes(1);
    await flush.mock.results[0]?.value;
    vi.useRealTimers();
    expect(await today(p)).toEqual({ request: 2 });
    await api.close();
  });

  it("writes the counts still in memory at close (shutdown)", async () => {
    const p = `${prefix}-close`;
    const api = new Stats(redis, p, async () => 0);
    api.countRequest("request");
    api.countRequest("rate_limited");
    await api.close();
    expect(await today(p)).toEqual({ request: 1, rate_limited: 1 });
  });

  it("keeps counts a failed write could not deliver for the next flush (Redis away)", async () => {
    const p = `${prefix}-outage`;
    const offline = new Redis(process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379", {
      enableOfflineQueue: false,
    });
    await once(offline, "ready");
    const ended = once(offline, "end");
    offline.disconnect();
    await ended;
    const api = new Stats(offline, p, async () => 0);
    api.countRequest("request");
    await expect(api.flushRequests()).rejects.toThrow();
    api.countRequest("request");
    await offline.connect();
    await api.close();
    offline.disconnect();
    expect(await today(p)).toEqual({ request: 2 });
  });
});
