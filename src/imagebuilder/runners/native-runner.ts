import type { Stats } from "node:fs";
import { lstat, readlink, realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { ProcessRunner, RunResult } from "../process-runner.js";
import { BUILD_PATH, withBuildUmask } from "./build-env.js";
import type {
  BuildRunner,
  CreateWorkspaceOptions,
  RunnerRunOptions,
  SandboxCheck,
  Workspace,
  WorkspaceMode,
} from "./index.js";
import { checkOverlay, createOverlayWorkspace, withOverlay } from "./overlay-workspace.js";
import { createWorkspaceTree, DEFAULT_LINKED_READ_ONLY, workspacesParent } from "./workspace.js";

/**
 * What a build sees of the host (issue #9): the system's programs and libraries, read-only,
 * and a minimal /etc. Nothing else is mounted: not /home, /root, /var, /srv, /opt, /work, the
 * server's checkout, config, cache, store or keys, and no sockets of services on this host.
 * Top-level links such as /bin -> usr/bin are recreated as links.
 */
export const SANDBOX_SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/**
 * The part of /etc that make, perl, python and the package tools read: user and group names
 * (tar, install), the dynamic linker's cache, Debian's alternatives (awk, which) and a few
 * lookup tables. No passwords, keys, certificates or service configs.
 */
export const SANDBOX_ETC_FILES = [
  "/etc/passwd",
  "/etc/group",
  "/etc/nsswitch.conf",
  "/etc/ld.so.cache",
  "/etc/ld.so.conf",
  "/etc/ld.so.conf.d",
  "/etc/alternatives",
  "/etc/localtime",
  "/etc/hosts",
  "/etc/protocols",
  "/etc/services",
  "/etc/mime.types",
  "/etc/perl",
  "/etc/python3",
];

export interface NativeRunnerOptions {
  processRunner: ProcessRunner;
  /**
   * Paths the build must not see: the server's config file, signing key, cache_path and
   * public_path. Folders become empty read-only tmpfs, files become unreadable.
   */
  hiddenPaths: string[];
  /** Default "bwrap" from PATH. */
  bwrapPath?: string;
  /** Folders inside the ImageBuilder that the build only reads: mounted read-only. */
  linkedReadOnly?: string[];
  /**
   * Overlay or copied workspaces (docs/decisions/013). Default: overlay where a test mount
   * works (root, a filesystem overlayfs accepts), detected once, else copy.
   */
  workspaceMode?: WorkspaceMode;
  /** Default "unshare" from PATH; it mounts each run's overlay in a namespace of its own. */
  unsharePath?: string;
}

/**
 * Runs ImageBuilder commands under bubblewrap: only the system's programs, libraries and a
 * minimal /etc, read-only; its own workspace writable; private /tmp, /proc, pid/ipc/uts
 * namespaces, no capabilities and a clean environment.
 */
export class NativeRunner implements BuildRunner {
  readonly kind = "native";
  private readonly processRunner: ProcessRunner;
  private readonly hiddenPaths: string[];
  private readonly bwrap: string;
  private readonly linkedReadOnly: string[];
  private readonly unshare: string;
  private mode: Promise<{ mode: WorkspaceMode; reason?: string }> | undefined;
  /** The run in progress per overlay workspace: two mounts of one upper folder must not overlap. */
  private readonly running = new WeakMap<Workspace, Promise<unknown>>();

  constructor(options: NativeRunnerOptions) {
    this.processRunner = options.processRunner;
    this.hiddenPaths = options.hiddenPaths.map((p) => path.resolve(p));
    this.bwrap = options.bwrapPath ?? "bwrap";
    this.linkedReadOnly = options.linkedReadOnly ?? DEFAULT_LINKED_READ_ONLY;
    this.unshare = options.unsharePath ?? "unshare";
    if (options.workspaceMode !== undefined) this.mode = Promise.resolve({ mode: options.workspaceMode });
  }

  /**
   * The kind of workspace builds get, detected once: with a test overlay mounted in `dir`
   * (a folder on the filesystem the workspaces live on) on the first call.
   */
  async workspaceMode(dir: string): Promise<WorkspaceMode> {
    return (await this.workspaces(dir)).mode;
  }

  /** workspaceMode, with the reason when overlays do not work here (for the start log). */
  workspaces(dir: string): Promise<{ mode: WorkspaceMode; reason?: string }> {
    this.mode ??= checkOverlay(this.processRunner, dir, this.unshare).then((c) =>
      c.ok ? { mode: "overlay" } : { mode: "copy", reason: c.reason },
    );
    return this.mode;
  }

  async createWorkspace(imagebuilderRoot: string, opts: CreateWorkspaceOptions = {}): Promise<Workspace> {
    const parent = workspacesParent(imagebuilderRoot, opts);
    if ((await this.workspaceMode(parent)) === "overlay") {
      return createOverlayWorkspace(imagebuilderRoot, {
        parent,
        processRunner: this.processRunner,
        linkedReadOnly: this.linkedReadOnly,
      });
    }
    return createWorkspaceTree(imagebuilderRoot, {
      ...opts,
      processRunner: this.processRunner,
      linkedReadOnly: this.linkedReadOnly,
    });
  }

  async run(ws: Workspace, opts: RunnerRunOptions): Promise<RunResult> {
    if (opts.args.length === 0) throw new Error("run: args is empty");
    const sandboxed = [this.bwrap, ...(await this.sandboxArgs(ws)), "--", ...withBuildUmask(opts.args)];
    const runOpts = {
      argv: ws.overlay ? withOverlay(this.unshare, ws.root, sandboxed) : sandboxed,
      env: { PATH: BUILD_PATH },
      timeoutMs: opts.timeoutMs,
      maxOutputBytes: opts.maxOutputBytes,
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onLine ? { onLine: opts.onLine } : {}),
    };
    // Killing bwrap's process group does not reach the build: --new-session puts it in a
    // session of its own. It dies anyway: --die-with-parent kills the sandbox's pid 1 when
    // bwrap goes, and the kernel then kills everything in the pid namespace. unshare and sh
    // exec into bwrap, so with an overlay the process killed is still bwrap itself.
    if (!ws.overlay) return this.processRunner.run(runOpts);
    const before = this.running.get(ws) ?? Promise.resolve();
    const run = before.catch(() => undefined).then(() => this.processRunner.run(runOpts));
    this.running.set(ws, run);
    return run;
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
    const args = [...namespaceArgs(), ...(await systemMountArgs())];
    args.push("--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp");
    // Paths the operator asked to hide that would otherwise be visible through a system mount
    // (a key kept under /usr/local/etc, say); everything else is simply not mounted.
    for (const hidden of this.hiddenPaths) {
      const real = await realpathOrUndefined(hidden);
      if (real === undefined || !isVisibleInSandbox(real)) continue;
      const kind = await kindOf(real);
      if (kind === "dir") args.push("--perms", "0555", "--tmpfs", real);
      // A bind of /dev/null is nodev: opening the file fails with EACCES.
      else if (kind === "file") args.push("--ro-bind", "/dev/null", real);
    }
    // Each writable folder is a mount point inside the sandbox: a build can change what is in
    // it, never swap the folder itself for a link that the worker would then follow.
    args.push("--bind", ws.dir, ws.dir, "--bind", ws.binDir, ws.binDir);
    args.push("--ro-bind", ws.filesDir, ws.filesDir);
    for (const dir of ws.readOnlyDirs) args.push("--ro-bind", dir, dir);
    args.push("--ro-bind", ws.feedsDir, ws.feedsDir);
    args.push("--clearenv", "--setenv", "PATH", BUILD_PATH, "--setenv", "HOME", "/tmp");
    args.push("--setenv", "TMPDIR", "/tmp", "--setenv", "LANG", "C.UTF-8", "--chdir", ws.dir);
    return args;
  }
}

/** /usr, the /bin-style links or folders next to it, and the minimal /etc. */
async function systemMountArgs(): Promise<string[]> {
  const args: string[] = [];
  for (const dir of SANDBOX_SYSTEM_DIRS) {
    const st = await lstatOrUndefined(dir);
    if (st?.isSymbolicLink()) args.push("--symlink", await readlink(dir), dir);
    else if (st?.isDirectory()) args.push("--ro-bind", dir, dir);
  }
  for (const file of SANDBOX_ETC_FILES) {
    const st = await lstatOrUndefined(file);
    if (st === undefined) continue;
    // resolv.conf-style links into /run would dangle: bind what they point at, at their name.
    const real = st.isSymbolicLink() ? await realpathOrUndefined(file) : file;
    if (real !== undefined) args.push("--ro-bind", real, file);
  }
  return args;
}

function isVisibleInSandbox(real: string): boolean {
  const roots = [...SANDBOX_SYSTEM_DIRS, ...SANDBOX_ETC_FILES];
  return roots.some((root) => real === root || real.startsWith(`${root}/`));
}

function namespaceArgs(): string[] {
  return [
    "--die-with-parent",
    "--new-session",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    // No network at all: not the host's loopback (Redis, the API), not its addresses, not
    // private ranges or cloud metadata. The worker fetches what a build needs (feed-stager.ts).
    "--unshare-net",
    "--hostname",
    "asu-build",
    // Without this, bwrap started by root keeps every capability inside the sandbox.
    "--cap-drop",
    "ALL",
  ];
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p);
  } catch {
    return undefined;
  }
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
