import { constants, type Stats } from "node:fs";
import {
  chmod,
  copyFile,
  lstat,
  lutimes,
  mkdir,
  mkdtemp,
  readdir,
  readlink,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import type { ProcessRunner } from "../process-runner.js";
import type { Workspace } from "./index.js";
import { cp, emptyWorkspace } from "./workspace.js";

/**
 * Workspaces as kernel overlays over the shared ImageBuilder tree (docs/decisions/013): the
 * tree is the read-only lower layer, each build writes into an upper folder of its own.
 * Creating and removing one costs the same for a 300 MB tree as for a 3 KB one.
 *
 * The overlay is never mounted in the server's mount namespace. Each run of a build mounts it
 * in a namespace of the run's own (`unshare --mount`, private propagation) and then execs
 * bubblewrap there: nothing is visible on the host, and the mount goes away with the run's
 * last process, whatever kills it. The upper folder is `dir` itself, which the overlay covers
 * inside the namespace; so the worker, outside, reads and writes the build's changes at the
 * same paths as before (feed lists, keys). The tree's top-level files are copied into it, so
 * that the worker also finds the ones it reads (repositories.conf); that is a few KB.
 */

/**
 * Mounts the overlay of the workspace root given as $1, then runs the rest of argv. `cd` made
 * sh export PWD and OLDPWD, which bubblewrap would keep in its own environment (the sandbox's
 * pid 1): they go before the exec.
 */
const MOUNT_SCRIPT =
  'cd "$1" && mount -n -t overlay -o nosuid,nodev,lowerdir=lower,upperdir=ib,workdir=work asu-build ib && cd / && unset OLDPWD PWD && shift && exec "$@"';

/** Names inside a workspace root; short and fixed, so no host path goes into mount options. */
const LOWER = "lower";
const UPPER = "ib";
const WORK = "work";

const CHECK_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" };

/** `argv` wrapped so that it runs with the workspace's overlay mounted over `ws.dir`. */
export function withOverlay(unshare: string, root: string, argv: string[]): string[] {
  return [
    unshare,
    "--mount",
    "--propagation",
    "private",
    "--",
    "/bin/sh",
    "-c",
    MOUNT_SCRIPT,
    "asu-overlay",
    root,
    ...argv,
  ];
}

export interface OverlayWorkspaceOptions {
  processRunner: ProcessRunner;
  /** The folder that will hold the workspace; created 0700 if missing. */
  parent: string;
  /** Folders of the tree the build only reads: mounted read-only inside the sandbox. */
  linkedReadOnly: string[];
}

export async function createOverlayWorkspace(
  imagebuilderRoot: string,
  opts: OverlayWorkspaceOptions,
): Promise<Workspace> {
  // `dir` (ib/) is the upper layer. Nothing is mounted on the host, so disposing removes the
  // upper layer, whatever the build left.
  const { base, ws } = await emptyWorkspace(imagebuilderRoot, opts.parent);
  const { root, dir } = ws;
  try {
    await mkdir(path.join(root, WORK));
    await symlink(base, path.join(root, LOWER));
    ws.overlay = { lowerDir: base, workDir: path.join(root, WORK) };
    // A private dl/ in the upper layer: what a build downloads or rewrites there (opkg's
    // lists, issue #8) stays its own.
    await mkdir(path.join(dir, "dl"));
    // Anything else at the top (none in a real ImageBuilder) goes through cp -a.
    const others: string[] = [];
    for (const name of (await readdir(base)).sort()) {
      const st = await lstat(path.join(base, name));
      if (st.isDirectory()) continue;
      // Files and links in-process (a cp process cost 20-40 ms per build, issue #13).
      if (st.isFile()) await copyFileAsIs(path.join(base, name), path.join(dir, name), st);
      else if (st.isSymbolicLink()) {
        const to = path.join(dir, name);
        await symlink(await readlink(path.join(base, name)), to);
        await lutimes(to, st.atime, st.mtime);
      } else others.push(name);
    }
    if (others.length > 0) await cp(opts.processRunner, ["-a"], base, others, dir);
    for (const rel of opts.linkedReadOnly) {
      const st = await lstat(path.join(base, rel)).catch(() => undefined);
      if (st?.isDirectory()) ws.readOnlyDirs.push(path.join(dir, rel));
    }
    return ws;
  } catch (err) {
    await ws.dispose();
    throw err;
  }
}

/** `cp -a` of one regular file: bytes, mode and times (owner: the worker's, as the tree's). */
async function copyFileAsIs(from: string, to: string, st: Stats): Promise<void> {
  await copyFile(from, to, constants.COPYFILE_EXCL);
  await chmod(to, st.mode & 0o7777);
  await utimes(to, st.atime, st.mtime);
}

export type OverlayCheck = { ok: true } | { ok: false; reason: string };

/**
 * Whether overlay workspaces work here: mounts a tiny overlay in `dir` (on the filesystem the
 * workspaces will live on) the way a run does. Needs root, and an upper filesystem that
 * overlayfs accepts (not NFS, not another overlay).
 */
export async function checkOverlay(
  runner: ProcessRunner,
  dir: string,
  unshare: string,
): Promise<OverlayCheck> {
  let probe: string | undefined;
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    probe = await mkdtemp(path.join(dir, ".overlay-check-"));
    await mkdir(path.join(probe, LOWER));
    await mkdir(path.join(probe, UPPER));
    await mkdir(path.join(probe, WORK));
    await writeFile(path.join(probe, LOWER, "lower"), "");
    const result = await runner.run({
      argv: withOverlay(unshare, probe, [
        "/bin/sh",
        "-c",
        'test -f "$0/ib/lower" && : > "$0/ib/upper"',
        probe,
      ]),
      env: CHECK_ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 16 * 1024,
    });
    if (result.code !== 0) {
      const said = result.stderr.trim();
      return {
        ok: false,
        reason: `mounting a test overlay exited ${result.code ?? result.signal}${said ? `: ${said}` : ""}`,
      };
    }
    const landed = await lstat(path.join(probe, UPPER, "upper")).then(
      (s) => s.isFile(),
      () => false,
    );
    return landed
      ? { ok: true }
      : { ok: false, reason: "a write through a test overlay did not reach its upper folder" };
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  } finally {
    if (probe !== undefined) await rm(probe, { recursive: true, force: true }).catch(() => undefined);
  }
}
