import type { OutputLineListener, RunResult } from "../process-runner.js";

/** PATH inside a build, sandboxed or not. */
export const BUILD_PATH = "/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Runs argv with umask 022, whatever the server's own umask: OpenWrt's prerequisite check
 * refuses any other ("Please build with umask 022 - other values produce broken packages"),
 * and files in images must not come out group- or world-writable.
 */
export function withBuildUmask(args: string[]): string[] {
  return ["/bin/sh", "-c", 'umask 022 && exec "$0" "$@"', ...args];
}

/**
 * One build's private copy of an unpacked ImageBuilder, plus its output and files folders.
 *
 * Only `dir` and `binDir` are writable inside the sandbox, and each is a mount point there, so
 * a build can change what is inside them but never replace the folders themselves with links.
 * `filesDir` is mounted read-only and `privateDir` not at all: what the worker writes there
 * cannot have been prepared by the build (issue #9: links planted for the worker to follow).
 */
export interface Workspace {
  /** The build's ImageBuilder tree: run `make` here. */
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
  /** Folders inside `dir` that are hardlinked to the shared tree and therefore read-only. */
  readOnlyDirs: string[];
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
  /** Each output line as it happens (live progress, issue #14). */
  onLine?: OutputLineListener;
}

export type SandboxCheck = { ok: true } | { ok: false; reason: string };

/** How builds are run: "native" (bubblewrap) or "unsandboxed" (allow_unsandboxed). */
export interface BuildRunner {
  readonly kind: "native" | "unsandboxed";
  createWorkspace(imagebuilderRoot: string, opts: CreateWorkspaceOptions): Promise<Workspace>;
  run(ws: Workspace, opts: RunnerRunOptions): Promise<RunResult>;
}

export interface RunnerLogger {
  warn(msg: string): void;
}
