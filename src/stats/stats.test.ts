import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
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
