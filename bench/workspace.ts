/**
 * What a build's workspace costs on a tree the size of a real ImageBuilder (issue #13, item 2).
 *
 *   npx tsx bench/workspace.ts [runs, default 7]
 *
 * On the realistic tree of fixtures/realistic-imagebuilder.ts (about 300 MB in 8,000 files,
 * generated once under var/), for each kind of workspace the native runner can make:
 *   - copy: the writable parts copied, read-only folders hardlinked (before; the fallback);
 *   - overlay: kernel overlayfs over the shared tree (after; needs root);
 * prints the median of `runs` workspace creations, removals, and sandboxed runs of `true`
 * (an overlay workspace pays its mount on every run, so that is measured too).
 * The page cache is warm after the first run; a cold copy costs more, not less.
 */
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { ensureRealisticTree } from "../fixtures/realistic-imagebuilder.js";
import { ProcessRunner } from "../src/imagebuilder/process-runner.js";
import { NativeRunner, type WorkspaceMode } from "../src/imagebuilder/runners/index.js";

const runs = Number(process.argv[2] ?? 7);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
};

async function measure(
  mode: WorkspaceMode,
  tree: string,
  workspacesDir: string,
): Promise<{ create: number; remove: number; run: number }> {
  const processRunner = new ProcessRunner();
  const runner = new NativeRunner({ processRunner, hiddenPaths: [workspacesDir], workspaceMode: mode });
  const create: number[] = [];
  const remove: number[] = [];
  const run: number[] = [];
  for (let i = 0; i < runs; i++) {
    let t = performance.now();
    const ws = await runner.createWorkspace(tree, { workspacesDir });
    create.push(performance.now() - t);
    t = performance.now();
    const result = await runner.run(ws, { args: ["true"], timeoutMs: 60_000, maxOutputBytes: 4096 });
    run.push(performance.now() - t);
    if (result.code !== 0) throw new Error(`sandboxed true failed: ${result.stderr}`);
    t = performance.now();
    await ws.dispose();
    remove.push(performance.now() - t);
  }
  return { create: median(create), remove: median(remove), run: median(run) };
}

async function main(): Promise<void> {
  const tree = await ensureRealisticTree(undefined, (line) => console.log(line));
  // Next to the tree: the same filesystem, as workspaces are next to the cached ImageBuilders.
  const workspacesDir = await mkdtemp(path.join(path.dirname(tree), "workspaces-"));
  try {
    const probe = new NativeRunner({ processRunner: new ProcessRunner(), hiddenPaths: [] });
    const available = await probe.workspaceMode(workspacesDir);
    const modes: WorkspaceMode[] = available === "overlay" ? ["copy", "overlay"] : ["copy"];
    console.log(`\nworkspace of a realistic ImageBuilder (${tree}), median of ${runs} runs`);
    console.log("mode      create      remove      sandboxed `true`   create+remove");
    for (const mode of modes) {
      const m = await measure(mode, tree, workspacesDir);
      const f = (ms: number) => `${ms.toFixed(1)} ms`.padEnd(12);
      console.log(
        `${mode.padEnd(10)}${f(m.create)}${f(m.remove)}${f(m.run)}       ${f(m.create + m.remove)}`,
      );
    }
    if (available !== "overlay") console.log("overlay: unavailable here (needs root and overlayfs)");
  } finally {
    await rm(workspacesDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
