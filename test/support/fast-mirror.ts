import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import lockfile from "proper-lockfile";
import { generateMirror, type MirrorInfo } from "../../fixtures/mirror/generate-mirror.js";

/**
 * The fast synthetic mirror, generated once per `vitest run` (issue #15, item 8) instead of once
 * per test file. vitest's global setup names a run-scoped folder (ASU_FAST_MIRROR_DIR, removed
 * at the end of the run); the first test file that asks generates the tree there, under a lock,
 * and every other file waits for it and serves the same tree. A run with no integration test
 * never pays for it.
 *
 * The shared tree is read-only by convention: a test that changes the mirror (publishes a
 * snapshot, tampers with a feed) takes a private copy with `copyFastMirror`.
 */
export async function ensureFastMirror(base = runDir()): Promise<MirrorInfo> {
  const infoFile = path.join(base, "info.json");
  if (existsSync(infoFile)) return load(base);
  await mkdir(base, { recursive: true });
  const lockTarget = path.join(base, "lock-target");
  await writeFile(lockTarget, "", { flag: "a" });
  const release = await lockfile.lock(lockTarget, {
    stale: 30_000,
    update: 5_000,
    retries: { retries: 600, factor: 1, minTimeout: 200, maxTimeout: 1_000 },
  });
  try {
    if (existsSync(infoFile)) return await load(base);
    const tmp = path.join(base, `.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
    try {
      const info = await generateMirror({ dir: path.join(tmp, "mirror") });
      await rename(path.join(tmp, "mirror"), path.join(base, "mirror"));
      await writeFile(path.join(base, "fingerprint"), await fingerprint(path.join(base, "mirror")));
      await writeFile(infoFile, JSON.stringify({ ...info, dir: "" }), { mode: 0o600 });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return await load(base);
  } finally {
    await release();
  }
}

/** A private, writable copy of the shared fast mirror (its info points at the copy). */
export async function copyFastMirror(): Promise<{ info: MirrorInfo; root: string }> {
  const shared = await ensureFastMirror();
  const root = await mkdtemp(path.join(tmpdir(), "asu-mirror-"));
  const dir = path.join(root, "mirror");
  await cp(shared.dir, dir, { recursive: true, preserveTimestamps: true });
  return { info: { ...structuredClone(shared), dir }, root };
}

/**
 * What a test that wrongly changes the shared tree most likely touches: .versions.json and
 * the list of releases. Checked at the end of the run (global-setup.ts).
 */
async function fingerprint(mirror: string): Promise<string> {
  const versions = await readFile(path.join(mirror, ".versions.json"), "utf8");
  const releases = (await readdir(path.join(mirror, "releases"))).sort().join(",");
  return `${versions}\n${releases}`;
}

/** A message naming the problem when a test changed the shared mirror in place; else undefined. */
export async function sharedMirrorChanged(base: string): Promise<string | undefined> {
  if (!existsSync(path.join(base, "fingerprint"))) return undefined;
  const before = await readFile(path.join(base, "fingerprint"), "utf8");
  if (before === (await fingerprint(path.join(base, "mirror")))) return undefined;
  return "a test changed the shared fast mirror (.versions.json or releases/); give it its own copy with startMirror({ writable: true }) or copyFastMirror()";
}

function runDir(): string {
  const dir = process.env.ASU_FAST_MIRROR_DIR;
  if (!dir) throw new Error("ASU_FAST_MIRROR_DIR is unset: run the tests through vitest's global setup");
  return dir;
}

async function load(base: string): Promise<MirrorInfo> {
  const info = JSON.parse(await readFile(path.join(base, "info.json"), "utf8")) as MirrorInfo;
  return { ...info, dir: path.join(base, "mirror") };
}
