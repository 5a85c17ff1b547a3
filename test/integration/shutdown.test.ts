import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  request,
  startMirror,
  startTestServer,
  waitForBuild,
  type Mirror,
  type TestServer,
} from "./harness.js";
import { freePort, startOwnRedis, type OwnRedis } from "./own-redis.js";

// Issue #10: SIGTERM/SIGINT end `asu start|serve|worker` within shutdown_timeout + 5 s in
// every Redis state, exit 0, leave no build process behind and give a build that did not
// finish back to the queue; a second signal ends the process at once.

const SHUTDOWN_TIMEOUT_S = 2;
const LIMIT_MS = (SHUTDOWN_TIMEOUT_S + 5) * 1000;
const BUILD = { version: "23.05.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };

let mirror: Mirror;
let redis: OwnRedis;
let proxy: { url: string; server: Server; hold: boolean; held: (() => void)[] };
const children: ChildProcess[] = [];
const servers: TestServer[] = [];

/**
 * The mirror behind a proxy that can hold ImageBuilder downloads: a build then stays in
 * `download_imagebuilder` for as long as the test wants, longer than shutdown_timeout.
 */
async function startHoldingProxy(target: string): Promise<typeof proxy> {
  const state = { hold: false, held: [] as (() => void)[] };
  const server = createServer((req, res) => {
    const forward = () => {
      const upstream = httpRequest(`${target}${req.url ?? "/"}`, { method: req.method }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      upstream.on("error", () => res.destroy());
      upstream.end();
    };
    if (state.hold && /openwrt-imagebuilder-/.test(req.url ?? "")) state.held.push(forward);
    else forward();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  return Object.assign(state, { url: `http://127.0.0.1:${port}`, server });
}

interface Cli {
  proc: ChildProcess;
  url: string;
  prefix: string;
  workDir: string;
}

async function spawnCli(
  command: "start" | "serve" | "worker",
  shutdownTimeoutS = SHUTDOWN_TIMEOUT_S,
): Promise<Cli> {
  const workDir = await mkdtemp(path.join(tmpdir(), "asu-shutdown-"));
  const prefix = `asu-test-${randomBytes(6).toString("hex")}`;
  const port = await freePort();
  const toml = path.join(workDir, "asu.toml");
  await writeFile(
    toml,
    [
      `upstream_url = "${proxy.url}"`,
      `redis_url = "${redis.url}"`,
      `redis_prefix = "${prefix}"`,
      `host = "127.0.0.1"`,
      `port = ${port}`,
      `public_path = "${path.join(workDir, "public")}"`,
      `cache_path = "${path.join(workDir, "cache")}"`,
      `log_level = "info"`,
      `shutdown_timeout = "${shutdownTimeoutS}s"`,
      `worker_lock_duration = "2s"`,
      ...["SNAPSHOT", "24.10", "23.05"].map(
        (b) => `[branches."${b}"]\npubkey = "${mirror.info.publicKeyLine}"`,
      ),
    ].join("\n"),
  );
  const proc = spawn(process.execPath, [path.resolve("dist/cli/main.js"), command, "--config", toml], {
    cwd: workDir,
    stdio: ["ignore", "pipe", "inherit"],
    detached: true,
  });
  children.push(proc);
  // The worker has no HTTP port: its "asu-ts running" log line says it is ready.
  let log = "";
  proc.stdout?.on("data", (chunk: Buffer) => {
    log += chunk.toString();
    if (process.env.ASU_TEST_WORKER_LOG) process.stdout.write(chunk);
  });
  await until("the process is running", async () => log.includes('"msg":"asu-ts running"'));
  const url = `http://127.0.0.1:${port}`;
  return { proc, url, prefix, workDir };
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sends `signal` and resolves with the exit code and the time the process took to go. */
async function signalAndWait(
  proc: ChildProcess,
  signal: NodeJS.Signals,
  limitMs = LIMIT_MS,
): Promise<{ code: number | null; ms: number }> {
  const started = performance.now();
  const exited = proc.exitCode !== null ? Promise.resolve() : once(proc, "exit").then(() => undefined);
  proc.kill(signal);
  const timer = new Promise<"late">((r) => setTimeout(() => r("late"), limitMs).unref());
  const result = await Promise.race([exited, timer]);
  const ms = Math.round(performance.now() - started);
  if (result === "late") throw new Error(`still running ${limitMs} ms after ${signal}`);
  return { code: proc.exitCode, ms };
}

/** Processes whose command line mentions the folder (build sandboxes, make, tar). */
function processesUnder(dir: string): string[] {
  return execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })
    .split("\n")
    .filter((line) => line.includes(dir));
}

/** POSTs a build and waits until a worker has started it (held at download_imagebuilder). */
async function startHeldBuild(api: string, packages: string[]): Promise<string> {
  proxy.hold = true;
  const posted = await request(api, "POST", "/api/v1/build", { ...BUILD, packages });
  expect(posted.status, posted.text).toBe(202);
  const hash = String(posted.body.request_hash);
  await until("the build started", async () => {
    const poll = await request(api, "GET", `/api/v1/build/${hash}`);
    return poll.body.detail === "started";
  });
  return hash;
}

beforeAll(async () => {
  mirror = await startMirror();
  proxy = await startHoldingProxy(mirror.url);
  redis = await startOwnRedis();
});

afterEach(async () => {
  proxy.hold = false;
  for (const release of proxy.held.splice(0)) release();
  if (!redis.up) await redis.start();
});

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid) {
      try {
        process.kill(-c.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
  for (const s of servers) await s.close();
  // Our own Redis is thrown away whole, keys and AOF.
  await redis?.destroy();
  proxy?.server.close();
  await mirror?.close();
});

describe("shutdown", () => {
  it("serve: SIGTERM with Redis up exits 0 at once", async () => {
    const cli = await spawnCli("serve");
    const { code, ms } = await signalAndWait(cli.proc, "SIGTERM");
    console.log(`serve, Redis up: exited ${code} after ${ms} ms`);
    expect(code).toBe(0);
  });

  it("serve and worker: SIGTERM after Redis was killed exits 0 within shutdown_timeout + 5 s", async () => {
    const api = await spawnCli("serve");
    const worker = await spawnCli("worker");
    await redis.stop("SIGKILL");
    const [a, w] = await Promise.all([
      signalAndWait(api.proc, "SIGTERM"),
      signalAndWait(worker.proc, "SIGTERM"),
    ]);
    console.log(`Redis killed: serve exited ${a.code} after ${a.ms} ms, worker ${w.code} after ${w.ms} ms`);
    expect(a.code).toBe(0);
    expect(w.code).toBe(0);
  });

  it("start: a build running past shutdown_timeout is given back to the queue and built by the next worker", async () => {
    const cli = await spawnCli("start");
    const hash = await startHeldBuild(cli.url, ["htop"]);
    const { code, ms } = await signalAndWait(cli.proc, "SIGTERM");
    console.log(`start with a running build: exited ${code} after ${ms} ms`);
    expect(code).toBe(0);
    expect(ms).toBeGreaterThanOrEqual(SHUTDOWN_TIMEOUT_S * 1000 - 100);
    expect(processesUnder(cli.workDir)).toEqual([]);

    proxy.hold = false;
    for (const release of proxy.held.splice(0)) release();
    const next = await startTestServer(mirror, {
      prefix: cli.prefix,
      overrides: { redis_url: redis.url, upstream_url: proxy.url },
    });
    servers.push(next);
    const started = performance.now();
    const done = await waitForBuild(next.url, hash, 60_000);
    console.log(`released job built by the next worker after ${Math.round(performance.now() - started)} ms`);
    expect(done.status, done.text).toBe(200);
    expect((done.body.manifest as Record<string, string>).htop).toBeDefined();
  });

  it("start: a build that ends within shutdown_timeout finishes and its result is kept", async () => {
    const cli = await spawnCli("start", 30);
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
    proxy.hold = false;
    for (const release of proxy.held.splice(0)) release();
    await exited;
    const ms = Math.round(performance.now() - started);
    console.log(`start drained a running build and exited ${cli.proc.exitCode} after ${ms} ms`);
    expect(cli.proc.exitCode).toBe(0);
    expect(ms).toBeLessThan(30_000);
    const api = await startTestServer(mirror, {
      role: "api",
      prefix: cli.prefix,
      overrides: { redis_url: redis.url, upstream_url: proxy.url },
    });
    servers.push(api);
    const done = await request(api.url, "GET", `/api/v1/build/${hash}`);
    expect(done.status, done.text).toBe(200);
    expect((done.body.manifest as Record<string, string>).vim).toBeDefined();
  });

  it("start: SIGTERM with a running build and Redis killed exits 0 within shutdown_timeout + 5 s, leaving no process", async () => {
    const cli = await spawnCli("start");
    await startHeldBuild(cli.url, ["curl"]);
    await redis.stop("SIGKILL");
    const { code, ms } = await signalAndWait(cli.proc, "SIGTERM");
    console.log(`start, build running, Redis killed: exited ${code} after ${ms} ms`);
    expect(code).toBe(0);
    expect(processesUnder(cli.workDir)).toEqual([]);
  });

  it("a second signal ends the process at once", async () => {
    const cli = await spawnCli("start");
    await startHeldBuild(cli.url, ["tcpdump"]);
    cli.proc.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 200));
    const { code, ms } = await signalAndWait(cli.proc, "SIGINT", 1500);
    console.log(`second signal: exited ${code} after ${ms} ms`);
    expect(code).not.toBe(0);
    expect(processesUnder(cli.workDir)).toEqual([]);
  });
});
