import type { AsuConfig, BranchConfig } from "../../config/config.js";
import { ConfigError } from "../../shared/errors.js";
import type { ProcessRunner, RunResult } from "../process-runner.js";
import { NativeRunner } from "./native-runner.js";
import { UnsandboxedRunner } from "./unsandboxed-runner.js";
import type { Log } from "../../shared/log.js";

/**
 * The runner seam (issue #15, item 1): the one interface the worker's pipeline builds
 * through, and the one factory that picks an implementation at boot. See
 * docs/decisions/013 for how a new runner (podman) plugs in without touching the pipeline.
 */

export { NativeRunner } from "./native-runner.js";
export { UnsandboxedRunner } from "./unsandboxed-runner.js";
export { BUILD_PATH, withBuildUmask } from "./build-env.js";

/**
 * One build's view of an unpacked ImageBuilder, plus its output and files folders.
 *
 * Only `dir` and `binDir` are writable inside the sandbox, and each is a mount point there, so
 * a build can change what is inside them but never replace the folders themselves with links.
 * `filesDir` is mounted read-only and `privateDir` not at all: what the worker writes there
 * cannot have been prepared by the build (issue #9: links planted for the worker to follow).
 */
export interface Workspace {
  /**
   * The build's ImageBuilder tree: run `make` here. Inside a build it is the whole tree. Seen
   * from the worker it holds the tree's top-level files and everything the worker and the
   * builds changed; with `overlay` set, the rest of the tree is visible only inside a build.
   */
  dir: string;
  /** Pass as BIN_DIR; the finished images land here. */
  binDir: string;
  /** Pass as FILES; only the worker writes here (uci-defaults); read-only inside the build. */
  filesDir: string;
  /** Only the worker sees and writes this folder (signatures, staged files). */
  privateDir: string;
  /**
   * The package feeds the worker fetched for this build (indexes as published, signatures,
   * and the package files), read-only inside the build. Builds have no network: this is
   * where opkg and apk find everything (issue #9, item 2).
   */
  feedsDir: string;
  /** The folder that holds dir, binDir, filesDir and privateDir; created by the worker. */
  root: string;
  /** Folders inside `dir` that the build only reads: mounted read-only inside the sandbox. */
  readOnlyDirs: string[];
  /**
   * Set when `dir` is the upper layer of an overlay over the shared tree (docs/decisions/013):
   * each run mounts it over `dir`, in a mount namespace of the run's own.
   */
  overlay?: { lowerDir: string; workDir: string };
  /** Deletes the workspace. Safe to call twice. */
  dispose(): Promise<void>;
}

export interface CreateWorkspaceOptions {
  /**
   * Where workspaces are created; must be on the same filesystem as the ImageBuilder tree
   * (hardlinks). Default: a `workspaces` folder next to the tree.
   */
  workspacesDir?: string;
}

export interface RunnerRunOptions {
  /** argv, e.g. ["make", "image", "PROFILE=x", ...]; never a shell string. */
  args: string[];
  timeoutMs: number;
  maxOutputBytes: number;
  signal?: AbortSignal;
  /** Called with each complete line of output as it comes (live build logs). */
  onLine?: (stream: "stdout" | "stderr", line: string) => void;
}

export type SandboxCheck = { ok: true } | { ok: false; reason: string };

/**
 * How a build gets its ImageBuilder tree: `overlay` (kernel overlayfs over the shared tree,
 * constant cost) or `copy` (writable parts copied, read-only parts hardlinked).
 */
export type WorkspaceMode = "overlay" | "copy";

/** Where a build's ImageBuilder comes from (the server's ImageBuilderManager by default). */
export interface ImageBuilderSource {
  acquire(req: {
    version: string;
    target: string;
    branch: BranchConfig;
    onStage?: (stage: "download_imagebuilder" | "unpack_imagebuilder") => void;
    /** Re-read upstream's sha256sums now (src/worker/revision-check.ts). */
    refresh?: boolean;
  }): Promise<{ root: string; release(): Promise<void> }>;
}

/** How builds are run. */
export interface BuildRunner {
  /** "native" (bubblewrap), "unsandboxed" (allow_unsandboxed); a new runner adds its name. */
  readonly kind: string;
  /**
   * A runner that brings its own ImageBuilders (a podman runner: one image per release and
   * target, mounted with `podman image mount`) hands them out here; the server then uses
   * this instead of downloading ImageBuilders itself.
   */
  readonly imagebuilders?: ImageBuilderSource;
  createWorkspace(imagebuilderRoot: string, opts?: CreateWorkspaceOptions): Promise<Workspace>;
  run(ws: Workspace, opts: RunnerRunOptions): Promise<RunResult>;
}

/** The process logger (structured fields and a message), see src/shared/log.ts. */
export type RunnerLogger = Log;

export interface CreateRunnerOptions {
  /** See defaultHiddenPaths. */
  hiddenPaths: string[];
  logger: RunnerLogger;
  processRunner: ProcessRunner;
  /** Default "bwrap" from PATH. */
  bwrapPath?: string;
}

/**
 * The paths a build must never see: where the server keeps its config, signing key, cache
 * (other ImageBuilders and workspaces) and published images. Pass the config file and any
 * other secrets (e.g. the embedded Redis data folder) as `extra`.
 */
export function defaultHiddenPaths(
  config: Pick<AsuConfig, "cache_path" | "public_path" | "signing_key">,
  extra: string[] = [],
): string[] {
  const paths = [config.cache_path, config.public_path, ...extra];
  if (config.signing_key !== undefined) paths.push(config.signing_key);
  return paths;
}

/**
 * Picks the build runner at boot. The server refuses to start without a working sandbox
 * unless the operator explicitly allows unsandboxed builds. Logs which runner and which kind
 * of workspace builds get, so the operator sees it in the worker's start log.
 */
export async function createRunner(
  config: Pick<AsuConfig, "runner" | "allow_unsandboxed" | "cache_path">,
  opts: CreateRunnerOptions,
): Promise<BuildRunner> {
  if (config.runner === "podman") {
    throw new ConfigError(['runner: "podman" is not implemented yet; use runner = "native"']);
  }
  const native = new NativeRunner({
    processRunner: opts.processRunner,
    hiddenPaths: opts.hiddenPaths,
    ...(opts.bwrapPath !== undefined ? { bwrapPath: opts.bwrapPath } : {}),
  });
  const check = await native.checkSandbox();
  if (check.ok) {
    const { mode, reason } = await native.workspaces(config.cache_path);
    opts.logger.info(
      { workspaces: mode, ...(reason !== undefined ? { reason } : {}) },
      mode === "overlay"
        ? "build runner: bubblewrap sandbox; workspaces are overlays over the shared ImageBuilder (constant cost per build)"
        : `build runner: bubblewrap sandbox; workspaces are copies, so each build copies the writable parts of its ImageBuilder (overlays need root and a cache_path on a filesystem overlayfs accepts: ${reason ?? "not tried"})`,
    );
    return native;
  }
  if (!config.allow_unsandboxed) {
    throw new ConfigError([
      `runner: the native runner needs a working bubblewrap sandbox, but ${check.reason}. ` +
        "Install bubblewrap (and allow unprivileged user namespaces), or set allow_unsandboxed = true " +
        "to run builds without a sandbox (not recommended)",
    ]);
  }
  opts.logger.warn(
    { sandbox: false, reason: check.reason },
    `bubblewrap sandbox unavailable (${check.reason}); allow_unsandboxed is set, so builds run WITHOUT a sandbox ` +
      "and can read the server's files and write wherever this user can",
  );
  return new UnsandboxedRunner({ processRunner: opts.processRunner });
}
