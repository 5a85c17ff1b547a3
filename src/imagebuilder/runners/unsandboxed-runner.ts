import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { ProcessRunner, RunResult } from "../process-runner.js";
import {
  BUILD_PATH,
  withBuildUmask,
  type BuildRunner,
  type CreateWorkspaceOptions,
  type RunnerRunOptions,
  type Workspace,
} from "./build-runner.js";
import { createWorkspaceTree } from "./workspace.js";

export interface UnsandboxedRunnerOptions {
  processRunner: ProcessRunner;
}

/**
 * For hosts without bubblewrap, and only when the operator sets allow_unsandboxed: runs
 * make directly in the workspace with a clean environment, its own process group, the
 * timeout and the output cap. Nothing stops a build from reading the server's files or
 * writing wherever this user can, which is why the server warns at boot.
 */
export class UnsandboxedRunner implements BuildRunner {
  readonly kind = "unsandboxed";
  private readonly processRunner: ProcessRunner;

  constructor(options: UnsandboxedRunnerOptions) {
    this.processRunner = options.processRunner;
  }

  createWorkspace(imagebuilderRoot: string, opts: CreateWorkspaceOptions): Promise<Workspace> {
    return createWorkspaceTree(imagebuilderRoot, {
      ...opts,
      processRunner: this.processRunner,
      // Without a sandbox nothing can mount the hardlinked folders read-only, so a workspace
      // is a full copy: a stray write must still not reach the shared tree.
      linkedReadOnly: [],
    });
  }

  async run(ws: Workspace, opts: RunnerRunOptions): Promise<RunResult> {
    if (opts.args.length === 0) throw new Error("run: args is empty");
    const home = path.join(ws.root, "home");
    const tmp = path.join(ws.root, "tmp");
    await mkdir(home, { recursive: true });
    await mkdir(tmp, { recursive: true });
    const runOpts = {
      argv: withBuildUmask(opts.args),
      cwd: ws.dir,
      env: { PATH: BUILD_PATH, HOME: home, TMPDIR: tmp, LANG: "C.UTF-8" },
      timeoutMs: opts.timeoutMs,
      maxOutputBytes: opts.maxOutputBytes,
      ...(opts.onLine ? { onLine: opts.onLine } : {}),
    };
    return this.processRunner.run(opts.signal ? { ...runOpts, signal: opts.signal } : runOpts);
  }
}
