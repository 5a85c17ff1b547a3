/**
 * Build throughput with one and with two concurrent builds per worker (issue #13, item 3).
 *
 *   npx tsx bench/throughput.ts [builds, default 40]
 *
 * On the fast fake mirror (fixtures/mirror, bubblewrap runner), for `workers = 1` and then
 * `workers = 2`: a fresh server (own Redis prefix, own caches) builds one warm-up image (the
 * ImageBuilder download, not counted), then is sent N distinct build requests at once
 * (different package sets, so no cache hits and no deduplication). Prints builds/min for
 * each, the ratio (close to the number of cores when builds are CPU-bound), and checks that
 * every request got its own successful result: nothing lost, nothing built twice.
 * Needs Redis on 127.0.0.1:6379 (or TEST_REDIS_URL) and bubblewrap.
 */
import { availableParallelism } from "node:os";
import {
  build,
  flushPrefix,
  request,
  startMirror,
  startTestServer,
  type JsonResponse,
  type Mirror,
} from "../test/integration/harness.js";

const count = Number(process.argv[2] ?? 40);
const base = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };
const extras = ["tcpdump", "htop", "curl", "vim", "luci", "wireguard-tools", "luci-proto-wireguard", "owut"];

/** The i-th non-empty subset of `extras`: a distinct request for each i < 255. */
function packagesFor(i: number): string[] {
  return extras.filter((_, bit) => ((i + 1) >> bit) & 1);
}

interface Run {
  workers: number;
  seconds: number;
  perMinute: number;
  ok: number;
  distinctHashes: number;
  failures: string[];
}

async function drain(mirror: Mirror, workers: number): Promise<Run> {
  const server = await startTestServer(mirror, { overrides: { workers, job_timeout: "5m" } });
  try {
    const warm = await build(server.url, { ...base, packages: ["ca-bundle"] }, 300_000);
    if (warm.status !== 200) throw new Error(`warm-up build failed: ${warm.text.slice(0, 300)}`);

    const started = performance.now();
    const posted = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        request(server.url, "POST", "/api/v1/build", { ...base, packages: packagesFor(i) }),
      ),
    );
    const hashes = posted.map((r) => String(r.body.request_hash));
    const results = new Map<string, JsonResponse>();
    // Poll every outstanding build in turn; a poll is a cache hit or a queue lookup.
    while (results.size < hashes.length) {
      for (const hash of hashes) {
        if (results.has(hash)) continue;
        const res = await request(server.url, "GET", `/api/v1/build/${hash}`);
        if (res.status !== 202) results.set(hash, res);
      }
      if (results.size < hashes.length) await new Promise((r) => setTimeout(r, 200));
    }
    const seconds = (performance.now() - started) / 1000;
    const all = [...results.values()];
    return {
      workers,
      seconds,
      perMinute: (60 * count) / seconds,
      ok: all.filter((r) => r.status === 200).length,
      distinctHashes: new Set(hashes).size,
      failures: all.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.text.slice(0, 200)}`),
    };
  } finally {
    await server.close();
    await flushPrefix(server.prefix);
  }
}

async function main(): Promise<void> {
  if (count > 255) throw new Error("at most 255 distinct requests");
  const mirror = await startMirror();
  try {
    const runs: Run[] = [];
    for (const workers of [1, 2]) runs.push(await drain(mirror, workers));
    console.log(`\n${count} distinct builds on the fast fake mirror, ${availableParallelism()} cores`);
    console.log("workers".padEnd(8), "seconds".padStart(8), "builds/min".padStart(11), "results".padStart(8));
    for (const r of runs) {
      console.log(
        String(r.workers).padEnd(8),
        r.seconds.toFixed(1).padStart(8),
        r.perMinute.toFixed(1).padStart(11),
        `${r.ok}/${count}`.padStart(8),
      );
      for (const f of r.failures) console.log(`  failed: ${f}`);
      if (r.distinctHashes !== count) console.log(`  only ${r.distinctHashes} distinct requests!`);
    }
    const [one, two] = runs as [Run, Run];
    console.log(`workers=2 ÷ workers=1: ${(two.perMinute / one.perMinute).toFixed(2)}x`);
    const lost = runs.some((r) => r.ok !== count);
    console.log(lost ? "SOME BUILDS WERE LOST OR FAILED" : `nothing lost: ${count} results in each run`);
    if (lost) process.exitCode = 1;
  } finally {
    await mirror.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
