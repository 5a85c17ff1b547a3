/**
 * Cost of the build history behind /api/v1/builds-per-day, builds-by-version, top-packages
 * and build-errors (src/stats/build-history.ts).
 *
 *   npx tsx bench/stats-history.ts [builds per day, default 50] [packages per build, default 100]
 *
 * Fills 30 days of history (and versions over 26 weeks) under a throw-away Redis prefix, as
 * workers would write it: 12 versions, 40 targets, packages drawn from 4000 names with a
 * skewed popularity, one build in ten failed. Prints the time to record one build, the
 * median and worst time of each read over 20 runs, and the Redis memory the keys take.
 * Needs Redis on 127.0.0.1:6379 (or TEST_REDIS_URL); removes its keys afterwards.
 */
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { BuildHistory, HISTORY_DAYS } from "../src/stats/build-history.js";
import { branchNameOf } from "../src/upstream/catalog.js";

const perDay = Number(process.argv[2] ?? 50);
const packagesPerBuild = Number(process.argv[3] ?? 100);
const redis = new Redis(process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379");
const prefix = `asu-bench-history-${randomBytes(4).toString("hex")}`;
// No read cache: every run below reads Redis.
const history = new BuildHistory(redis, prefix, 0);

const versions = ["SNAPSHOT", "24.10-SNAPSHOT", ...Array.from({ length: 10 }, (_, i) => `24.10.${i}`)];
const targets = Array.from({ length: 40 }, (_, i) => `target${i}/sub`);
const names = Array.from({ length: 4000 }, (_, i) => `package-${i}`);
// Skewed: low indexes are far more popular, as luci and friends are.
const pick = <T>(list: T[]) => list[Math.floor(list.length * Math.random() ** 3)] as T;

function median(list: number[]): number {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function time<T>(label: string, runs: number, fn: () => Promise<T>): Promise<void> {
  const took: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await fn();
    took.push(performance.now() - start);
  }
  console.log(
    `${label.padEnd(44)} median ${median(took).toFixed(2)} ms, worst ${Math.max(...took).toFixed(2)} ms`,
  );
}

async function main(): Promise<void> {
  const now = Date.now();
  const recordTimes: number[] = [];
  for (let d = 0; d < HISTORY_DAYS; d++) {
    for (let b = 0; b < perDay; b++) {
      const packages = new Set<string>();
      while (packages.size < packagesPerBuild) packages.add(pick(names));
      const multi = redis.multi();
      history.append(
        multi,
        {
          version: pick(versions),
          target: pick(targets),
          profile: "some_profile",
          ok: b % 10 !== 0,
          detail: "Error: Impossible package selection: missing (foo)",
          packages: [...packages],
        },
        new Date(now - d * 86400_000),
      );
      const start = performance.now();
      await multi.exec();
      recordTimes.push(performance.now() - start);
    }
  }
  console.log(
    `history: ${HISTORY_DAYS} days x ${perDay} builds x ${packagesPerBuild} packages (${recordTimes.length} builds)`,
  );
  console.log(
    `${"record one build (one MULTI, worker side)".padEnd(44)} median ${median(recordTimes).toFixed(2)} ms, worst ${Math.max(...recordTimes).toFixed(2)} ms`,
  );

  const runs = 20;
  await time("builds-per-day", runs, () => history.buildsPerDay());
  await time("builds-by-version (by branch)", runs, () =>
    history.buildsByVersion((v) => branchNameOf(v) ?? v),
  );
  await time("top-packages (all, 30 days)", runs, () => history.topPackages(undefined, 20));
  await time("top-packages ?version=24.10.0", runs, () =>
    history.topPackages({ by: "version", value: "24.10.0" }, 20),
  );
  await time("top-targets", runs, () => history.topTargets(20));
  await time("build-errors (100)", runs, () => history.recentErrors(100));
  await time("summary: last 24 hours", runs, () => history.last24Hours());

  let bytes = 0;
  let keys = 0;
  let cursor = "0";
  do {
    const [next, found] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    cursor = next;
    for (const key of found) {
      bytes += (await redis.memory("USAGE", key)) ?? 0;
      keys++;
    }
    if (found.length > 0) await redis.del(...found);
  } while (cursor !== "0");
  console.log(`redis: ${keys} keys, ${(bytes / 1024 / 1024).toFixed(1)} MiB (MEMORY USAGE), removed`);
  redis.disconnect();
}

await main();
