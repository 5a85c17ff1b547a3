/**
 * Memory of the API and of cached results (issue #13, item 4).
 *
 *   npm run build && npx tsx bench/api-memory.ts [seconds of load, default 60] [connections, default 64]
 *     [--rss-only]   (ASU_BENCH_MAIN=/path/to/dist/cli/main.js measures another build)
 *
 * 1. Redis bytes per cached result: builds one image and one impossible package selection
 *    (a 500 with stdout/stderr) on the fast fake mirror, and a ~6 KB result with a manifest,
 *    and prints `MEMORY USAGE` of each result key against the size of its JSON (target <= 2x).
 * 2. API RSS: runs the built API (`node dist/cli/main.js serve`, access logs at info into a
 *    file) under cache-hit load (POST /api/v1/build and GET /api/v1/build/{hash} in turn)
 *    and prints its resident set size before, at the end, and its peak (target <= 150 MB).
 * Needs Redis on 127.0.0.1:6379 (or TEST_REDIS_URL) and bubblewrap.
 */
import { randomBytes } from "node:crypto";
import autocannon from "autocannon";
import { Redis } from "ioredis";
import { build, startStack, stopStack } from "../test/integration/harness.js";
import { BENCH_BODY, flushBenchPrefix, rssMiB, seedResults, startApiProcess } from "./support/api-process.js";

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const seconds = Number(args[0] ?? 60);
const connections = Number(args[1] ?? 64);
const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

async function resultMemory(redis: Redis, key: string): Promise<{ json: number; redis: number }> {
  const stored = (await redis.get(key)) ?? "";
  // The stored value is "<3-digit status><JSON>" (docs/decisions/001).
  const json = Buffer.byteLength(stored) - 3;
  const usage = Number(await redis.call("MEMORY", "USAGE", key, "SAMPLES", "0"));
  return { json, redis: usage };
}

async function cachedResults(redis: Redis): Promise<void> {
  const stack = await startStack({ overrides: { workers: 1 } });
  const rows: [string, { json: number; redis: number }][] = [];
  try {
    const base = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };
    const ok = await build(stack.api.url, { ...base, packages: ["tcpdump", "luci"] }, 300_000);
    const failed = await build(
      stack.api.url,
      { ...base, packages: ["dnsmasq-full"], diff_packages: false },
      300_000,
    );
    const key = (hash: unknown) => `${stack.api.prefix}:result:${String(hash)}`;
    rows.push([`build ${ok.status} (fast mirror)`, await resultMemory(redis, key(ok.body.request_hash))]);
    rows.push([
      `build ${failed.status}, impossible selection`,
      await resultMemory(redis, key(failed.body.request_hash)),
    ]);
    const { hash } = await seedResults(redis, stack.api.prefix);
    rows.push(["~6 KB result with a 120-package manifest", await resultMemory(redis, key(hash))]);
  } finally {
    await stopStack(stack);
  }
  console.log("\nRedis bytes per cached result (MEMORY USAGE, key included)");
  console.log(
    "result".padEnd(42),
    "JSON bytes".padStart(11),
    "Redis bytes".padStart(12),
    "ratio".padStart(6),
  );
  for (const [name, m] of rows) {
    console.log(
      name.padEnd(42),
      String(m.json).padStart(11),
      String(m.redis).padStart(12),
      (m.redis / m.json).toFixed(2).padStart(6),
    );
  }
}

async function apiRss(redis: Redis): Promise<void> {
  const prefix = `asu-bench-${randomBytes(6).toString("hex")}`;
  const { hash } = await seedResults(redis, prefix);
  const api = await startApiProcess({ redisUrl, prefix });
  try {
    const idle = await rssMiB(api.pid);
    const result = await autocannon({
      url: api.url,
      connections,
      duration: seconds,
      requests: [
        {
          method: "POST",
          path: "/api/v1/build",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(BENCH_BODY),
        },
        { method: "GET", path: `/api/v1/build/${hash}` },
      ],
    });
    const loaded = await rssMiB(api.pid);
    console.log(
      `\nAPI RSS under ${seconds} s of cache-hit load (${connections} connections, POST and GET in turn)`,
    );
    console.log(
      `requests: ${result.requests.total} (${result.requests.average.toFixed(0)} req/s), errors: ${result.non2xx + result.errors}`,
    );
    console.log(`RSS idle after start: ${idle.rss.toFixed(1)} MiB`);
    console.log(`RSS at the end:       ${loaded.rss.toFixed(1)} MiB`);
    console.log(
      `RSS peak (VmHWM):     ${loaded.peak.toFixed(1)} MiB  (target <= 150 MB = ${(150e6 / 2 ** 20).toFixed(0)} MiB)`,
    );
  } finally {
    await api.stop();
    await flushBenchPrefix(redis, prefix);
  }
}

async function main(): Promise<void> {
  const redis = new Redis(redisUrl);
  try {
    if (!process.argv.includes("--rss-only")) await cachedResults(redis);
    await apiRss(redis);
  } finally {
    redis.disconnect();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
