/**
 * What the snapshot pin (docs/decisions/014) adds to a POST /api/v1/build cache hit.
 *
 *   npx tsx bench/snapshot-pin.ts [iterations, default 200000]
 *
 * Prints microseconds per call for:
 *   - requestHash of a release request (the hit path before the pin, for scale),
 *   - snapshotPin + requestHash of a snapshot request whose profiles.json is in memory
 *     (every hit within imagebuilder_check_interval),
 *   - snapshotPin when the copy is due: one conditional GET (304) on loopback, once per
 *     interval and target.
 * No Redis and no network beyond loopback.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { loadConfig } from "../src/config/config.js";
import { normalizeRequest } from "../src/request/normalize-request.js";
import { requestHash } from "../src/request/request-hash.js";
import { snapshotPin } from "../src/request/snapshot-pin.js";
import { Catalog } from "../src/upstream/catalog.js";
import { UpstreamClient } from "../src/upstream/upstream-client.js";
import { sampleUpstreamTree, startFixtureUpstream } from "../test/support/fixture-upstream.js";

const iterations = Number(process.argv[2] ?? 200_000);

async function main(): Promise<void> {
  const upstream = await startFixtureUpstream(sampleUpstreamTree());
  let clock = 1_000_000;
  const config = loadConfig({
    cwd: mkdtempSync(path.join(tmpdir(), "asu-bench-pin-")),
    env: {},
    overrides: { upstream_url: upstream.url },
  });
  const client = new UpstreamClient({ baseUrl: upstream.url, now: () => clock });
  const deps = { config, upstream: client, catalog: new Catalog(config, client) };
  const packages = ["luci", "tcpdump", "curl"];
  const release = normalizeRequest({ version: "24.10.4", target: "x86/64", profile: "generic", packages });
  const snapshot = normalizeRequest({ version: "SNAPSHOT", target: "x86/64", profile: "generic", packages });
  if ((await snapshotPin(snapshot, deps)) === undefined) throw new Error("no pin: the fixture changed");

  const perCall = async (n: number, fn: () => unknown): Promise<number> => {
    const started = performance.now();
    for (let i = 0; i < n; i++) await fn();
    return ((performance.now() - started) * 1000) / n;
  };
  const rows: [string, number][] = [
    ["requestHash (release, no pin)", await perCall(iterations, () => requestHash(release))],
    [
      "snapshotPin + requestHash (in memory)",
      await perCall(iterations, async () => requestHash(snapshot, await snapshotPin(snapshot, deps))),
    ],
    [
      "snapshotPin, revalidation due (304)",
      await perCall(200, async () => {
        clock += config.imagebuilder_check_interval * 1000;
        return snapshotPin(snapshot, deps);
      }),
    ],
  ];
  console.log(`\n${iterations} iterations (200 for the revalidation), one process`);
  for (const [name, us] of rows) console.log(name.padEnd(40), `${us.toFixed(2).padStart(9)} µs/call`);
  await upstream.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
