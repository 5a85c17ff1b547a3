import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { ImageBuilderPrepareError } from "./imagebuilder-errors.js";
import type { BuildRunner, Workspace } from "./runners/index.js";

/**
 * What OpenWrt's ImageBuilder does on its first run, done once when the tree is installed
 * (issue #8) instead of in every build's workspace, and never by two builds at once:
 * - the host prerequisite check (`staging_dir/host/.prereq-build`: 38 checks of tools and Perl
 *   modules, which also re-points the host-tool links in `staging_dir/host/bin`);
 * - the local signing keys (`_check_keys`: key-build and its ucert, or apk's EC keys);
 * - the signed index of the ImageBuilder's own `packages/` (`package_index`).
 * Workspaces copy the result: make sees `.prereq-build` newer than its rule's input, and the
 * keys present. Each step runs only when the Makefile has its rule, sandboxed like a build.
 */
export const PREPARE_STEPS: { rule: RegExp; args: string[]; what: string }[] = [
  {
    rule: /^staging_dir\/host\/\.prereq-build:/m,
    args: ["make", "-s", "staging_dir/host/.prereq-build"],
    what: "host prerequisite check",
  },
  { rule: /^_check_keys:/m, args: ["make", "-s", "_check_keys"], what: "local signing keys" },
  { rule: /^package_index:/m, args: ["make", "-s", "package_index"], what: "index of packages/" },
];

export async function prepareImageBuilder(
  runner: Pick<BuildRunner, "run">,
  tree: string,
  opts: { timeoutMs: number; maxOutputBytes?: number },
): Promise<{ steps: string[] }> {
  const makefile = await readFile(path.join(tree, "Makefile"), "utf8");
  const steps = PREPARE_STEPS.filter((s) => s.rule.test(makefile));
  if (steps.length === 0) return { steps: [] };
  // The tree itself is writable here (nobody builds in it yet); nothing else is.
  const scratch = await mkdtemp(path.join(path.dirname(tree), ".prepare-"));
  try {
    const ws: Workspace = {
      dir: tree,
      binDir: path.join(scratch, "bin"),
      filesDir: path.join(scratch, "files"),
      privateDir: path.join(scratch, "private"),
      feedsDir: path.join(scratch, "feeds"),
      root: scratch,
      readOnlyDirs: [],
      dispose: async () => undefined,
    };
    for (const dir of [ws.binDir, ws.filesDir, ws.privateDir, ws.feedsDir]) await mkdir(dir);
    const deadline = Date.now() + opts.timeoutMs;
    for (const step of steps) {
      const result = await runner.run(ws, {
        args: step.args,
        timeoutMs: Math.max(1, deadline - Date.now()),
        maxOutputBytes: opts.maxOutputBytes ?? 1024 * 1024,
      });
      if (result.code !== 0 || result.timedOut) {
        const said = `${result.stdout}\n${result.stderr}`.trim().split("\n").slice(-20).join("\n");
        throw new ImageBuilderPrepareError(
          `the ImageBuilder's ${step.what} failed on this server (\`${step.args.join(" ")}\` ${
            result.timedOut ? "timed out" : `exited ${result.code}`
          }). Install what it names; see the README's host requirements. It said:\n${said}`,
        );
      }
    }
    return { steps: steps.map((s) => s.what) };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
