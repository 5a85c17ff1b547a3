import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./own-redis.js";

/**
 * `node dist/cli/main.js start|serve|worker` as operators run it, for the black-box fault
 * suite (issue #10): a config file of its own, pino's JSON lines collected, its own process
 * group (detached) so that a test can kill it and whatever it left behind.
 */
export interface AsuProcess {
  proc: ChildProcess;
  /** http://127.0.0.1:port (serve and start only). */
  url: string;
  prefix: string;
  workDir: string;
  configFile: string;
  /** pino lines written so far. */
  logs: Record<string, unknown>[];
}

export interface AsuProcessOptions {
  upstreamUrl: string;
  redisUrl: string;
  pubkey: string;
  /** Share a queue (and a folder) with an earlier process. */
  prefix?: string;
  workDir?: string;
  shutdownTimeoutS?: number;
  /** More `key = value` lines for asu.toml. */
  extra?: string[];
}

const spawned: ChildProcess[] = [];

export async function spawnAsu(
  command: "start" | "serve" | "worker",
  opts: AsuProcessOptions,
): Promise<AsuProcess> {
  const workDir = opts.workDir ?? (await mkdtemp(path.join(tmpdir(), "asu-fault-")));
  const prefix = opts.prefix ?? `asu-test-${randomBytes(6).toString("hex")}`;
  const port = await freePort();
  const configFile = path.join(workDir, `asu-${command}-${randomBytes(3).toString("hex")}.toml`);
  const set = new Set((opts.extra ?? []).map((line) => line.split("=")[0]?.trim()));
  const line = (key: string, value: string) => (set.has(key) ? [] : [`${key} = ${value}`]);
  await writeFile(
    configFile,
    [
      ...line("upstream_url", `"${opts.upstreamUrl}"`),
      ...line("redis_url", `"${opts.redisUrl}"`),
      ...line("redis_prefix", `"${prefix}"`),
      ...line("host", `"127.0.0.1"`),
      ...line("port", String(port)),
      ...line("public_path", `"${path.join(workDir, "public")}"`),
      ...line("cache_path", `"${path.join(workDir, "cache")}"`),
      ...line("log_level", `"info"`),
      ...line("build_rate_limit", "0"),
      ...line("shutdown_timeout", `"${opts.shutdownTimeoutS ?? 2}s"`),
      ...line("worker_lock_duration", `"2s"`),
      ...(opts.extra ?? []),
      ...["SNAPSHOT", "24.10", "23.05"].map((b) => `[branches."${b}"]\npubkey = "${opts.pubkey}"`),
    ].join("\n"),
  );
  const proc = spawn(process.execPath, [path.resolve("dist/cli/main.js"), command, "--config", configFile], {
    cwd: workDir,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    env: { ...process.env, ASU_CONFIG: "" },
  });
  spawned.push(proc);
  const logs: Record<string, unknown>[] = [];
  let buffered = "";
  proc.stdout?.on("data", (chunk: Buffer) => {
    if (process.env.ASU_TEST_WORKER_LOG) process.stdout.write(chunk);
    buffered += chunk.toString();
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const l of lines) {
      try {
        logs.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  let stderr = "";
  proc.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  await until(
    `asu ${command} running`,
    async () => {
      if (proc.exitCode !== null) throw new Error(`asu ${command} exited ${proc.exitCode}: ${stderr}`);
      return logs.some((l) => l.msg === "asu-ts running");
    },
    30_000,
  );
  return { proc, url: `http://127.0.0.1:${port}`, prefix, workDir, configFile, logs };
}

/** Kills every process group this module started that is still there (afterAll). */
export function killSpawned(): void {
  for (const c of spawned.splice(0)) {
    if (c.exitCode === null && c.signalCode === null && c.pid) {
      try {
        process.kill(-c.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

/** Polls `check` every 50 ms until it is true; throws after `timeoutMs`. Returns the time taken. */
export async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return Date.now() - started;
}

/** Sends `signal` and resolves with the exit code and how long the process took to go. */
export async function signalAndWait(
  proc: ChildProcess,
  signal: NodeJS.Signals,
  limitMs: number,
): Promise<{ code: number | null; ms: number }> {
  const started = performance.now();
  const exited = proc.exitCode !== null ? Promise.resolve() : once(proc, "exit").then(() => undefined);
  proc.kill(signal);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"late">((r) => (timer = setTimeout(() => r("late"), limitMs)));
  const result = await Promise.race([exited, late]);
  clearTimeout(timer);
  const ms = Math.round(performance.now() - started);
  if (result === "late") throw new Error(`still running ${limitMs} ms after ${signal}`);
  return { code: proc.exitCode, ms };
}

interface PsRow {
  pid: number;
  ppid: number;
  pgid: number;
  args: string;
}

function ps(): PsRow[] {
  return execFileSync("ps", ["-eo", "pid=,ppid=,pgid=,args="], { encoding: "utf8" })
    .split("\n")
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(\d+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), pgid: Number(m[3]), args: m[4] ?? "" }));
}

/**
 * The process groups of `pid` and of all its descendants. Builds run in process groups of
 * their own (ProcessRunner spawns them detached), so the server's own group is not enough.
 */
export function processGroupsUnder(pid: number): Set<number> {
  const rows = ps();
  const pids = new Set([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const r of rows) {
      if (pids.has(r.ppid) && !pids.has(r.pid)) {
        pids.add(r.pid);
        grew = true;
      }
    }
  }
  return new Set(rows.filter((r) => pids.has(r.pid)).map((r) => r.pgid));
}

/** Processes still alive in any of `groups`, or whose command line mentions `dir`. */
export function leftovers(groups: Set<number>, dir: string): string[] {
  return ps()
    .filter((r) => groups.has(r.pgid) || r.args.includes(dir))
    .filter((r) => r.pid !== process.pid && !r.args.startsWith("ps "))
    .map((r) => `${r.pid} (group ${r.pgid}): ${r.args}`);
}

export type ProxyMode = "pass" | "hold-imagebuilder" | "down" | "slow" | "garbage" | "error" | "hang";

export interface FaultyProxy {
  url: string;
  server: Server;
  mode: ProxyMode;
  /** Requests held while mode was hold-imagebuilder; `release()` lets them through. */
  held: (() => void)[];
  /** Requests taken in "hang" mode: never answered until the proxy closes. */
  hung: unknown[];
  release(): void;
  close(): Promise<void>;
}

/**
 * The mirror behind a proxy that can fail the way a download server does: hold ImageBuilder
 * downloads (a build then stays running as long as a test wants), refuse connections, trickle
 * answers, send garbage with 200, or answer 503.
 */
export async function startFaultyProxy(target: string): Promise<FaultyProxy> {
  const state = {
    mode: "pass" as ProxyMode,
    held: [] as (() => void)[],
    hung: [] as unknown[],
  };
  const server = createServer((req, res) => {
    const forward = () => {
      const upstream = httpRequest(`${target}${req.url ?? "/"}`, { method: req.method }, (up) => {
        if (state.mode !== "slow") {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
          return;
        }
        // Trickle: headers at once, then the body 4 KiB every 20 ms.
        res.writeHead(up.statusCode ?? 502, up.headers);
        void (async () => {
          try {
            for await (const chunk of up as AsyncIterable<Buffer>) {
              for (let i = 0; i < chunk.length; i += 4096) {
                res.write(chunk.subarray(i, i + 4096));
                await new Promise((r) => setTimeout(r, 20));
              }
            }
            res.end();
          } catch {
            res.destroy();
          }
        })();
      });
      upstream.on("error", () => res.destroy());
      upstream.end();
    };
    switch (state.mode) {
      case "down":
        req.socket.destroy();
        return;
      case "error":
        res.writeHead(503, { "content-type": "text/html" }).end("<h1>503 Service Unavailable</h1>");
        return;
      case "hang":
        state.hung.push(req.url);
        return;
      case "garbage":
        res.writeHead(200, { "content-type": "application/json" }).end(randomBytes(2048));
        return;
      case "hold-imagebuilder":
        if (/openwrt-imagebuilder-/.test(req.url ?? "")) {
          state.held.push(forward);
          return;
        }
        forward();
        return;
      default:
        forward();
    }
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  const proxy: FaultyProxy = {
    url: `http://127.0.0.1:${port}`,
    server,
    get mode() {
      return state.mode;
    },
    set mode(m: ProxyMode) {
      state.mode = m;
    },
    held: state.held,
    hung: state.hung,
    release() {
      if (state.mode === "hold-imagebuilder") state.mode = "pass";
      for (const go of state.held.splice(0)) go();
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
  return proxy;
}
