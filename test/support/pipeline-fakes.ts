import { mkdir, mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import type { RunResult } from "../../src/imagebuilder/process-runner.js";
import type { BuildRunner, RunnerRunOptions, Workspace } from "../../src/imagebuilder/runners/index.js";
import type { BuildJobData } from "../../src/queue/build-job.js";
import type { NormalizedRequest } from "../../src/request/normalize-request.js";

/**
 * Fakes for the middle test tier: pipeline and worker tests that need a build's folders and a
 * job, but not a sandbox, a mirror or Redis.
 */

/** A workspace laid out as the runners lay it out, in a fresh folder under `parent`. */
export async function fakeWorkspace(parent: string): Promise<Workspace> {
  const root = await mkdtemp(path.join(parent, "ws-"));
  const ws: Workspace = {
    root,
    dir: path.join(root, "ib"),
    binDir: path.join(root, "bin"),
    filesDir: path.join(root, "files"),
    privateDir: path.join(root, "private"),
    feedsDir: path.join(root, "feeds"),
    readOnlyDirs: [],
    dispose: () => rm(root, { recursive: true, force: true }),
  };
  for (const d of [ws.dir, ws.binDir, ws.filesDir, ws.privateDir, ws.feedsDir]) {
    await mkdir(d, { recursive: true });
  }
  return ws;
}

/** A command's result: exit 0, no output, unless `over` says otherwise. */
export function runResult(over: Partial<RunResult> = {}): RunResult {
  return {
    code: 0,
    signal: null,
    stdout: "",
    stderr: "",
    timedOut: false,
    aborted: false,
    truncated: false,
    durationMs: 1,
    ...over,
  };
}

/**
 * A runner that makes fake workspaces under `parent` and answers each command with `run`
 * (the same BuildRunner interface as the native runner).
 */
export function fakeRunner(
  parent: string,
  run: (ws: Workspace, opts: RunnerRunOptions) => Promise<Partial<RunResult>>,
): BuildRunner {
  return {
    kind: "fake",
    createWorkspace: () => fakeWorkspace(parent),
    run: async (ws, opts) => runResult(await run(ws, opts)),
  };
}

/** A queued job as the API would queue it: ath79/generic on 24.10.4, nothing optional set. */
export function fakeJob(
  over: Partial<NormalizedRequest> = {},
  profile = over.profile ?? "test_device",
): BuildJobData {
  return {
    request: {
      distro: "openwrt",
      version: "24.10.4",
      version_code: "",
      target: "ath79/generic",
      profile,
      packages: [],
      packages_versions: {},
      diff_packages: false,
      defaults: null,
      rootfs_size_mb: null,
      filesystem: null,
      repositories: {},
      repositories_mode: "append",
      repository_keys: [],
      client: null,
      ...over,
    },
    profile,
    enqueued_at: Date.now(),
    result_ttl: 60,
  };
}
