import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import {
  BuildHistory,
  HISTORY_DAYS,
  MAX_DETAIL_LENGTH,
  MAX_ERRORS,
  MAX_RANKED_PER_DAY,
  MAX_RANKED_PER_DAY_FILTERED,
  VERSION_WEEKS,
  anonymiseDetail,
  type BuildRecord,
} from "./build-history.js";

const redis = new Redis(process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379");
const prefixes: string[] = [];

function fresh(): { history: BuildHistory; prefix: string } {
  const prefix = `asu-test-history-${randomBytes(4).toString("hex")}`;
  prefixes.push(prefix);
  return { history: new BuildHistory(redis, prefix, 0), prefix };
}

async function record(history: BuildHistory, build: BuildRecord, now: Date): Promise<void> {
  const multi = redis.multi();
  history.append(multi, build, now);
  await multi.exec();
}

afterAll(async () => {
  for (const prefix of prefixes) {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
  }
  redis.disconnect();
});

const NOW = new Date("2026-06-15T12:30:00Z");
const DAY = 24 * 3600 * 1000;
const base = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };

describe("BuildHistory", () => {
  it("counts successes and failures per day over the last 30 days, today last, in upstream's shape", async () => {
    const { history, prefix } = fresh();
    await record(history, { ...base, ok: true }, NOW);
    await record(history, { ...base, ok: true }, NOW);
    await record(history, { ...base, ok: false, detail: "Error: x" }, NOW);
    await record(history, { ...base, ok: true }, new Date(NOW.getTime() - 3 * DAY));
    await record(history, { ...base, ok: true }, new Date(NOW.getTime() - 40 * DAY)); // outside the window
    // The API's request counters (Stats.countRequest) for today.
    await redis.hset(`${prefix}:stats:requests:2026-06-15`, { request: 10, cache_hit: 7 });

    const chart = await history.buildsPerDay(NOW);
    expect(chart.labels).toHaveLength(HISTORY_DAYS);
    expect(chart.labels.at(-1)).toBe("2026-06-15Z");
    expect(chart.labels[0]).toBe("2026-05-17Z");
    const series = Object.fromEntries(chart.datasets.map((d) => [d.label, d.data]));
    expect(Object.keys(series)).toEqual(["Requests", "Cache-Hits", "Successes", "Failures"]);
    expect(series.Successes?.at(-1)).toBe(2);
    expect(series.Failures?.at(-1)).toBe(1);
    expect(series.Successes?.at(-4)).toBe(1);
    expect(series.Successes?.reduce((a, b) => a + b)).toBe(3);
    expect(series.Requests?.at(-1)).toBe(10);
    expect(series["Cache-Hits"]?.at(-1)).toBe(7);
    expect(chart.datasets.every((d) => d.data.length === HISTORY_DAYS)).toBe(true);

    expect(await history.last24Hours(NOW)).toEqual({ success: 2, failure: 1 });
    // 25 hours later only the builds of the last 24 hours count.
    expect(await history.last24Hours(new Date(NOW.getTime() + 25 * 3600_000))).toEqual({
      success: 0,
      failure: 0,
    });
    expect(await history.requestsToday(NOW)).toEqual({ requests: 10, cacheHits: 7 });
  });

  it("gives every key it writes an expiry, and the API's request counter of the day too", async () => {
    const { history, prefix } = fresh();
    await redis.hincrby(`${prefix}:stats:requests:2026-06-15`, "request", 1); // no TTL, as the API writes it
    await record(history, { ...base, ok: false, detail: "Error", packages: ["luci", "tcpdump"] }, NOW);
    const keys = await redis.keys(`${prefix}:*`);
    expect(keys.length).toBeGreaterThanOrEqual(9);
    for (const key of keys) {
      const ttl = await redis.ttl(key);
      if (key.endsWith(":stats:errors")) {
        expect(ttl, key).toBe(-1); // bounded by length instead
        continue;
      }
      expect(ttl, key).toBeGreaterThan(0);
      const max = key.includes(":versions:") ? (VERSION_WEEKS * 7 + 1) * 86400 : (HISTORY_DAYS + 1) * 86400;
      expect(ttl, key).toBeLessThanOrEqual(max);
    }
    expect(await redis.ttl(`${prefix}:stats:hours:2026-06-15T12`)).toBeLessThanOrEqual(26 * 3600);
  });

  it("keeps at most MAX_ERRORS failures and at most MAX_RANKED_PER_DAY packages a day", async () => {
    const { history, prefix } = fresh();
    const multi = redis.multi();
    for (let i = 0; i < MAX_ERRORS + 15; i++)
      history.append(multi, { ...base, ok: false, detail: `E${i}` }, NOW);
    await multi.exec();
    expect(await redis.llen(`${prefix}:stats:errors`)).toBe(MAX_ERRORS);
    const { total, errors } = await history.recentErrors(5);
    expect(total).toBe(MAX_ERRORS);
    expect(errors.map((e) => e.detail)).toEqual(["E214", "E213", "E212", "E211", "E210"]);

    // Two requests of 1000 distinct packages each (the request limit): the day keeps the cap.
    const names = (from: number) => Array.from({ length: 1000 }, (_, i) => `pkg${String(from + i)}`);
    await record(history, { ...base, ok: true, packages: ["popular", ...names(0)] }, NOW);
    await record(history, { ...base, ok: true, packages: ["popular", ...names(1000)] }, NOW);
    expect(await redis.zcard(`${prefix}:stats:packages:2026-06-15`)).toBe(MAX_RANKED_PER_DAY);
    expect(await redis.zcard(`${prefix}:stats:packages:2026-06-15:version:24.10.4`)).toBe(
      MAX_RANKED_PER_DAY_FILTERED,
    );
    expect(await redis.zcard(`${prefix}:stats:packages:2026-06-15:target:ath79/generic`)).toBe(
      MAX_RANKED_PER_DAY_FILTERED,
    );
    // The package of both builds stays on top.
    expect((await history.topPackages(undefined, 1, NOW))[0]).toEqual({ name: "popular", count: 2 });
  });

  it("keeps failures anonymous: no request hash, packages, client or defaults, and a capped detail", async () => {
    const { history, prefix } = fresh();
    const hash = "e".repeat(64);
    await record(
      history,
      {
        ...base,
        ok: false,
        detail: `Error: no container with ID ${hash} found; ${"x".repeat(2000)}`,
        packages: ["secret-package"],
        // What a careless caller might pass along: none of it may be stored.
        ...({ hash, defaults: "uci set wireless.pw=hunter2", client: "203.0.113.9" } as object),
      } as BuildRecord,
      NOW,
    );
    const [raw] = await redis.lrange(`${prefix}:stats:errors`, 0, 0);
    expect(raw).toBeDefined();
    expect(raw).not.toContain(hash);
    expect(raw).not.toContain("hunter2");
    expect(raw).not.toContain("203.0.113.9");
    expect(raw).not.toContain("secret-package");
    const { errors } = await history.recentErrors(10);
    expect(Object.keys(errors[0] ?? {}).sort()).toEqual(["detail", "profile", "target", "time", "version"]);
    expect(errors[0]?.time).toBe(NOW.toISOString());
    expect(errors[0]?.detail.startsWith("Error: no container with ID [hash] found;")).toBe(true);
    expect(errors[0]?.detail.length).toBe(MAX_DETAIL_LENGTH);

    // An entry in the format of earlier versions (with hash and timings) is shown with the same fields only.
    await redis.lpush(
      `${prefix}:stats:errors`,
      JSON.stringify({
        at: "2026-06-01T00:00:00.000Z",
        hash,
        ...base,
        ok: false,
        detail: "old",
        durationMs: 5,
      }),
    );
    const [old] = (await history.recentErrors(1)).errors;
    expect(old).toEqual({ time: "2026-06-01T00:00:00.000Z", ...base, detail: "old" });
    expect(anonymiseDetail(`see ${"ab12".repeat(8)}`)).toBe("see [hash]");
  });

  it("ranks packages over 30 days, by version or target, without removals", async () => {
    const { history } = fresh();
    const x86 = { ...base, target: "x86/64", profile: "generic" };
    await record(history, { ...base, ok: true, packages: ["luci", "tcpdump", "-ppp"] }, NOW);
    await record(history, { ...base, ok: false, packages: ["luci"] }, new Date(NOW.getTime() - 2 * DAY));
    await record(history, { ...x86, ok: true, packages: ["luci", "htop"] }, NOW);
    await record(history, { ...x86, version: "23.05.4", ok: true, packages: ["htop"] }, NOW);
    await record(history, { ...base, ok: true, packages: ["old"] }, new Date(NOW.getTime() - 31 * DAY));

    expect(await history.topPackages(undefined, 10, NOW)).toEqual([
      { name: "luci", count: 3 },
      { name: "htop", count: 2 },
      { name: "tcpdump", count: 1 },
    ]);
    expect(await history.topPackages(undefined, 1, NOW)).toEqual([{ name: "luci", count: 3 }]);
    expect(await history.topPackages({ by: "version", value: "23.05.4" }, 10, NOW)).toEqual([
      { name: "htop", count: 1 },
    ]);
    expect(await history.topPackages({ by: "target", value: "x86/64" }, 10, NOW)).toEqual([
      { name: "htop", count: 2 },
      { name: "luci", count: 1 },
    ]);
    expect(await history.topPackages({ by: "version", value: "99.99.9" }, 10, NOW)).toEqual([]);
    expect(await history.topTargets(10, NOW)).toEqual([
      { name: "ath79/generic", count: 2 },
      { name: "x86/64", count: 2 },
    ]);
  });

  it("reuses rankings and weekly counts for cacheMs in one process", async () => {
    const prefix = `asu-test-history-${randomBytes(4).toString("hex")}`;
    prefixes.push(prefix);
    const cached = new BuildHistory(redis, prefix, 60_000);
    await record(cached, { ...base, ok: true, packages: ["luci"] }, NOW);
    expect(await cached.topPackages(undefined, 5, NOW)).toEqual([{ name: "luci", count: 1 }]);
    await record(cached, { ...base, ok: true, packages: ["luci"] }, NOW);
    expect(await cached.topPackages(undefined, 5, NOW)).toEqual([{ name: "luci", count: 1 }]);
    // Another filter, or a process without the cache, reads Redis.
    expect(await cached.topPackages({ by: "version", value: "24.10.4" }, 5, NOW)).toEqual([
      { name: "luci", count: 2 },
    ]);
    expect(await new BuildHistory(redis, prefix, 0).topPackages(undefined, 5, NOW)).toEqual([
      { name: "luci", count: 2 },
    ]);
  });

  it("counts builds by branch or version per week over 26 weeks", async () => {
    const { history } = fresh();
    await record(history, { ...base, ok: true }, NOW);
    await record(history, { ...base, version: "24.10.3", ok: true }, NOW);
    await record(history, { ...base, ok: false }, new Date(NOW.getTime() - 6 * DAY)); // same week
    await record(history, { ...base, ok: true }, new Date(NOW.getTime() - 7 * DAY)); // week before
    await record(history, { ...base, version: "SNAPSHOT", ok: true }, new Date(NOW.getTime() - 100 * DAY));
    await record(history, { ...base, ok: true }, new Date(NOW.getTime() - 200 * DAY)); // too old

    const branch = (v: string) => (v === "SNAPSHOT" ? v : /^\d+\.\d+/.exec(v)?.[0]);
    const byBranch = await history.buildsByVersion(branch, NOW);
    expect(byBranch.labels).toHaveLength(VERSION_WEEKS);
    expect(byBranch.labels.at(-1)).toBe("2026-06-09Z");
    expect(byBranch.datasets.map((d) => d.label)).toEqual(["24.10", "SNAPSHOT"]);
    const b2410 = byBranch.datasets[0]?.data ?? [];
    expect(b2410).toHaveLength(VERSION_WEEKS);
    expect(b2410.at(-1)).toBe(3);
    expect(b2410.at(-2)).toBe(1);
    expect(b2410.reduce((a, b) => a + b)).toBe(4);
    expect(byBranch.datasets[1]?.data.reduce((a, b) => a + b)).toBe(1);

    const byVersion = await history.buildsByVersion((v) => (v.startsWith("24.10") ? v : undefined), NOW);
    expect(byVersion.datasets.map((d) => [d.label, d.data.reduce((a, b) => a + b)])).toEqual([
      ["24.10.3", 1],
      ["24.10.4", 3],
    ]);
  });
});
