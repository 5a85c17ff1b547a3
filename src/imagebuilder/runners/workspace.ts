import { lstat, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { ProcessRunner } from "../process-runner.js";
import type { CreateWorkspaceOptions, Workspace } from "./index.js";

/**
 * How a build gets its own ImageBuilder tree, cheaply, without being able to change the
 * shared unpacked tree or another build's workspace.
 *
 * A plain hardlink farm (`cp -al`) is not enough: the ImageBuilder rewrites files that ship
 * in the tarball (`> packages/Packages`, `.profiles.mk`, files in the kernel build dir), and
 * an O_TRUNC write into a hardlink changes the one inode every workspace shares. Overlayfs
 * is better and used where it works (overlay-workspace.ts, docs/decisions/013); it needs root
 * (bubblewrap 0.8 has no --overlay). Without it:
 * - folders the ImageBuilder only reads (LINKED_READ_ONLY) are hardlinked, and the sandbox
 *   bind-mounts them read-only: a build that writes there fails loudly with EROFS and
 *   corrupts nothing;
 * - everything else is copied with `cp -a --reflink=auto`: copy-on-write on btrfs/XFS, a
 *   real copy elsewhere (a few seconds for a large ImageBuilder, against builds of minutes).
 * `dl/` is never copied and never shared: the real ImageBuilder keeps opkg's lists and
 * signatures there and rewrites them on every run, so two builds sharing one `dl/` read each
 * other's half-written lists (issue #8). Each build gets an empty one; packages are shared
 * through the worker's verified package cache instead (feed-stager.ts).
 */
export const DEFAULT_LINKED_READ_ONLY = ["include", "scripts", "target/linux", "staging_dir/host/lib"];

const CP_TIMEOUT_MS = 10 * 60_000;
const CP_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" };

export interface WorkspaceFactoryOptions extends CreateWorkspaceOptions {
  processRunner: ProcessRunner;
  linkedReadOnly: string[];
}

/**
 * Removes a workspace's folder, once however often it is called. rm never follows links, so
 * what a build left (links, FIFOs, sparse files, overlay whiteouts) and hardlinked files only
 * lose their names.
 */
export function removeOnce(root: string): () => Promise<void> {
  let removed = false;
  return async () => {
    if (removed) return;
    removed = true;
    await rm(root, { recursive: true, force: true, maxRetries: 3 });
  };
}

/** Where the workspaces of a tree go: `workspacesDir`, or a `workspaces` folder next to the tree. */
export function workspacesParent(imagebuilderRoot: string, opts: CreateWorkspaceOptions): string {
  return path.resolve(
    opts.workspacesDir ?? path.join(path.dirname(path.resolve(imagebuilderRoot)), "workspaces"),
  );
}

export async function createWorkspaceTree(
  imagebuilderRoot: string,
  opts: WorkspaceFactoryOptions,
): Promise<Workspace> {
  const { base, ws } = await emptyWorkspace(imagebuilderRoot, workspacesParent(imagebuilderRoot, opts));
  try {
    const linked = new Set(opts.linkedReadOnly.map((p) => path.posix.normalize(p).replace(/\/+$/, "")));
    await mirror(opts.processRunner, base, ws.dir, "", linked, ws.readOnlyDirs);
    await mkdir(path.join(ws.dir, "dl"));
    return ws;
  } catch (err) {
    await ws.dispose();
    throw err;
  }
}

/**
 * The folders every workspace kind starts from, in a new folder under `parent`: `dir` (the
 * build's tree, empty, with the ImageBuilder's mode), `bin`, `files`, `private` (0700) and
 * `feeds`. `base` is the ImageBuilder tree, resolved and checked to be a folder.
 */
export async function emptyWorkspace(
  imagebuilderRoot: string,
  parent: string,
): Promise<{ base: string; ws: Workspace }> {
  const base = path.resolve(imagebuilderRoot);
  const baseStat = await stat(base);
  if (!baseStat.isDirectory()) throw new Error(`${base} is not an unpacked ImageBuilder`);
  await mkdir(parent, { recursive: true, mode: 0o700 });
  const root = await mkdtemp(path.join(parent, "ws-"));
  const ws: Workspace = {
    root,
    dir: path.join(root, "ib"),
    binDir: path.join(root, "bin"),
    filesDir: path.join(root, "files"),
    privateDir: path.join(root, "private"),
    feedsDir: path.join(root, "feeds"),
    readOnlyDirs: [],
    dispose: removeOnce(root),
  };
  try {
    await mkdir(ws.dir, { mode: baseStat.mode & 0o7777 });
    await mkdir(ws.binDir);
    await mkdir(ws.filesDir);
    await mkdir(ws.privateDir, { mode: 0o700 });
    await mkdir(ws.feedsDir);
    return { base, ws };
  } catch (err) {
    await ws.dispose();
    throw err;
  }
}

async function mirror(
  runner: ProcessRunner,
  src: string,
  dst: string,
  rel: string,
  linked: Set<string>,
  readOnlyDirs: string[],
): Promise<void> {
  const toLink: string[] = [];
  const toCopy: string[] = [];
  for (const name of (await readdir(src)).sort()) {
    const relPath = rel === "" ? name : `${rel}/${name}`;
    if (relPath === "dl") continue;
    const st = await lstat(path.join(src, name));
    if (linked.has(relPath) && st.isDirectory()) {
      toLink.push(name);
      readOnlyDirs.push(path.join(dst, name));
    } else if (st.isDirectory() && [...linked].some((l) => l.startsWith(`${relPath}/`))) {
      await mkdir(path.join(dst, name), { mode: st.mode & 0o7777 });
      await mirror(runner, path.join(src, name), path.join(dst, name), relPath, linked, readOnlyDirs);
    } else {
      toCopy.push(name);
    }
  }
  if (toLink.length > 0) await cp(runner, ["-al"], src, toLink, dst);
  if (toCopy.length > 0) await cp(runner, ["-a", "--reflink=auto"], src, toCopy, dst);
}

/** `cp <flags> -- <src>/<name>... <dst>/`, bounded in time and output. */
export async function cp(
  runner: ProcessRunner,
  flags: string[],
  src: string,
  names: string[],
  dst: string,
): Promise<void> {
  // "--" and absolute paths: no name from the archive can be taken for an option.
  const argv = ["cp", ...flags, "--", ...names.map((n) => path.join(src, n)), `${dst}/`];
  const result = await runner.run({ argv, env: CP_ENV, timeoutMs: CP_TIMEOUT_MS, maxOutputBytes: 64 * 1024 });
  if (result.code !== 0) {
    throw new Error(
      `creating the workspace failed: cp ${flags.join(" ")} exited ${result.code ?? result.signal}: ${result.stderr.trim()}`,
    );
  }
}
