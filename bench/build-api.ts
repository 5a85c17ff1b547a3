/**
 * Cache-hit speed of the build API against its floor, in one run (issue #13).
 *
 *   npm run build && npx tsx bench/build-api.ts [seconds per run, default 8] [connections, default 64]
 *     [--reps N (default 3)] [--log-level info|warn|...] [--profile DIR]
 *
 * Three processes: this one (autocannon), the API as in production (`node dist/cli/main.js
 * serve`, access logs at info into a file), and the floor (bench/support/floor-server.ts: a
 * bare Fastify route that parses the body, hashes it and does one Redis GET; and one that
 * does only the GET). Each repetition measures, back to back:
 *   POST floor, POST /api/v1/build (cache hit), GET floor, GET /api/v1/build/{hash},
 * and the table gives, per row, the median over the repetitions of req/s, p50, p99 and the
 * server's CPU time per request (/proc: what a shared, noisy machine changes least), with
 * ours ÷ floor. Targets: POST >= 0.8x, GET >= 0.95x, p99 <= 1.5x the floor's p99.
 * ASU_BENCH_MAIN=/path/to/dist/cli/main.js measures another build (before/after a change).
 * --profile DIR writes a V8 CPU profile of the API into DIR and of the floor into DIR/floor (summarise with
 * bench/cpu-profile-top.ts). Needs Redis on 127.0.0.1:6379 (or TEST_REDIS_URL).
 */
import { randomBytes } from "node:crypto";
import autocannon from "autocannon";
import { Redis } from "ioredis";
import {
  BENCH_BODY,
  cpuSeconds,
  flushBenchPrefix,
  seedResults,
  startApiProcess,
  startFloorProcess,
} from "./support/api-process.js";

const flag = (name: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const positional = process.argv
  .slice(2)
  .filter((a, i, all) => !a.startsWith("--") && !all[i - 1]?.startsWith("--"));
const seconds = Number(positional[0] ?? 8);
const connections = Number(positional[1] ?? 64);
const reps = Number(flag("--reps") ?? 3);
const logLevel = flag("--log-level") ?? "info";
const profileDir = flag("--profile");
const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

interface Figures {
  rps: number;
  p50: number;
  p99: number;
  /** Server CPU time per request, in microseconds (user + system, from /proc). */
  cpuUs: number;
  errors: number;
}

async function measure(opts: autocannon.Options, pid: number, duration = seconds): Promise<Figures> {
  const cpuBefore = await cpuSeconds(pid);
  const result = await autocannon({ ...opts, connections, duration });
  const cpu = (await cpuSeconds(pid)) - cpuBefore;
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    cpuUs: (cpu * 1e6) / Math.max(1, result.requests.total),
    errors: result.non2xx + result.errors + result.timeouts,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

async function main(): Promise<void> {
  const prefix = `asu-bench-${randomBytes(6).toString("hex")}`;
  const redis = new Redis(redisUrl);
  const { hash } = await seedResults(redis, prefix);
  const api = await startApiProcess({
    redisUrl,
    prefix,
    logLevel,
    ...(profileDir ? { cpuProfDir: profileDir } : {}),
  });
  const floor = await startFloorProcess(redisUrl, prefix, profileDir && `${profileDir}/floor`);
  const json = { "content-type": "application/json" };
  const body = JSON.stringify(BENCH_BODY);
  const check = await fetch(`${api.url}/api/v1/build`, { method: "POST", headers: json, body });
  if (check.status !== 200)
    throw new Error(`expected a cache hit, got ${check.status}: ${await check.text()}`);

  const runs: [string, autocannon.Options, number][] = [
    [
      "floor POST (parse, hash, GET)",
      { url: `${floor.url}/floor`, method: "POST", headers: json, body },
      floor.pid,
    ],
    [
      "POST /api/v1/build (cache hit)",
      { url: `${api.url}/api/v1/build`, method: "POST", headers: json, body },
      api.pid,
    ],
    ["floor GET (one Redis GET)", { url: `${floor.url}/floor/${hash}` }, floor.pid],
    ["GET /api/v1/build/{hash}", { url: `${api.url}/api/v1/build/${hash}` }, api.pid],
  ];
  // Warm up both processes (JIT, connection pools) before anything counts.
  for (const [, opts, pid] of runs) await measure(opts, pid, 2);

  const results = new Map<string, Figures[]>(runs.map(([name]) => [name, []]));
  const logBefore = api.logBytes();
  for (let rep = 1; rep <= reps; rep++) {
    for (const [name, opts, pid] of runs) {
      const f = await measure(opts, pid);
      results.get(name)?.push(f);
      console.log(
        `rep ${rep}  ${name.padEnd(32)} ${f.rps.toFixed(0).padStart(7)} req/s  p50 ${f.p50} ms  p99 ${f.p99} ms  cpu ${f.cpuUs.toFixed(0)} µs/req  errors ${f.errors}`,
      );
    }
  }
  const logged = api.logBytes() - logBefore;

  const med = (name: string) => {
    const fs = results.get(name) ?? [];
    return {
      rps: median(fs.map((f) => f.rps)),
      p50: median(fs.map((f) => f.p50)),
      p99: median(fs.map((f) => f.p99)),
      cpuUs: median(fs.map((f) => f.cpuUs)),
      errors: fs.reduce((n, f) => n + f.errors, 0),
    };
  };
  console.log(
    `\nmedians of ${reps} runs, ${seconds} s each, ${connections} connections, loopback; API log_level ${logLevel}`,
  );
  console.log(
    "run".padEnd(32),
    "req/s".padStart(8),
    "p50 ms".padStart(7),
    "p99 ms".padStart(7),
    "rps ÷ floor".padStart(12),
    "p99 ÷ floor".padStart(12),
    "µs CPU/req".padStart(11),
    "CPU ÷ floor".padStart(12),
    "errors".padStart(7),
  );
  for (const [i, [name]] of runs.entries()) {
    const f = med(name);
    const base = med((runs[i % 2 === 0 ? i : i - 1] as [string, unknown, number])[0]);
    console.log(
      name.padEnd(32),
      f.rps.toFixed(0).padStart(8),
      f.p50.toFixed(1).padStart(7),
      f.p99.toFixed(1).padStart(7),
      (f.rps / base.rps).toFixed(2).padStart(12),
      (f.p99 / base.p99).toFixed(2).padStart(12),
      f.cpuUs.toFixed(0).padStart(11),
      (f.cpuUs / base.cpuUs).toFixed(2).padStart(12),
      String(f.errors).padStart(7),
    );
  }
  console.log(`API log written during the measured runs: ${(logged / 1024 / 1024).toFixed(1)} MiB`);

  await floor.stop();
  const profile = await api.stop();
  if (profile) console.log(`CPU profile of the API: ${profile}`);
  await flushBenchPrefix(redis, prefix);
  redis.disconnect();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
