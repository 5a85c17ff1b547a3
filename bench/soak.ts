/**
 * Sustained mixed load on loopback (issue #10, item 6): not a test, it prints figures.
 *
 *   npm run build && npx tsx bench/soak.ts [seconds, default 180] [requests per second, default 100]
 *
 * Starts the fast synthetic mirror and `asu start` (node dist/cli/main.js, its own process, so
 * its RSS is the server's alone) on Redis 127.0.0.1:6379 (or TEST_REDIS_URL) with a key prefix
 * of its own. Then, at a fixed rate, a mix of:
 *   - cache hits: POST /api/v1/build of requests built during warm-up (70 %),
 *   - polls: GET /api/v1/build/{hash} of those (20 %),
 *   - new builds: POST of a request never built before, polled to its end (10 %, at most two
 *     at a time; when those are busy the slot becomes a cache hit).
 * Prints requests served, errors by status, p50/p99 latency per kind, builds completed, and
 * the server's RSS at start, every 30 s and at the end. Errors are answers >= 400 (and network
 * failures); 202 is a normal answer while a build runs.
 */
import { readFile } from "node:fs/promises";
import { flushPrefix, REDIS_URL, request, startMirror, waitForBuild } from "../test/integration/harness.js";
import { killSpawned, signalAndWait, spawnAsu } from "../test/integration/asu-process.js";

const seconds = Number(process.argv[2] ?? 180);
const rate = Number(process.argv[3] ?? 100);
const MAX_NEW_BUILDS = 2;

type Kind = "cache_hit" | "poll" | "new_build";

const PACKAGES = ["htop", "curl", "tcpdump", "vim", "luci"];
const TARGETS = [
  { version: "23.05.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" },
  { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" },
  { version: "24.10.4", target: "ath79/generic", profile: "netgear_wndr3700" },
  { version: "24.10.4", target: "ath79/generic", profile: "glinet_gl-ar300m16" },
  { version: "24.10.4", target: "x86/64", profile: "generic" },
];

/** Every distinct request: each target with each non-empty subset of PACKAGES. */
function* requests(): Generator<Record<string, unknown>> {
  for (let mask = 1; mask < 1 << PACKAGES.length; mask++) {
    for (const t of TARGETS) yield { ...t, packages: PACKAGES.filter((_, i) => mask & (1 << i)) };
  }
}

async function rssKiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function main(): Promise<void> {
  const mirror = await startMirror();
  const server = await spawnAsu("start", {
    upstreamUrl: mirror.url,
    redisUrl: REDIS_URL,
    pubkey: mirror.info.publicKeyLine,
    shutdownTimeoutS: 10,
    // The default log level: every request is logged, as an operator runs it.
    extra: [`worker_lock_duration = "30s"`],
  });
  const pid = server.proc.pid!;
  const fresh = requests();
  const next = () => fresh.next().value as Record<string, unknown> | undefined;

  // Warm-up: a few finished builds to hit and poll.
  const cached: { body: Record<string, unknown>; hash: string }[] = [];
  for (let i = 0; i < 4; i++) {
    const body = next()!;
    const posted = await request(server.url, "POST", "/api/v1/build", body);
    const done = await waitForBuild(server.url, String(posted.body.request_hash), 120_000);
    if (done.status !== 200) throw new Error(`warm-up build failed: ${done.text}`);
    cached.push({ body, hash: String(posted.body.request_hash) });
  }

  const latencies: Record<Kind, number[]> = { cache_hit: [], poll: [], new_build: [] };
  const statuses = new Map<string, number>();
  let served = 0;
  let buildsCompleted = 0;
  let buildsFailed = 0;
  let newBuildsRunning = 0;
  let exhausted = false;
  let skipped = 0;
  const count = (key: string) => statuses.set(key, (statuses.get(key) ?? 0) + 1);

  async function timedRequest(kind: Kind, method: string, urlPath: string, body?: unknown) {
    const started = performance.now();
    try {
      const res = await request(server.url, method, urlPath, body);
      latencies[kind].push(performance.now() - started);
      served += 1;
      count(String(res.status));
      return res;
    } catch (err) {
      count(`network: ${(err as Error).message}`);
      return undefined;
    }
  }

  async function newBuild(body: Record<string, unknown>): Promise<void> {
    newBuildsRunning += 1;
    try {
      const posted = await timedRequest("new_build", "POST", "/api/v1/build", body);
      if (!posted) return;
      let res = posted;
      while (res.status === 202) {
        await new Promise((r) => setTimeout(r, 250));
        const polled = await timedRequest("poll", "GET", `/api/v1/build/${String(posted.body.request_hash)}`);
        if (!polled) return;
        res = polled;
      }
      if (res.status === 200) {
        buildsCompleted += 1;
        cached.push({ body, hash: String(res.body.request_hash) });
      } else buildsFailed += 1;
    } finally {
      newBuildsRunning -= 1;
    }
  }

  const rssStart = await rssKiB(pid);
  const rssSamples: { at_s: number; rss_mib: number }[] = [{ at_s: 0, rss_mib: rssStart / 1024 }];
  const started = Date.now();
  const end = started + seconds * 1000;
  const inflight = new Set<Promise<unknown>>();
  let tick = 0;
  let nextSample = started + 30_000;
  console.log(`soak: ${seconds} s at ${rate} requests/s against ${server.url} (pid ${pid})`);
  while (Date.now() < end) {
    // Open loop at a fixed rate, bounded: never more than rate/2 requests in flight.
    const due = started + (tick * 1000) / rate;
    if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
    tick += 1;
    if (inflight.size > rate / 2) {
      // The server is behind: the load stays bounded instead of piling up.
      skipped += 1;
      continue;
    }
    const roll = Math.random();
    const pick = cached[Math.floor(Math.random() * cached.length)]!;
    let work: Promise<unknown>;
    if (roll < 0.1 && newBuildsRunning < MAX_NEW_BUILDS && !exhausted) {
      const body = next();
      if (body) work = newBuild(body);
      else {
        exhausted = true;
        work = timedRequest("cache_hit", "POST", "/api/v1/build", pick.body);
      }
    } else if (roll < 0.3) {
      work = timedRequest("poll", "GET", `/api/v1/build/${pick.hash}`);
    } else {
      work = timedRequest("cache_hit", "POST", "/api/v1/build", pick.body);
    }
    inflight.add(work);
    void work.finally(() => inflight.delete(work));
    if (Date.now() >= nextSample) {
      nextSample += 30_000;
      rssSamples.push({
        at_s: Math.round((Date.now() - started) / 1000),
        rss_mib: (await rssKiB(pid)) / 1024,
      });
    }
  }
  await Promise.all(inflight);
  const elapsed = (Date.now() - started) / 1000;
  const rssEnd = await rssKiB(pid);
  rssSamples.push({ at_s: Math.round(elapsed), rss_mib: rssEnd / 1024 });

  const errors = Object.fromEntries(
    [...statuses].filter(([status]) => !/^(200|202)$/.test(status)).sort(([a], [b]) => (a < b ? -1 : 1)),
  );
  const latency = Object.fromEntries(
    (Object.keys(latencies) as Kind[]).map((kind) => {
      const sorted = [...latencies[kind]].sort((a, b) => a - b);
      return [
        kind,
        {
          requests: sorted.length,
          p50_ms: Number(percentile(sorted, 50).toFixed(1)),
          p99_ms: Number(percentile(sorted, 99).toFixed(1)),
        },
      ];
    }),
  );
  const all = Object.values(latencies)
    .flat()
    .sort((a, b) => a - b);
  const figures = {
    duration_s: Number(elapsed.toFixed(1)),
    rate_per_s: rate,
    requests_served: served,
    not_sent_server_behind: skipped,
    answers: Object.fromEntries([...statuses].filter(([s]) => /^(200|202)$/.test(s))),
    errors,
    error_count: Object.values(errors).reduce((n, v) => n + v, 0),
    p50_ms: Number(percentile(all, 50).toFixed(1)),
    p99_ms: Number(percentile(all, 99).toFixed(1)),
    latency,
    builds_completed: buildsCompleted,
    builds_failed: buildsFailed,
    distinct_requests_exhausted: exhausted,
    server_rss_mib: {
      start: Number((rssStart / 1024).toFixed(1)),
      end: Number((rssEnd / 1024).toFixed(1)),
      samples: rssSamples.map((s) => ({ ...s, rss_mib: Number(s.rss_mib.toFixed(1)) })),
    },
  };
  console.log(JSON.stringify(figures, null, 2));

  await signalAndWait(server.proc, "SIGTERM", 20_000);
  await flushPrefix(server.prefix);
  await mirror.close();
}

main().catch((err: unknown) => {
  console.error(err);
  killSpawned();
  process.exit(1);
});
