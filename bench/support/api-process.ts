/**
 * Runs the built API (`node dist/cli/main.js serve`, as in production) as its own process for
 * the HTTP benchmarks, so the load generator does not share its event loop. Needs `npm run
 * build` first. Its log goes to a file (pino writes synchronously, so logging costs what it
 * costs in production).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, openSync, closeSync, statSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";
import { normalizeRequest } from "../../src/request/normalize-request.js";
import { requestHash } from "../../src/request/request-hash.js";
import type { BuildRequestBody } from "../../src/request/build-request-schema.js";

const root = path.resolve(import.meta.dirname, "..", "..");
/** The server to measure; ASU_BENCH_MAIN points at another build (e.g. of an older commit). */
export const MAIN = process.env.ASU_BENCH_MAIN ?? path.join(root, "dist", "cli", "main.js");

export interface ApiProcess {
  url: string;
  pid: number;
  logFile: string;
  logBytes(): number;
  /** SIGTERM, wait for exit; returns the .cpuprofile written, if profiling. */
  stop(): Promise<string | undefined>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

/** Waits until GET /healthz answers (the process is listening). */
async function waitHealthy(url: string, child: ChildProcess, deadlineMs = 30_000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the API process exited with ${child.exitCode}`);
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`the API did not answer at ${url} within ${deadlineMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startApiProcess(opts: {
  redisUrl: string;
  prefix: string;
  logLevel?: string;
  /** Write a V8 CPU profile of the server into this folder (`node --cpu-prof`). */
  cpuProfDir?: string;
}): Promise<ApiProcess> {
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
  const dir = await mkdtemp(path.join(tmpdir(), "asu-bench-api-"));
  const port = await freePort();
  const logFile = path.join(dir, "server.log");
  const out = openSync(logFile, "w");
  const flags = opts.cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
  const child = spawn(process.execPath, [...flags, MAIN, "serve"], {
    cwd: dir,
    stdio: ["ignore", out, "inherit"],
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      REDIS_URL: opts.redisUrl,
      REDIS_PREFIX: opts.prefix,
      HOST: "127.0.0.1",
      PORT: String(port),
      LOG_LEVEL: opts.logLevel ?? "info",
      // Cache hits never ask upstream; nothing listens here.
      UPSTREAM_URL: "http://127.0.0.1:9",
      PUBLIC_PATH: path.join(dir, "public"),
      CACHE_PATH: path.join(dir, "cache"),
    },
  });
  closeSync(out);
  const url = `http://127.0.0.1:${port}`;
  await waitHealthy(url, child);
  return {
    url,
    pid: child.pid as number,
    logFile,
    logBytes: () => statSync(logFile).size,
    stop: async () => {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
      let profile: string | undefined;
      if (opts.cpuProfDir) {
        const files = (await readdir(opts.cpuProfDir)).filter((f) => f.endsWith(".cpuprofile")).sort();
        profile =
          files.length > 0 ? path.join(opts.cpuProfDir, files[files.length - 1] as string) : undefined;
      }
      await rm(dir, { recursive: true, force: true });
      return profile;
    },
  };
}

/** Starts the floor (bench/support/floor-server.ts) as its own process; resolves its URL. */
export async function startFloorProcess(
  redisUrl: string,
  prefix: string,
  cpuProfDir?: string,
): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const script = path.join(root, "bench", "support", "floor-server.ts");
  const flags = cpuProfDir ? ["--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`] : [];
  const child = spawn(process.execPath, [...flags, "--import", "tsx", script, redisUrl, prefix], {
    cwd: root,
    stdio: ["ignore", "pipe", "inherit"],
  });
  let text = "";
  for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
    text += chunk.toString();
    if (text.includes("\n")) break;
  }
  const url = text.trim();
  if (!url.startsWith("http")) throw new Error(`the floor server did not start: ${text}`);
  child.stdout?.resume();
  return {
    url,
    pid: child.pid as number,
    stop: async () => {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** A cache-hit request and its ~6 KB result (a real 200 body with its manifest). */
export const BENCH_BODY = {
  version: "24.10.4",
  target: "ath79/generic",
  profile: "tplink_archer-c7-v5",
  packages: ["luci", "tcpdump", "curl"],
};

export function benchResult(hash: string): string {
  const manifest = Object.fromEntries(Array.from({ length: 120 }, (_, i) => [`package-${i}`, `1.${i}.0-r1`]));
  return JSON.stringify({
    status: 200,
    detail: "done",
    imagebuilder_status: "done",
    request_hash: hash,
    manifest,
    images: [
      { name: "openwrt-sysupgrade.bin", sha256: "0".repeat(64), type: "sysupgrade", filesystem: "squashfs" },
    ],
  });
}

/**
 * Stores the bench result where the server looks (`<prefix>:result:<request hash>`, as
 * BuildQueue.setResult does) and where the floor looks (sha256 of the body's JSON).
 */
export async function seedResults(
  redis: Redis,
  prefix: string,
): Promise<{ hash: string; floorHash: string }> {
  const hash = requestHash(normalizeRequest(BENCH_BODY as unknown as BuildRequestBody));
  const floorHash = createHash("sha256").update(JSON.stringify(BENCH_BODY)).digest("hex");
  const stored = `200${benchResult(hash)}`;
  await redis.set(`${prefix}:result:${hash}`, stored, "EX", 3600);
  await redis.set(`${prefix}:result:${floorHash}`, stored, "EX", 3600);
  return { hash, floorHash };
}

/** Deletes every key under a bench prefix. */
export async function flushBenchPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== "0");
}

/** Resident set size of a process in MiB, from /proc (VmRSS and its peak VmHWM). */
export async function rssMiB(pid: number): Promise<{ rss: number; peak: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? NaN);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}

/**
 * CPU seconds (user + system) a process has used, from /proc/<pid>/stat. CPU per request is
 * what a contended machine changes least: throughput moves with the neighbours' load.
 */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name (which may hold spaces) start at field 3.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / CLOCK_TICKS;
}
/** USER_HZ: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS = 100;
