/**
 * Where a build's time goes, on the synthetic mirror.
 *
 *   npx tsx bench/build-overhead.ts [warm builds, default 8] [--real-tools]
 *
 * With --real-tools it uses the real-tools mirror: OpenWrt's own ImageBuilder Makefile with
 * real opkg, usign and mksquashfs (compiled once into var/tools, mirror cached in
 * var/real-mirror), so `make` costs what it costs with a real ImageBuilder.
 *
 * Prints, in one run:
 *   - cold vs warm ImageBuilder time: the first build of a target downloads, verifies and
 *     unpacks the ImageBuilder; later builds reuse the unpacked tree;
 *   - server overhead per build: end-to-end time seen by the client (POST until the 200 is
 *     seen, polling every 20 ms) minus the time `make` ran, as medians over the warm builds.
 * Needs Redis on 127.0.0.1:6379 (or TEST_REDIS_URL) and bubblewrap.
 */
import { ensureRealTools } from "../fixtures/real-tools/real-tools.js";
import {
  request,
  startRealToolsMirror,
  startStack,
  startTestServer,
  stopStack,
  type Stack,
} from "../test/integration/harness.js";

const realTools = process.argv.includes("--real-tools");
const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const extras = realTools
  ? ["hello", "luci-app-bar", "foo-tool", "-ppp", "-ppp-mod-pppoe", "luci-base", "libfoo", "-dnsmasq"]
  : ["tcpdump", "htop", "curl", "vim", "luci", "wireguard-tools", "luci-proto-wireguard", "owut"];
// Each warm build asks for a different package set, so none is a cache hit.
const warmCount = Math.min(extras.length, Number(args[0] ?? 8));

async function start(): Promise<Stack> {
  if (!realTools) return startStack({ overrides: { workers: 1 } });
  process.env.ASU_REAL_TOOLS_DIR = (await ensureRealTools()).hostDir;
  const mirror = await startRealToolsMirror();
  return { mirror, api: await startTestServer(mirror, { overrides: { workers: 1 } }) };
}

interface Timings {
  imagebuilder_ms: number;
  make_ms: number;
  total_ms: number;
}

async function timedBuild(
  base: string,
  body: Record<string, unknown>,
): Promise<{ endToEnd: number; t: Timings }> {
  const started = performance.now();
  let res = await request(base, "POST", "/api/v1/build", body);
  const hash = String(res.body.request_hash);
  while (res.status === 202) {
    await new Promise((r) => setTimeout(r, 20));
    res = await request(base, "GET", `/api/v1/build/${hash}`);
  }
  const endToEnd = performance.now() - started;
  if (res.status !== 200) throw new Error(`build failed: ${res.text.slice(0, 300)}`);
  return { endToEnd, t: res.body.timings as Timings };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

async function main(): Promise<void> {
  const stack = await start();
  const server = stack.api;
  const base = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };
  try {
    const cold = await timedBuild(server.url, {
      ...base,
      packages: realTools ? ["ca-bundle"] : ["tcpdump", "ca-bundle"],
    });
    const warm: { endToEnd: number; t: Timings }[] = [];
    for (let i = 0; i < warmCount; i++) {
      warm.push(await timedBuild(server.url, { ...base, packages: extras.slice(0, i + 1) }));
    }
    const ib = warm.map((w) => w.t.imagebuilder_ms);
    const make = warm.map((w) => w.t.make_ms);
    const e2e = warm.map((w) => w.endToEnd);
    const overhead = warm.map((w) => w.endToEnd - w.t.make_ms);
    const fmt = (ms: number) => `${ms.toFixed(0)} ms`;
    const flavour = realTools ? "real-tools mirror (OpenWrt's IB flow, real opkg)" : "fast fake mirror";
    console.log(`\n${flavour} on loopback, bubblewrap runner, ${warmCount} warm builds (medians)`);
    console.log(`ImageBuilder, cold (download + verify + unpack): ${fmt(cold.t.imagebuilder_ms)}`);
    console.log(`ImageBuilder, warm (reuse):                      ${fmt(median(ib))}`);
    console.log(
      `  cold/warm ratio:                               ${(cold.t.imagebuilder_ms / Math.max(1, median(ib))).toFixed(0)}x`,
    );
    console.log(`cold build end to end:                           ${fmt(cold.endToEnd)}`);
    console.log(`warm build end to end:                           ${fmt(median(e2e))}`);
    console.log(`  of which make (info + manifest + image):       ${fmt(median(make))}`);
    console.log(`  server overhead (end to end - make):           ${fmt(median(overhead))}`);
    console.log(
      `  overhead share:                                ${((100 * median(overhead)) / median(e2e)).toFixed(0)} %`,
    );
  } finally {
    await stopStack(stack);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
