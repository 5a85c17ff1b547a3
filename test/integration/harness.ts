import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { startServer, type Role, type RunningServer } from "../../src/app.js";
import { loadConfig, type AsuConfig, type RawConfig } from "../../src/config/config.js";
import type { MirrorInfo } from "../../fixtures/mirror/generate-mirror.js";
import { startMirrorServer } from "../../fixtures/mirror/mirror-server.js";
import type { RealToolsMirrorInfo } from "../../fixtures/real-tools/generate-real-mirror.js";
import { ensureRealToolsMirror } from "../../fixtures/real-tools/real-mirror-cache.js";
import { copyFastMirror, ensureFastMirror } from "../support/fast-mirror.js";

export const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export interface Mirror {
  info: MirrorInfo;
  url: string;
  requests: string[];
  dir: string;
  close(): Promise<void>;
}

/**
 * Serves the synthetic OpenWrt mirror on loopback. The tree is generated once per test run and
 * shared (test/support/fast-mirror.ts); `writable: true` gives the caller a private copy, for
 * tests that publish a snapshot or tamper with the tree.
 */
export async function startMirror(opts: { writable?: boolean } = {}): Promise<Mirror> {
  const { info, root } = opts.writable
    ? await copyFastMirror()
    : { info: await ensureFastMirror(), root: undefined };
  const server = await startMirrorServer({ dir: info.dir });
  return {
    info,
    url: server.url,
    requests: server.requests,
    dir: info.dir,
    close: async () => {
      await server.close();
      if (root !== undefined) await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * The real-tools mirror (OpenWrt's own ImageBuilder flow with real opkg, apk and usign),
 * generated once per input hash under var/real-mirror and served read-only on loopback.
 * The tools come from the vitest global setup (test/support/global-setup.ts).
 */
export async function startRealToolsMirror(): Promise<Mirror & { info: RealToolsMirrorInfo }> {
  const tools = process.env.ASU_REAL_TOOLS_DIR;
  if (!tools) throw new Error("ASU_REAL_TOOLS_DIR is unset: run the tests through vitest's global setup");
  const info = await ensureRealToolsMirror({ toolsHostDir: tools });
  const server = await startMirrorServer({ dir: info.dir });
  return {
    info,
    url: server.url,
    requests: server.requests,
    dir: info.dir,
    // The generated tree is a cache shared by test files: only the server stops.
    close: () => server.close(),
  };
}

export interface TestServer {
  server: RunningServer;
  config: AsuConfig;
  url: string;
  prefix: string;
  workDir: string;
  close(): Promise<void>;
}

/** A config for the mirror: every mirror branch signed with the mirror's key. */
export function testConfig(mirror: Mirror, workDir: string, overrides: Partial<RawConfig> = {}): AsuConfig {
  const pubkey = mirror.info.publicKeyLine;
  return loadConfig({
    cwd: workDir,
    env: {},
    overrides: {
      upstream_url: mirror.url,
      public_path: path.join(workDir, "public"),
      cache_path: path.join(workDir, "cache"),
      redis_url: REDIS_URL,
      host: "127.0.0.1",
      port: 0,
      build_rate_limit: 0,
      log_level: "silent",
      workers: 1,
      job_timeout: "2m",
      branches: {
        SNAPSHOT: { pubkey },
        "24.10": { pubkey },
        "23.05": { pubkey },
      },
      ...overrides,
    },
  });
}

/** Starts API and/or worker against the mirror with a Redis key prefix of its own. */
export async function startTestServer(
  mirror: Mirror,
  opts: { role?: Role; overrides?: Partial<RawConfig>; prefix?: string; workDir?: string } = {},
): Promise<TestServer> {
  const workDir = opts.workDir ?? (await mkdtemp(path.join(tmpdir(), "asu-work-")));
  const prefix = opts.prefix ?? `asu-test-${randomBytes(6).toString("hex")}`;
  const config = testConfig(mirror, workDir, opts.overrides);
  const server = await startServer(config, { role: opts.role ?? "all", redisPrefix: prefix, quiet: true });
  return {
    server,
    config,
    url: server.url ?? "",
    prefix,
    workDir,
    close: async () => {
      await server.close();
    },
  };
}

/** Deletes every key under a test prefix. */
export async function flushPrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== "0");
  redis.disconnect();
}

export interface JsonResponse {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
  text: string;
}

export async function request(
  base: string,
  method: string,
  urlPath: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<JsonResponse> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)["content-type"] ??= "application/json";
  }
  const res = await fetch(`${base}${urlPath}`, { ...init, redirect: "manual" });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    parsed = {};
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

/** Polls GET /api/v1/build/<hash> until the build is no longer 202. */
export async function waitForBuild(base: string, hash: string, timeoutMs = 90_000): Promise<JsonResponse> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await request(base, "GET", `/api/v1/build/${hash}`);
    if (res.status !== 202) return res;
    if (Date.now() > deadline)
      throw new Error(`build ${hash} still ${String(res.body.imagebuilder_status)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** POSTs a build and waits for its final answer. */
export async function build(
  base: string,
  body: Record<string, unknown>,
  timeoutMs?: number,
): Promise<JsonResponse> {
  const first = await request(base, "POST", "/api/v1/build", body);
  if (first.status !== 202) return first;
  return waitForBuild(base, String(first.body.request_hash), timeoutMs);
}

export interface Stack {
  mirror: Mirror;
  api: TestServer;
}

/** The usual test setup: the run's mirror (a private copy with `writable`) and one server for it. */
export async function startStack(
  opts: Parameters<typeof startTestServer>[1] = {},
  mirrorOpts: { writable?: boolean } = {},
): Promise<Stack> {
  const mirror = await startMirror(mirrorOpts);
  const api = await startTestServer(mirror, opts);
  return { mirror, api };
}

/** Stops what startStack started and removes the server's Redis keys. Safe on a half-started stack. */
export async function stopStack(stack: Partial<Stack> | undefined): Promise<void> {
  if (stack?.api) {
    await stack.api.close();
    await flushPrefix(stack.api.prefix);
  }
  await stack?.mirror?.close();
}
