import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildHistory, HISTORY_DAYS, MAX_ERRORS } from "../../src/stats/build-history.js";
import { STATS_PAGE_CSP } from "../../src/http/stats-page.js";
import {
  REDIS_URL,
  flushPrefix,
  request,
  startMirror,
  startTestServer,
  type Mirror,
  type TestServer,
} from "./harness.js";

// API only: the history is written here as a worker would write it, so counts are exact.
let mirror: Mirror;
let api: TestServer;
const redis = new Redis(REDIS_URL);

const base = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };

beforeAll(async () => {
  mirror = await startMirror();
  api = await startTestServer(mirror, { role: "api" });
  const history = new BuildHistory(redis, api.prefix);
  const now = new Date();
  const multi = redis.multi();
  history.append(multi, { ...base, ok: true, packages: ["luci", "tcpdump"] }, now);
  history.append(multi, { ...base, ok: true, packages: ["luci"] }, now);
  history.append(multi, { ...base, version: "23.05.4", ok: true, packages: ["luci", "htop"] }, now);
  history.append(
    multi,
    {
      ...base,
      target: "x86/64",
      profile: "generic",
      ok: false,
      detail: `Error: job ${"a".repeat(64)} failed`,
    },
    now,
  );
  history.append(multi, { ...base, ok: true }, new Date(now.getTime() - 2 * 86400_000));
  await multi.exec();
  await redis.hset(`${api.prefix}:stats:requests:${now.toISOString().slice(0, 10)}`, {
    request: 8,
    cache_hit: 2,
  });
  await redis.set(`${api.prefix}:metrics:active:host-a-1`, "1", "EX", 60);
  await redis.set(`${api.prefix}:metrics:active:host-b-2`, "0", "EX", 60);
});

afterAll(async () => {
  await api?.close();
  if (api) await flushPrefix(api.prefix);
  await mirror?.close();
  redis.disconnect();
});

describe("stats endpoints", () => {
  it("GET /api/v1/stats/summary: queue length, builds of the last 24 hours, workers, today's cache hits", async () => {
    const res = await request(api.url, "GET", "/api/v1/stats/summary?1696506154265");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      queue_length: 0,
      builds_24h: 4,
      failures_24h: 1,
      active_workers: 2,
      builds_running: 1,
      requests_today: 8,
      cache_hits_today: 2,
    });
  });

  it("keeps GET /api/v1/stats as it was", async () => {
    const res = await request(api.url, "GET", "/api/v1/stats");
    expect(res.status).toBe(200);
    expect(res.body.queue_length).toBe(0);
    expect(res.body.today).toMatchObject({ builds: { success: 3, failure: 1 } });
  });

  it("GET /api/v1/builds-per-day: 30 days in upstream's Chart.js shape, today last", async () => {
    const res = await request(api.url, "GET", "/api/v1/builds-per-day");
    expect(res.status).toBe(200);
    const { labels, datasets } = res.body as {
      labels: string[];
      datasets: { label: string; data: number[] }[];
    };
    expect(labels).toHaveLength(HISTORY_DAYS);
    expect(labels.at(-1)).toBe(`${new Date().toISOString().slice(0, 10)}Z`);
    const series = Object.fromEntries(datasets.map((d) => [d.label, d.data]));
    expect(series.Successes?.at(-1)).toBe(3);
    expect(series.Successes?.at(-3)).toBe(1);
    expect(series.Failures?.at(-1)).toBe(1);
    expect(series.Requests?.at(-1)).toBe(8);
    expect(series["Cache-Hits"]?.at(-1)).toBe(2);
  });

  it("GET /api/v1/builds-by-version: per branch, or per version with ?branch=", async () => {
    const all = await request(api.url, "GET", "/api/v1/builds-by-version");
    expect(all.status).toBe(200);
    const sums = (body: Record<string, unknown>) =>
      Object.fromEntries(
        (body.datasets as { label: string; data: number[] }[]).map((d) => [
          d.label,
          d.data.reduce((a, b) => a + b),
        ]),
      );
    expect((all.body.labels as string[]).length).toBe(26);
    expect(sums(all.body)).toEqual({ "23.05": 1, "24.10": 4 });
    const one = await request(api.url, "GET", "/api/v1/builds-by-version?branch=24.10");
    expect(sums(one.body)).toEqual({ "24.10.4": 4 });
  });

  it("GET /api/v1/top-packages, with ?version= and ?target= and ?limit=", async () => {
    const all = await request(api.url, "GET", "/api/v1/top-packages");
    expect(all.status).toBe(200);
    expect(all.body).toEqual({
      days: HISTORY_DAYS,
      version: null,
      target: null,
      packages: [
        { name: "luci", count: 3 },
        { name: "htop", count: 1 },
        { name: "tcpdump", count: 1 },
      ],
    });
    const limited = await request(api.url, "GET", "/api/v1/top-packages?limit=1");
    expect(limited.body.packages).toEqual([{ name: "luci", count: 3 }]);
    const v = await request(api.url, "GET", "/api/v1/top-packages?version=23.05.4");
    expect(v.body).toMatchObject({
      version: "23.05.4",
      packages: [
        { name: "htop", count: 1 },
        { name: "luci", count: 1 },
      ],
    });
    const t = await request(api.url, "GET", "/api/v1/top-packages?target=x86/64");
    expect(t.body.packages).toEqual([]);
    const both = await request(api.url, "GET", "/api/v1/top-packages?version=23.05.4&target=x86/64");
    expect(both.status).toBe(400);
    expect(both.body.detail).toMatch(/either \?version= or \?target=/);
    const targets = await request(api.url, "GET", "/api/v1/top-targets");
    expect(targets.body.targets).toEqual([
      { name: "ath79/generic", count: 4 },
      { name: "x86/64", count: 1 },
    ]);
  });

  it("refuses bad query values with 422 and a string detail", async () => {
    for (const path of [
      "/api/v1/top-packages?version=24.10.4;rm",
      "/api/v1/top-packages?target=../../etc",
      "/api/v1/top-packages?limit=-1",
      "/api/v1/build-errors?n_entries=lots",
    ]) {
      const res = await request(api.url, "GET", path);
      expect(res.status, path).toBe(422);
      expect(typeof res.body.detail, path).toBe("string");
    }
  });

  it("GET /api/v1/build-errors: recent failures with time, version, target, profile, detail and nothing else", async () => {
    const res = await request(api.url, "GET", "/api/v1/build-errors");
    expect(res.status).toBe(200);
    expect(res.body.total).toBe(1);
    const errors = res.body.errors as Record<string, unknown>[];
    expect(errors).toHaveLength(1);
    expect(Object.keys(errors[0] ?? {}).sort()).toEqual(["detail", "profile", "target", "time", "version"]);
    expect(errors[0]).toMatchObject({
      version: "24.10.4",
      target: "x86/64",
      profile: "generic",
      detail: "Error: job [hash] failed",
    });
    expect(res.text).not.toContain("a".repeat(64));
    const capped = await request(api.url, "GET", `/api/v1/build-errors?n_entries=${MAX_ERRORS + 500}`);
    expect(capped.status).toBe(200);

    // Scripts written for upstream ASU ask for its plain text.
    const text = await request(api.url, "GET", "/api/v1/build-errors", undefined, { accept: "text/plain" });
    expect(text.status).toBe(200);
    expect(text.headers.get("content-type")).toBe("text/plain; charset=utf-8");
    expect(text.text).toMatch(/^Build errors: 1 entries \(showing 1 most recent\)\nTime range: /);
    expect(text.text).toMatch(/ 24\.10\.4:x86\/64:generic Error: job \[hash\] failed\n$/);
  });

  it("lists every stats endpoint with its schema in /openapi.json", async () => {
    const res = await request(api.url, "GET", "/openapi.json");
    const paths = res.body.paths as Record<
      string,
      { get?: { tags?: string[]; responses?: Record<string, unknown> } }
    >;
    for (const path of [
      "/api/v1/stats",
      "/api/v1/stats/summary",
      "/api/v1/builds-per-day",
      "/api/v1/builds-by-version",
      "/api/v1/top-packages",
      "/api/v1/top-targets",
      "/api/v1/build-errors",
      "/stats",
    ]) {
      expect(paths[path]?.get?.tags, path).toEqual(["stats"]);
    }
    expect(JSON.stringify(paths["/api/v1/stats/summary"]?.get?.responses)).toContain("builds_24h");
    expect(JSON.stringify(paths["/api/v1/top-packages"]?.get)).toContain('"name":"version"');
  });

  it("serves /stats with a CSP without inline scripts, and its script, style sheet and Chart.js itself", async () => {
    const page = await request(api.url, "GET", "/stats");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/^text\/html/);
    expect(page.headers.get("content-security-policy")).toBe(STATS_PAGE_CSP);
    expect(STATS_PAGE_CSP).toContain("script-src 'self'");
    expect(STATS_PAGE_CSP).not.toContain("unsafe-inline");
    // Every script is a file of this server: no inline code, no other origin.
    const scripts = [...page.text.matchAll(/<script([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBe(2);
    for (const [, attrs, body] of scripts) {
      expect(body).toBe("");
      expect(attrs).toMatch(/src="\/stats\/[\w.]+\.js"/);
    }
    expect(page.text).not.toMatch(/https?:\/\//);
    for (const [path, type] of [
      ["/stats/stats.js", /^text\/javascript/],
      ["/stats/chart.umd.min.js", /^text\/javascript/],
      ["/stats/stats.css", /^text\/css/],
    ] as const) {
      const res = await request(api.url, "GET", path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-type"), path).toMatch(type);
    }
    const chart = await request(api.url, "GET", "/stats/chart.umd.min.js");
    expect(chart.text.length).toBeGreaterThan(100_000);
    expect(chart.text).toContain("Chart");

    const overview = await request(api.url, "GET", "/");
    expect(overview.text).toContain('href="/stats"');
  });
});
