import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  leftovers,
  killSpawned,
  processGroupsUnder,
  signalAndWait,
  spawnAsu,
  startFaultyProxy,
  until,
  type AsuProcess,
  type FaultyProxy,
} from "./asu-process.js";
import {
  build,
  request,
  startMirror,
  startTestServer,
  waitForBuild,
  type Mirror,
  type TestServer,
} from "./harness.js";
import { startOwnRedis, type OwnRedis } from "./own-redis.js";

// Issue #10, the fault suite: black-box against `asu start` and against `asu serve` +
// `asu worker` processes (node dist/cli/main.js; run `npm run build` first). Each scenario
// records what was lost (must be nothing) and how long recovery took; the summary goes to
// artifacts/fault-suite.json and to stdout. Redis is a redis-server of the suite's own with
// AOF (own-redis.ts); the mirror sits behind a proxy that can hold, refuse, trickle or garble.

const SHUTDOWN_TIMEOUT_S = 2;
const LIMIT_MS = (SHUTDOWN_TIMEOUT_S + 5) * 1000;
const BUILD = { version: "23.05.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };
/** A target nothing has fetched yet: it needs upstream. */
const FRESH = { version: "24.10.4", target: "x86/64", profile: "generic" };

interface FaultRecord {
  scenario: string;
  deployment: "start" | "serve + worker" | "serve" | "in-process";
  /** Accepted builds or cached results that did not come back. Must be empty. */
  lost: string[];
  /** From the fault's end (restart, space freed, upstream back) to service restored. */
  recovery_ms: number | null;
  figures: Record<string, unknown>;
}

let mirror: Mirror;
let redis: OwnRedis;
let proxy: FaultyProxy;
const servers: TestServer[] = [];
const records: FaultRecord[] = [];

function recordFault(r: FaultRecord): void {
  records.push(r);
}

const base = () => ({ upstreamUrl: proxy.url, redisUrl: redis.url, pubkey: mirror.info.publicKeyLine });
const shared = (p: AsuProcess) => ({ ...base(), prefix: p.prefix, workDir: p.workDir });

async function timed(url: string, method: string, urlPath: string, body?: unknown) {
  const started = performance.now();
  const res = await request(url, method, urlPath, body);
  return { ...res, ms: Math.round(performance.now() - started) };
}

/** POSTs a build and waits until a worker started it; its ImageBuilder download is held. */
async function startHeldBuild(api: string, packages: string[], body = BUILD): Promise<string> {
  proxy.mode = "hold-imagebuilder";
  const posted = await request(api, "POST", "/api/v1/build", { ...body, packages });
  expect(posted.status, posted.text).toBe(202);
  const hash = String(posted.body.request_hash);
  await until("the build started", async () => {
    const poll = await request(api, "GET", `/api/v1/build/${hash}`);
    return poll.body.detail === "started";
  });
  return hash;
}

const errorLines = (p: AsuProcess, msg: RegExp) =>
  p.logs.filter((l) => typeof l.msg === "string" && msg.test(l.msg));

beforeAll(async () => {
  mirror = await startMirror();
  proxy = await startFaultyProxy(mirror.url);
  redis = await startOwnRedis();
});

afterEach(async () => {
  proxy.mode = "pass";
  proxy.release();
  if (!redis.up) await redis.start();
});

afterAll(async () => {
  killSpawned();
  for (const s of servers) await s.close();
  // Our own Redis is thrown away whole, keys and AOF.
  await redis?.destroy();
  await proxy?.close();
  await mirror?.close();
  if (records.length > 0) {
    const summary = {
      generated_at: new Date().toISOString(),
      lost_total: records.reduce((n, r) => n + r.lost.length, 0),
      scenarios: records,
    };
    await mkdir("artifacts", { recursive: true });
    await writeFile("artifacts/fault-suite.json", `${JSON.stringify(summary, null, 2)}\n`);
    console.log(`fault suite (artifacts/fault-suite.json):\n${JSON.stringify(summary, null, 2)}`);
  }
});

describe("worker killed", () => {
  it("serve + worker: SIGKILL mid-build; the build finishes after a worker restart", async () => {
    const api = await spawnAsu("serve", base());
    const worker = await spawnAsu("worker", shared(api));
    const hash = await startHeldBuild(api.url, ["htop"]);
    const exited = once(worker.proc, "exit");
    process.kill(-worker.proc.pid!, "SIGKILL");
    await exited;
    const afterKill = await request(api.url, "GET", `/api/v1/build/${hash}`);
    expect(afterKill.status).toBe(202);

    proxy.release();
    const restarted = performance.now();
    await spawnAsu("worker", shared(api));
    const done = await waitForBuild(api.url, hash, 60_000);
    const recovery = Math.round(performance.now() - restarted);
    recordFault({
      scenario: "worker SIGKILL mid-build, then restarted",
      deployment: "serve + worker",
      lost: done.status === 200 ? [] : [hash],
      recovery_ms: recovery,
      figures: { worker_lock_duration_s: 2, recovery_is: "worker restart to build done" },
    });
    expect(done.status, done.text).toBe(200);
    expect((done.body.manifest as Record<string, string>).htop).toBeDefined();
  });
});

describe("Redis stopped and restarted (AOF)", () => {
  it("serve + worker: 503 at once while down, nothing lost, a job queued before the outage is built after it", async () => {
    const api = await spawnAsu("serve", base());
    const worker = await spawnAsu("worker", shared(api));
    const cached = await build(api.url, { ...BUILD, packages: ["htop"] }, 60_000);
    expect(cached.status, cached.text).toBe(200);
    const cachedHash = String(cached.body.request_hash);
    // No worker: the next job waits in the queue through the outage.
    expect((await signalAndWait(worker.proc, "SIGTERM", LIMIT_MS)).code).toBe(0);
    const queued = await request(api.url, "POST", "/api/v1/build", { ...BUILD, packages: ["luci"] });
    expect(queued.status, queued.text).toBe(202);
    const queuedHash = String(queued.body.request_hash);

    await redis.stop("SIGTERM");
    const answers: Record<string, { status: number; ms: number }> = {};
    for (let i = 0; i < 5; i++) {
      for (const [method, urlPath, body] of [
        ["POST", "/api/v1/build", { ...BUILD, packages: ["tcpdump"] }],
        ["GET", `/api/v1/build/${queuedHash}`],
        ["GET", `/api/v1/build/${cachedHash}`],
        ["GET", "/metrics"],
        ["GET", "/api/v1/stats"],
      ] as [string, string, unknown?][]) {
        const res = await timed(api.url, method, urlPath, body);
        expect(res.status, `${method} ${urlPath}: ${res.text}`).toBe(503);
        expect(res.ms, `${method} ${urlPath}`).toBeLessThan(2000);
        expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
        expect(String(res.body.detail)).toMatch(/queue is unavailable.*retry/i);
        const key = `${method} ${urlPath.replace(/[0-9a-f]{64}/, ":hash")}`;
        answers[key] = { status: res.status, ms: Math.max(res.ms, answers[key]?.ms ?? 0) };
      }
    }
    expect((await request(api.url, "GET", "/healthz")).status).toBe(200);
    // 25 requests, each failing to count itself in Redis: one warning, not 25.
    expect(errorLines(api, /stats write/).length).toBeLessThanOrEqual(1);
    // A worker started during the outage waits for Redis instead of giving up.
    await spawnAsu("worker", shared(api));

    await redis.start();
    const restarted = performance.now();
    const readyMs = await until(
      "readiness",
      async () => (await request(api.url, "GET", "/readyz")).status === 200,
    );
    const again = await request(api.url, "GET", `/api/v1/build/${cachedHash}`);
    const built = await waitForBuild(api.url, queuedHash, 60_000);
    const recovery = Math.round(performance.now() - restarted);
    const fresh = await build(api.url, { ...BUILD, packages: ["tcpdump"] }, 60_000);
    recordFault({
      scenario: "Redis stopped (SIGTERM) and restarted, AOF on",
      deployment: "serve + worker",
      lost: [
        ...(again.status === 200 ? [] : [`cached result ${cachedHash}`]),
        ...(built.status === 200 ? [] : [`queued job ${queuedHash}`]),
      ],
      recovery_ms: recovery,
      figures: {
        slowest_503_ms: Math.max(...Object.values(answers).map((a) => a.ms)),
        ready_after_restart_ms: readyMs,
        stats_warnings_during_outage: errorLines(api, /stats write/).length,
        recovery_is: "Redis restart to the queued job built",
      },
    });
    expect(again.status, again.text).toBe(200);
    expect(built.status, built.text).toBe(200);
    expect((built.body.manifest as Record<string, string>).luci).toBeDefined();
    expect(fresh.status, fresh.text).toBe(200);
  });
});

describe("upstream faults", () => {
  it("start: down, 503, garbage and slow upstream; cached results and metadata keep being served", async () => {
    const cli = await spawnAsu("start", base());
    const body = { ...BUILD, packages: ["htop"] };
    const done = await build(cli.url, body, 60_000);
    expect(done.status, done.text).toBe(200);
    const figures: Record<string, unknown> = {};
    const lost: string[] = [];
    for (const mode of ["down", "error", "garbage"] as const) {
      proxy.mode = mode;
      const cached = await timed(cli.url, "POST", "/api/v1/build", body);
      if (cached.status !== 200) lost.push(`cached build while upstream ${mode}`);
      expect(cached.status).toBe(200);
      expect(cached.body.request_hash).toBe(done.body.request_hash);
      expect((await request(cli.url, "GET", "/json/v1/overview.json")).status).toBe(200);
      const fresh = await timed(cli.url, "POST", "/api/v1/build", FRESH);
      expect([502, 503, 504], fresh.text).toContain(fresh.status);
      expect(fresh.body.status).toBe(fresh.status);
      expect(String(fresh.body.detail)).toMatch(/upstream/i);
      expect(fresh.ms).toBeLessThan(5000);
      expect((await request(cli.url, "GET", "/healthz")).status).toBe(200);
      figures[mode] = { new_build: fresh.status, new_build_ms: fresh.ms, cached_ms: cached.ms };
    }

    // Upstream back: the target that failed builds now.
    proxy.mode = "pass";
    const back = performance.now();
    const recovered = await build(cli.url, FRESH, 60_000);
    const recovery = Math.round(performance.now() - back);
    expect(recovered.status, recovered.text).toBe(200);

    // Trickling upstream: a new build waits for it; cached answers do not.
    proxy.mode = "slow";
    const slowStarted = performance.now();
    const posted = await request(cli.url, "POST", "/api/v1/build", { ...FRESH, packages: ["curl"] });
    expect([200, 202], posted.text).toContain(posted.status);
    const cachedWhileSlow = await timed(cli.url, "POST", "/api/v1/build", body);
    expect(cachedWhileSlow.status).toBe(200);
    const slowBuild = await waitForBuild(cli.url, String(posted.body.request_hash), 60_000);
    expect(slowBuild.status, slowBuild.text).toBe(200);
    figures.slow = {
      new_build_ms: Math.round(performance.now() - slowStarted),
      cached_ms: cachedWhileSlow.ms,
    };
    recordFault({
      scenario: "upstream down, 503, garbage, then slow",
      deployment: "start",
      lost,
      recovery_ms: recovery,
      figures: { ...figures, recovery_is: "upstream back to a new target built" },
    });
  });
});

describe("disk full", () => {
  let fsDir: string | undefined;
  let mounted = false;
  let skipReason = "";

  beforeAll(async () => {
    fsDir = await mkdtemp(path.join(tmpdir(), "asu-diskfull-"));
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", fsDir], { stdio: "pipe" });
      mounted = true;
    } catch (err) {
      skipReason = `cannot mount a size-limited tmpfs here (${String((err as Error).message).split("\n")[0]}); src/worker/build-worker.test.ts covers disk full with an injected ENOSPC`;
    }
  });

  afterAll(async () => {
    killSpawned();
    if (mounted && fsDir) execFileSync("umount", ["-l", fsDir]);
    if (fsDir) await rm(fsDir, { recursive: true, force: true });
  });

  it("start: a full store and cache fail the build clearly, serve nothing half-written, and build again once space is freed", async (ctx) => {
    if (!mounted || !fsDir) {
      console.warn(`disk full skipped: ${skipReason}`);
      ctx.skip();
      return;
    }
    const dir = fsDir;
    const cli = await spawnAsu("start", {
      ...base(),
      extra: [`public_path = "${dir}/public"`, `cache_path = "${dir}/cache"`],
    });
    const body = { ...BUILD, packages: ["htop"] };
    const done = await build(cli.url, body, 60_000);
    expect(done.status, done.text).toBe(200);
    const image = (done.body.images as { name: string; sha256: string }[])[0]!;
    const doneHash = String(done.body.request_hash);

    // Fill the filesystem to the last byte.
    const filler = path.join(dir, "filler");
    try {
      execFileSync("dd", ["if=/dev/zero", `of=${filler}`, "bs=64k"], { stdio: "pipe" });
    } catch {
      // dd stops at ENOSPC: that is the point
    }
    // One build whose ImageBuilder is cached (its files do not fit in the store), one whose
    // ImageBuilder must first be downloaded into the full cache.
    const [full, fullCache] = await Promise.all([
      build(cli.url, { ...BUILD, packages: ["vim"] }, 60_000),
      build(cli.url, { ...FRESH, packages: ["vim"] }, 60_000),
    ]);
    const fullHash = String(full.body.request_hash);
    for (const res of [full, fullCache]) {
      expect(res.status, res.text).toBe(500);
      expect(String(res.body.detail)).toMatch(/ran out of disk space.*try again later/i);
    }
    const operator = errorLines(cli, /disk full/).filter((l) => l.level === 50);
    expect(new Set(operator.map((l) => l.hash))).toEqual(
      new Set([fullHash, String(fullCache.body.request_hash)]),
    );
    // Nothing half-written is in the store or served.
    const storeDir = path.join(dir, "public", "store");
    const names = await readdir(storeDir);
    expect(names.filter((n) => n.startsWith(".tmp-") || n === fullHash)).toEqual([]);
    expect((await request(cli.url, "GET", `/store/${fullHash}/${image.name}`)).status).toBe(404);
    // The server keeps serving what it has.
    expect((await request(cli.url, "GET", "/healthz")).status).toBe(200);
    const cached = await request(cli.url, "POST", "/api/v1/build", body);
    expect(cached.status).toBe(200);
    const download = await fetch(`${cli.url}/store/${doneHash}/${image.name}`);
    expect(download.status).toBe(200);
    const bytes = Buffer.from(await download.arrayBuffer());
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(image.sha256);

    await rm(filler);
    const freed = performance.now();
    const again = await build(cli.url, { ...BUILD, packages: ["curl"] }, 60_000);
    const recovery = Math.round(performance.now() - freed);
    recordFault({
      scenario: "disk full (size-limited tmpfs for store and cache)",
      deployment: "start",
      lost: cached.status === 200 ? [] : [`cached build ${doneHash}`],
      recovery_ms: recovery,
      figures: {
        tmpfs: "16m",
        user_detail: full.body.detail,
        operator_log: operator[0]?.msg,
        disk_full_log_lines: operator.length,
        recovery_is: "space freed to a new build done",
      },
    });
    expect(again.status, again.text).toBe(200);
  });
});

describe("shutdown", () => {
  it("serve: SIGTERM with Redis up exits 0 at once", async () => {
    const cli = await spawnAsu("serve", base());
    const { code, ms } = await signalAndWait(cli.proc, "SIGTERM", LIMIT_MS);
    recordFault({
      scenario: "SIGTERM, Redis up",
      deployment: "serve",
      lost: [],
      recovery_ms: null,
      figures: { exit_code: code, exit_ms: ms },
    });
    expect(code).toBe(0);
  });

  it("serve and worker: SIGTERM after Redis was killed exits 0 within shutdown_timeout + 5 s", async () => {
    const api = await spawnAsu("serve", base());
    const worker = await spawnAsu("worker", shared(api));
    await redis.stop("SIGKILL");
    const [a, w] = await Promise.all([
      signalAndWait(api.proc, "SIGTERM", LIMIT_MS),
      signalAndWait(worker.proc, "SIGTERM", LIMIT_MS),
    ]);
    recordFault({
      scenario: "SIGTERM, Redis killed",
      deployment: "serve + worker",
      lost: [],
      recovery_ms: null,
      figures: { serve_exit: a, worker_exit: w, limit_ms: LIMIT_MS },
    });
    expect(a.code).toBe(0);
    expect(w.code).toBe(0);
  });

  it("serve: SIGTERM with keep-alive clients, one of them mid-request, exits 0 and closes their sockets", async () => {
    const cli = await spawnAsu("serve", base());
    const clients = await keepAliveClients(cli.url);
    const { code, ms } = await signalAndWait(cli.proc, "SIGTERM", LIMIT_MS);
    await clients.all;
    recordFault({
      scenario: "SIGTERM with keep-alive clients",
      deployment: "serve",
      lost: [],
      recovery_ms: null,
      figures: { exit_code: code, exit_ms: ms },
    });
    expect(code).toBe(0);
  });

  it("in-process close with keep-alive clients, one mid-request, is bounded and closes their sockets", async () => {
    const api = await startTestServer(mirror, {
      role: "api",
      overrides: { redis_url: redis.url, upstream_url: proxy.url },
    });
    servers.push(api);
    const clients = await keepAliveClients(api.url);
    const started = performance.now();
    await api.server.close({ timeoutMs: 500 });
    // Without a forced close the request waiting on upstream held its socket (and Fastify)
    // open for the upstream timeout (30 s), and the socket then for keepAliveTimeout (72 s).
    const closed = await Promise.race([
      clients.all.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), 5000).unref()),
    ]);
    const ms = Math.round(performance.now() - started);
    recordFault({
      scenario: "close() with keep-alive clients",
      deployment: "in-process",
      lost: [],
      recovery_ms: null,
      figures: { close_ms: ms, sockets_closed: closed },
    });
    expect(closed).toBe(true);
    expect(api.server.app?.server.listening).toBe(false);
  });

  it("start: a build running past shutdown_timeout is given back to the queue and built by the next worker", async () => {
    const cli = await spawnAsu("start", base());
    const hash = await startHeldBuild(cli.url, ["htop"]);
    const groups = processGroupsUnder(cli.proc.pid!);
    const { code, ms } = await signalAndWait(cli.proc, "SIGTERM", LIMIT_MS);
    expect(code).toBe(0);
    expect(ms).toBeGreaterThanOrEqual(SHUTDOWN_TIMEOUT_S * 1000 - 100);
    expect(leftovers(groups, cli.workDir)).toEqual([]);

    proxy.release();
    const restarted = performance.now();
    const successor = await spawnAsu("start", shared(cli));
    const next = await waitForBuild(successor.url, hash, 60_000);
    const recovery = Math.round(performance.now() - restarted);
    recordFault({
      scenario: "SIGTERM with a build running past shutdown_timeout",
      deployment: "start",
      lost: next.status === 200 ? [] : [hash],
      recovery_ms: recovery,
      figures: { exit_code: code, exit_ms: ms, recovery_is: "restart to the released build done" },
    });
    expect(next.status, next.text).toBe(200);
    expect((next.body.manifest as Record<string, string>).htop).toBeDefined();
  });

  it("start: a build that ends within shutdown_timeout finishes and its result is kept", async () => {
    const cli = await spawnAsu("start", { ...base(), shutdownTimeoutS: 30 });
    const hash = await startHeldBuild(cli.url, ["vim"]);
    const exited = once(cli.proc, "exit");
    const started = performance.now();
    cli.proc.kill("SIGTERM");
    // The API stops answering at once; the build goes on.
    await until("the API stopped", async () =>
      request(cli.url, "GET", "/healthz").then(
        () => false,
        () => true,
      ),
    );
    proxy.release();
    await exited;
    const ms = Math.round(performance.now() - started);
    expect(cli.proc.exitCode).toBe(0);
    expect(ms).toBeLessThan(30_000);
    const api = await spawnAsu("serve", shared(cli));
    const done = await request(api.url, "GET", `/api/v1/build/${hash}`);
    recordFault({
      scenario: "SIGTERM with a build that ends within shutdown_timeout",
      deployment: "start",
      lost: done.status === 200 ? [] : [hash],
      recovery_ms: null,
      figures: { exit_code: cli.proc.exitCode, exit_ms: ms },
    });
    expect(done.status, done.text).toBe(200);
    expect((done.body.manifest as Record<string, string>).vim).toBeDefined();
  });

  it("start: SIGTERM with a running build and Redis killed exits 0 in time, leaves no process, and the job comes back after Redis does", async () => {
    const cli = await spawnAsu("start", base());
    const hash = await startHeldBuild(cli.url, ["curl"]);
    const groups = processGroupsUnder(cli.proc.pid!);
    await redis.stop("SIGKILL");
    const { code, ms } = await signalAndWait(cli.proc, "SIGTERM", LIMIT_MS);
    expect(code).toBe(0);
    expect(leftovers(groups, cli.workDir)).toEqual([]);
    const released = errorLines(cli, /giving them back to the queue/).length > 0;

    // The job could not be moved back while Redis was away: it is still "active" with a lock
    // that expires after worker_lock_duration; BullMQ's stalled-job check then requeues it.
    proxy.release();
    await redis.start();
    const restarted = performance.now();
    const successor = await spawnAsu("start", shared(cli));
    const next = await waitForBuild(successor.url, hash, 60_000);
    const recovery = Math.round(performance.now() - restarted);
    recordFault({
      scenario: "SIGTERM with a build running, Redis killed; job released while Redis is down",
      deployment: "start",
      lost: next.status === 200 ? [] : [hash],
      recovery_ms: recovery,
      figures: {
        exit_code: code,
        exit_ms: ms,
        limit_ms: LIMIT_MS,
        release_attempted: released,
        worker_lock_duration_s: 2,
        recovery_is: "Redis and server restart to the job built (via the stalled-job check)",
      },
    });
    expect(next.status, next.text).toBe(200);
    expect((next.body.manifest as Record<string, string>).curl).toBeDefined();
  });

  it("a second signal ends the process at once", async () => {
    const cli = await spawnAsu("start", base());
    await startHeldBuild(cli.url, ["tcpdump"]);
    const groups = processGroupsUnder(cli.proc.pid!);
    cli.proc.kill("SIGTERM");
    await until("the first signal was taken", async () => cli.logs.some((l) => l.msg === "shutting down"));
    const { code, ms } = await signalAndWait(cli.proc, "SIGINT", 1500);
    recordFault({
      scenario: "second signal",
      deployment: "start",
      lost: [],
      recovery_ms: null,
      figures: { exit_code: code, exit_ms: ms },
    });
    expect(code).not.toBe(0);
    expect(leftovers(groups, cli.workDir)).toEqual([]);
  });
});

interface HeldSocket {
  socket: Socket;
  closed: Promise<void>;
}

/** Opens a raw socket to the server's port. */
async function openSocket(url: string): Promise<HeldSocket> {
  const { hostname, port } = new URL(url);
  const socket = connect({ host: hostname, port: Number(port) });
  await once(socket, "connect");
  const closed = once(socket, "close").then(() => undefined);
  socket.on("error", () => undefined);
  // Read whatever comes, or the socket never sees the server's FIN.
  socket.resume();
  return { socket, closed };
}

/**
 * Three keep-alive clients: one idle after a finished request, one in the middle of sending a
 * request body (a stalled upload), and one whose request waits on an upstream that does not
 * answer (the proxy hangs while it is in "hang" mode).
 */
async function keepAliveClients(
  url: string,
): Promise<{ idle: HeldSocket; stalled: HeldSocket; waiting: HeldSocket; all: Promise<void> }> {
  const idle = await openSocket(url);
  const answered = new Promise<void>((resolve) => {
    let text = "";
    idle.socket.on("data", (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes("\r\n\r\n") && text.includes('"ok"')) resolve();
    });
  });
  idle.socket.write("GET /healthz HTTP/1.1\r\nHost: asu\r\nConnection: keep-alive\r\n\r\n");
  await answered;
  const stalled = await openSocket(url);
  stalled.socket.write(
    "POST /api/v1/build HTTP/1.1\r\nHost: asu\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
  );
  proxy.mode = "hang";
  const hung = proxy.hung.length;
  const waiting = await openSocket(url);
  const body = JSON.stringify(FRESH);
  waiting.socket.write(
    `POST /api/v1/build HTTP/1.1\r\nHost: asu\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
  await until("the request reached upstream", async () => proxy.hung.length > hung);
  return {
    idle,
    stalled,
    waiting,
    all: Promise.all([idle.closed, stalled.closed, waiting.closed]).then(() => undefined),
  };
}
