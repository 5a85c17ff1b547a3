/**
 * Where a build's time goes, on the synthetic mirror.
 *
 *   npx tsx bench/build-overhead.ts [warm builds, default 8] [--real-tools] [--realistic]
 *
 * With --real-tools it uses the real-tools mirror: OpenWrt's own ImageBuilder Makefile with
 * real opkg, usign and mksquashfs (compiled once into var/tools, mirror cached in
 * var/real-mirror), so `make` costs what it costs with a real ImageBuilder.
 *
 * With --realistic, the unpacked ImageBuilder is grown after the cold build, with hardlinks,
 * to the size and shape of a real one (fixtures/realistic-imagebuilder.ts: about 300 MB in
 * 8,000 files), so that what a workspace costs per build shows in the overhead.
 *
 * Prints, in one run:
 *   - cold vs warm ImageBuilder time: the first build of a target downloads, verifies and
 *     unpacks the ImageBuilder; later builds reuse the unpacked tree;
 *   - server overhead per build: end-to-end time seen by the client (POST until the 200 is
 *     seen, polling every 20 ms) minus the time `make` ran, as medians over the warm builds;
 *   - the worker's steps (src/worker/build-spans.ts: the diagnostics channel the worker
 *     publishes each build's steps on), as medians over the warm builds.
 * Needs Redis on 127.0.0.1:6379 (or TEST_REDIS_URL) and bubblewrap.
 */
import { subscribe } from "node:diagnostics_channel";
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ensureRealisticTree } from "../fixtures/realistic-imagebuilder.js";
import { ensureRealTools } from "../fixtures/real-tools/real-tools.js";
import { ProcessRunner } from "../src/imagebuilder/process-runner.js";
import { BUILD_SPANS_CHANNEL, type BuildSpansMessage } from "../src/worker/build-spans.js";
import {
  request,
  startRealToolsMirror,
  startStack,
  startTestServer,
  stopStack,
  type Stack,
} from "../test/integration/harness.js";

const realTools = process.argv.includes("--real-tools");
const realistic = process.argv.includes("--realistic");
const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const extras = realTools
  ? ["hello", "luci-app-bar", "foo-tool", "-ppp", "-ppp-mod-pppoe", "luci-base", "libfoo", "-dnsmasq"]
  : ["tcpdump", "htop", "curl", "vim", "luci", "wireguard-tools", "luci-proto-wireguard", "owut"];
// Each warm build asks for a different package set, so none is a cache hit.
const warmCount = Math.min(extras.length, Number(args[0] ?? 8));

const cleanups: (() => Promise<void>)[] = [];

async function start(): Promise<Stack> {
  if (!realTools) {
    // The fast mirror is generated once per vitest run, in the folder vitest's global setup
    // names (test/support/fast-mirror.ts); outside vitest the bench names its own.
    if (!process.env.ASU_FAST_MIRROR_DIR) {
      const dir = await mkdtemp(path.join(tmpdir(), "asu-fast-mirror-"));
      process.env.ASU_FAST_MIRROR_DIR = dir;
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
    }
    return startStack({ overrides: { workers: 1 } });
  }
  process.env.ASU_REAL_TOOLS_DIR = (await ensureRealTools()).hostDir;
  const mirror = await startRealToolsMirror();
  return { mirror, api: await startTestServer(mirror, { overrides: { workers: 1 } }) };
}

interface Timings {
  imagebuilder_ms: number;
  make_ms: number;
  total_ms: number;
}

/** Steps of each build as the worker measured them, by request hash. */
const spansByHash = new Map<string, Record<string, number>>();
subscribe(BUILD_SPANS_CHANNEL, (message) => {
  const { hash, spans } = message as BuildSpansMessage;
  spansByHash.set(hash, spans);
});

async function timedBuild(
  base: string,
  body: Record<string, unknown>,
): Promise<{ endToEnd: number; t: Timings; hash: string }> {
  const started = performance.now();
  let res = await request(base, "POST", "/api/v1/build", body);
  const hash = String(res.body.request_hash);
  while (res.status === 202) {
    await new Promise((r) => setTimeout(r, 20));
    res = await request(base, "GET", `/api/v1/build/${hash}`);
  }
  const endToEnd = performance.now() - started;
  if (res.status !== 200) throw new Error(`build failed: ${res.text.slice(0, 300)}`);
  return { endToEnd, t: res.body.timings as Timings, hash };
}

/** The unpacked ImageBuilders under a server's cache: folders holding a Makefile and repositories.conf. */
async function unpackedTrees(dir: string, depth = 0): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  if (names.includes("Makefile") && names.includes("repositories.conf")) return [dir];
  if (depth > 6) return [];
  const found: string[] = [];
  for (const name of names) {
    if (name === "workspaces" || name.startsWith(".")) continue;
    const sub = path.join(dir, name);
    if ((await stat(sub).catch(() => undefined))?.isDirectory())
      found.push(...(await unpackedTrees(sub, depth + 1)));
  }
  return found;
}

/** Hardlinks the realistic tree's folders into each unpacked ImageBuilder of the server. */
async function growToRealisticSize(cachePath: string): Promise<void> {
  const tree = await ensureRealisticTree(undefined, (line) => console.log(line));
  const runner = new ProcessRunner();
  for (const ib of await unpackedTrees(path.join(cachePath, "imagebuilders"))) {
    const folders = (await readdir(tree)).filter((n) => !n.includes("."));
    const argv = ["cp", "-al", "-n", "--", ...folders.map((n) => path.join(tree, n)), `${ib}/`];
    const r = await runner.run({
      argv,
      env: { PATH: "/usr/bin:/bin" },
      timeoutMs: 120_000,
      maxOutputBytes: 65536,
    });
    if (r.code !== 0) throw new Error(`growing ${ib} failed: ${r.stderr}`);
    console.log(`grew ${ib} to the realistic tree's size`);
  }
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
    if (realistic) await growToRealisticSize(server.config.cache_path);
    const warm: { endToEnd: number; t: Timings; hash: string }[] = [];
    for (let i = 0; i < warmCount; i++) {
      warm.push(await timedBuild(server.url, { ...base, packages: extras.slice(0, i + 1) }));
    }
    const ib = warm.map((w) => w.t.imagebuilder_ms);
    const make = warm.map((w) => w.t.make_ms);
    const e2e = warm.map((w) => w.endToEnd);
    const overhead = warm.map((w) => w.endToEnd - w.t.make_ms);
    const fmt = (ms: number) => `${ms.toFixed(0)} ms`;
    const flavour =
      (realTools ? "real-tools mirror (OpenWrt's IB flow, real opkg)" : "fast fake mirror") +
      (realistic ? ", ImageBuilder grown to a real one's size (300 MB, 8,000 files)" : "");
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
      `    in the worker, outside make:                 ${fmt(median(warm.map((w) => w.t.total_ms - w.t.make_ms)))}`,
    );
    console.log(
      `    queue, API and polling (end to end - worker): ${fmt(median(warm.map((w) => w.endToEnd - w.t.total_ms)))}`,
    );
    console.log(
      `  overhead share:                                ${((100 * median(overhead)) / median(e2e)).toFixed(0)} %`,
    );
    // The spans message comes after the result is stored: wait for the server's last step.
    await server.server.close();
    const stepNames = [...new Set(warm.flatMap((w) => Object.keys(spansByHash.get(w.hash) ?? {})))];
    console.log(`\nworker steps (median ms over the warm builds; each build: ${warm.length})`);
    for (const name of stepNames) {
      const values = warm.map((w) => spansByHash.get(w.hash)?.[name] ?? 0);
      console.log(
        `  ${name.padEnd(22)} ${median(values).toFixed(1).padStart(8)}   [${values.map((v) => v.toFixed(0)).join(", ")}]`,
      );
    }
  } finally {
    await stopStack(stack);
    // The server's work folder holds an unpacked ImageBuilder (grown to 300 MB with --realistic).
    await rm(server.workDir, { recursive: true, force: true });
    for (const cleanup of cleanups) await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
