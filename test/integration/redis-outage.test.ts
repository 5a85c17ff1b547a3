import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  build,
  request,
  startMirror,
  startTestServer,
  waitForBuild,
  type JsonResponse,
  type Mirror,
  type TestServer,
} from "./harness.js";
import { startOwnRedis, type OwnRedis } from "./own-redis.js";

// Issue #10: while Redis is away every Redis-backed route answers 503 within 2 s; when it
// returns the same processes serve cached results and build again, and a job queued before
// the outage (kept by AOF) is built after it.

let mirror: Mirror;
let redis: OwnRedis;
let api: TestServer;
const workers: TestServer[] = [];

const BUILD = { version: "23.05.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };

async function timed(method: string, path: string, body?: unknown): Promise<JsonResponse & { ms: number }> {
  const started = performance.now();
  const res = await request(api.url, method, path, body);
  return { ...res, ms: performance.now() - started };
}

async function startWorker(): Promise<TestServer> {
  const w = await startTestServer(mirror, {
    role: "worker",
    prefix: api.prefix,
    workDir: api.workDir,
    overrides: { redis_url: redis.url },
  });
  workers.push(w);
  return w;
}

/** Polls until `check` is true or the deadline passes (an event to wait on, not a sleep). */
async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - started;
}

beforeAll(async () => {
  mirror = await startMirror();
  redis = await startOwnRedis();
  api = await startTestServer(mirror, { role: "api", overrides: { redis_url: redis.url } });
});

afterAll(async () => {
  if (redis && !redis.up) await redis.start();
  for (const s of [...workers, api]) await s?.close();
  await redis?.destroy();
  await mirror?.close();
});

describe("Redis outage", () => {
  it("answers 503 fast while Redis is down, and recovers without a restart", async () => {
    // A cached result, and a job queued (no worker running) before the outage.
    const worker = await startWorker();
    const cached = await build(api.url, { ...BUILD, packages: ["htop"] });
    expect(cached.status, cached.text).toBe(200);
    await worker.close();
    workers.splice(workers.indexOf(worker), 1);
    const queued = await request(api.url, "POST", "/api/v1/build", { ...BUILD, packages: ["luci"] });
    expect(queued.status, queued.text).toBe(202);
    expect(queued.body.detail).toBe("queued");
    const cachedHash = String(cached.body.request_hash);
    const queuedHash = String(queued.body.request_hash);

    await redis.stop("SIGTERM");

    const redisBacked: [string, string, unknown?][] = [
      ["POST", "/api/v1/build", { ...BUILD, packages: ["tcpdump"] }],
      ["POST", "/api/build", { ...BUILD, packages: ["tcpdump"] }],
      ["GET", `/api/v1/build/${cachedHash}`],
      ["GET", `/api/v1/build/${queuedHash}`],
      ["HEAD", `/api/v1/build/${queuedHash}`],
      ["GET", "/api/v1/stats"],
      ["GET", "/api/v1/stats/summary"],
      ["GET", "/api/v1/builds-per-day"],
      ["GET", "/api/v1/builds-by-version"],
      ["GET", "/api/v1/top-packages"],
      ["GET", "/api/v1/top-targets"],
      ["GET", "/api/v1/build-errors"],
      ["GET", "/metrics"],
      ["GET", "/readyz"],
    ];
    const latencies: number[] = [];
    for (const [method, path, body] of redisBacked) {
      const res = await timed(method, path, body);
      latencies.push(res.ms);
      expect(res.status, `${method} ${path}: ${res.text}`).toBe(503);
      expect(res.ms, `${method} ${path}`).toBeLessThan(2000);
      expect(res.headers.get("retry-after"), `${method} ${path}`).toMatch(/^\d+$/);
      if (method !== "HEAD" && path !== "/readyz") {
        expect(res.body.status).toBe(503);
        expect(String(res.body.detail)).toMatch(/queue is unavailable.*retry/i);
      }
    }
    console.log(`503 latency while Redis is down: max ${Math.round(Math.max(...latencies))} ms`);

    // What does not need Redis keeps working.
    expect((await timed("GET", "/healthz")).status).toBe(200);
    expect((await timed("GET", "/json/v1/overview.json")).status).toBe(200);
    expect((await timed("GET", "/openapi.json")).status).toBe(200);
    expect((await timed("GET", "/stats")).status).toBe(200);

    await redis.start();
    const recoveryMs = await until(
      "readiness after Redis restart",
      async () => (await request(api.url, "GET", "/readyz")).status === 200,
    );
    console.log(`API ready ${recoveryMs} ms after Redis answered again`);

    const again = await request(api.url, "GET", `/api/v1/build/${cachedHash}`);
    expect(again.status).toBe(200);
    expect(again.body.request_hash).toBe(cachedHash);
    // The job queued before the outage survived in the AOF and is built now.
    const stillQueued = await request(api.url, "GET", `/api/v1/build/${queuedHash}`);
    expect(stillQueued.status, stillQueued.text).toBe(202);
    await startWorker();
    const built = await waitForBuild(api.url, queuedHash, 60_000);
    expect(built.status, built.text).toBe(200);
    expect((built.body.manifest as Record<string, string>).luci).toBeDefined();
    const fresh = await build(api.url, { ...BUILD, packages: ["tcpdump"] });
    expect(fresh.status, fresh.text).toBe(200);
  });

  it("a worker that was running through the outage takes new jobs after it", async () => {
    // workers[0] from the test above lived through nothing; stop Redis under it now.
    await redis.stop("SIGKILL");
    const down = await timed("POST", "/api/v1/build", { ...BUILD, packages: ["curl"] });
    expect(down.status).toBe(503);
    await redis.start();
    await until("readiness", async () => (await request(api.url, "GET", "/readyz")).status === 200);
    const res = await build(api.url, { ...BUILD, packages: ["curl"] }, 60_000);
    expect(res.status, res.text).toBe(200);
  });
});
