import { realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { AsuConfig } from "../../config/config.js";
import { ConfigError } from "../../shared/errors.js";
import type { ProcessRunner, RunResult } from "../process-runner.js";
import {
  BUILD_PATH,
  type BuildRunner,
  type CreateWorkspaceOptions,
  type RunnerLogger,
  type RunnerRunOptions,
  type SandboxCheck,
  type Workspace,
} from "./build-runner.js";
import { UnsandboxedRunner } from "./unsandboxed-runner.js";
import { createWorkspaceTree, DEFAULT_LINKED_READ_ONLY } from "./workspace.js";

/**
 * System folders a build has no business reading: other users' files, ssh host keys, and
 * the state of services on this host (Redis data in /var, sockets in /run). Each is covered
 * by an empty read-only tmpfs. /tmp gets a private, writable tmpfs.
 */
export const SANDBOX_HIDDEN_SYSTEM_DIRS = [
  "/root",
  "/home",
  "/etc/ssh",
  "/var",
  "/srv",
  "/run",
  "/mnt",
  "/media",
];

/** Files the build needs even when they live in a hidden folder (resolv.conf -> /run/...). */
const REEXPOSED_FILES = ["/etc/resolv.conf", "/etc/hosts"];

export interface NativeRunnerOptions {
  processRunner: ProcessRunner;
  /**
   * Paths the build must not see: the server's config file, signing key, cache_path and
   * public_path. Folders become empty read-only tmpfs, files become unreadable.
   */
  hiddenPaths: string[];
  /** Default "bwrap" from PATH. */
  bwrapPath?: string;
  /** Folders inside the ImageBuilder that are hardlinked and mounted read-only. */
  linkedReadOnly?: string[];
}

/**
 * Runs ImageBuilder commands under bubblewrap: the whole system read-only, sensitive places
 * hidden, its own workspace writable, private /tmp, /proc, pid/ipc/uts namespaces, no
 * capabilities and a clean environment. The network stays shared because the ImageBuilder
 * fetches package feeds from upstream_url.
 */
export class NativeRunner implements BuildRunner {
  readonly kind = "native";
  private readonly processRunner: ProcessRunner;
  private readonly hiddenPaths: string[];
  private readonly bwrap: string;
  private readonly linkedReadOnly: string[];

  constructor(options: NativeRunnerOptions) {
    this.processRunner = options.processRunner;
    this.hiddenPaths = options.hiddenPaths.map((p) => path.resolve(p));
    this.bwrap = options.bwrapPath ?? "bwrap";
    this.linkedReadOnly = options.linkedReadOnly ?? DEFAULT_LINKED_READ_ONLY;
  }

  createWorkspace(imagebuilderRoot: string, opts: CreateWorkspaceOptions): Promise<Workspace> {
    return createWorkspaceTree(imagebuilderRoot, {
      ...opts,
      processRunner: this.processRunner,
      linkedReadOnly: this.linkedReadOnly,
      dl: "mountpoint",
    });
  }

  async run(ws: Workspace, opts: RunnerRunOptions): Promise<RunResult> {
    if (opts.args.length === 0) throw new Error("run: args is empty");
    const argv = [this.bwrap, ...(await this.sandboxArgs(ws)), "--", ...opts.args];
    const runOpts = {
      argv,
      env: { PATH: BUILD_PATH },
      timeoutMs: opts.timeoutMs,
      maxOutputBytes: opts.maxOutputBytes,
    };
    // Killing bwrap's process group does not reach the build: --new-session puts it in a
    // session of its own. It dies anyway: --die-with-parent kills the sandbox's pid 1 when
    // bwrap goes, and the kernel then kills everything in the pid namespace.
    return this.processRunner.run(opts.signal ? { ...runOpts, signal: opts.signal } : runOpts);
  }

  /** Verifies that bubblewrap is installed and can build this sandbox on this host. */
  async checkSandbox(): Promise<SandboxCheck> {
    const argv = [this.bwrap, ...namespaceArgs(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"];
    argv.push(
      "--perms",
      "1777",
      "--tmpfs",
      "/tmp",
      "--clearenv",
      "--setenv",
      "PATH",
      BUILD_PATH,
      "--",
      "true",
    );
    let result: RunResult;
    try {
      result = await this.processRunner.run({
        argv,
        env: { PATH: BUILD_PATH },
        timeoutMs: 10_000,
        maxOutputBytes: 16 * 1024,
      });
    } catch (err) {
      return { ok: false, reason: `${this.bwrap} could not be started (${(err as Error).message})` };
    }
    if (result.code === 0) return { ok: true };
    const why = result.timedOut ? "timed out" : `exited ${result.code ?? result.signal}`;
    const stderr = result.stderr.trim();
    return { ok: false, reason: `\`${this.bwrap} --ro-bind / / true\` ${why}${stderr ? `: ${stderr}` : ""}` };
  }

  /** The bwrap options for one run; public so that operators and tests can inspect them. */
  async sandboxArgs(ws: Workspace): Promise<string[]> {
    const args = [...namespaceArgs(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"];
    for (const dir of SANDBOX_HIDDEN_SYSTEM_DIRS) {
      if ((await kindOf(dir)) === "dir") args.push("--perms", "0555", "--tmpfs", dir);
    }
    args.push("--perms", "1777", "--tmpfs", "/tmp");
    for (const hidden of this.hiddenPaths) {
      const real = await realpathOrUndefined(hidden);
      if (real === undefined || real === "/") continue;
      const kind = await kindOf(real);
      if (kind === "dir") args.push("--perms", "0555", "--tmpfs", real);
      // A bind of /dev/null is nodev: opening the file fails with EACCES.
      else if (kind === "file") args.push("--ro-bind", "/dev/null", real);
    }
    for (const file of REEXPOSED_FILES) {
      const real = await realpathOrUndefined(file);
      if (real !== undefined && real !== file && (await kindOf(real)) === "file")
        args.push("--ro-bind", real, real);
    }
    // Hide sibling workspaces (other builds), unless the parent is a place that must stay.
    const parent = path.dirname(ws.root);
    if (parent !== "/" && parent !== "/tmp") args.push("--perms", "0555", "--tmpfs", parent);
    args.push("--bind", ws.root, ws.root);
    for (const dir of ws.readOnlyDirs) args.push("--ro-bind", dir, dir);
    args.push("--bind", ws.dlDir, path.join(ws.dir, "dl"));
    args.push("--clearenv", "--setenv", "PATH", BUILD_PATH, "--setenv", "HOME", "/tmp");
    args.push("--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--chdir", ws.dir);
    return args;
  }
}

function namespaceArgs(): string[] {
  return [
    "--die-with-parent",
    "--new-session",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--hostname",
    "asu-build",
    // Without this, bwrap started by root keeps every capability inside the sandbox.
    "--cap-drop",
    "ALL",
  ];
}

async function kindOf(p: string): Promise<"dir" | "file" | "other" | undefined> {
  try {
    const st = await stat(p);
    return st.isDirectory() ? "dir" : st.isFile() ? "file" : "other";
  } catch {
    return undefined;
  }
}

async function realpathOrUndefined(p: string): Promise<string | undefined> {
  try {
    return await realpath(p);
  } catch {
    return undefined;
  }
}

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
 * unless the operator explicitly allows unsandboxed builds.
 */
export async function createRunner(
  config: Pick<AsuConfig, "runner" | "allow_unsandboxed">,
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
  if (check.ok) return native;
  if (!config.allow_unsandboxed) {
    throw new ConfigError([
      `runner: the native runner needs a working bubblewrap sandbox, but ${check.reason}. ` +
        "Install bubblewrap (and allow unprivileged user namespaces), or set allow_unsandboxed = true " +
        "to run builds without a sandbox (not recommended)",
    ]);
  }
  opts.logger.warn(
    `bubblewrap sandbox unavailable (${check.reason}); allow_unsandboxed is set, so builds run WITHOUT a sandbox ` +
      "and can read the server's files and write wherever this user can",
  );
  return new UnsandboxedRunner({ processRunner: opts.processRunner });
}
