/**
 * vitest globalSetup: builds (or finds in the cache) OpenWrt's real host package tools once per
 * `vitest run`, before any test file starts, so no test file ever compiles them itself.
 *
 * Tests read the folder with `inject("realToolsDir")` (typed below). The same path is also put
 * in the environment as ASU_REAL_TOOLS_DIR, for processes that tests start (they inherit it).
 * It also names the run's folder for the shared fast mirror (ASU_FAST_MIRROR_DIR).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestProject } from "vitest/node";
import { ensureRealTools } from "../../fixtures/real-tools/real-tools.js";
import { sharedMirrorChanged } from "./fast-mirror.js";

declare module "vitest" {
  export interface ProvidedContext {
    /** staging_dir/host-like folder: bin/{opkg,usign,ucert,fwtool,mkhash,padjffs2,apk} */
    realToolsDir: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const tools = await ensureRealTools({ log: (line) => console.log(line) });
  process.env.ASU_REAL_TOOLS_DIR = tools.hostDir;
  project.provide("realToolsDir", tools.hostDir);
  // The fast mirror is generated here on first use, once for the run (test/support/fast-mirror.ts).
  const fastMirrorDir = await mkdtemp(path.join(tmpdir(), "asu-fast-mirror-"));
  process.env.ASU_FAST_MIRROR_DIR = fastMirrorDir;
  return async () => {
    const changed = await sharedMirrorChanged(fastMirrorDir);
    await rm(fastMirrorDir, { recursive: true, force: true });
    if (changed !== undefined) {
      // vitest only logs errors thrown here; the exit code makes the run fail.
      process.exitCode = 1;
      throw new Error(changed);
    }
  };
}
