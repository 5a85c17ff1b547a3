import { spawn } from "node:child_process";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { OPENWRT_DOWNLOADS } from "./generate-mirror.js";

/**
 * Helpers for tests that drive the mirror's ImageBuilders by hand: unpack with system tar,
 * point the repositories at the loopback mirror (what the server does after unpacking) and
 * run `make` with an argument vector, optionally inside bubblewrap.
 */

export interface MakeResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Unpacks an ImageBuilder archive (.tar.zst or .tar.xz) into `destDir`; returns its top folder. */
export async function unpackImageBuilder(archive: string, destDir: string): Promise<string> {
  await mkdir(destDir, { recursive: true });
  const result = await run("tar", ["-xf", archive, "-C", destDir], { cwd: destDir, timeoutMs: 60_000 });
  if (result.code !== 0) throw new Error(`tar failed (${result.code}): ${result.stderr}`);
  const top = path.basename(archive).replace(/\.tar\.(zst|xz)$/, "");
  const entries = await readdir(destDir);
  if (!entries.includes(top)) throw new Error(`${archive} has no top folder ${top}`);
  return path.join(destDir, top);
}

/** Replaces downloads.openwrt.org in repositories.conf / repositories with `upstreamUrl`. */
export async function rewriteRepositories(ibDir: string, upstreamUrl: string): Promise<string> {
  for (const name of ["repositories.conf", "repositories"]) {
    const file = path.join(ibDir, name);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch {
      continue;
    }
    const rewritten = text.split(OPENWRT_DOWNLOADS).join(upstreamUrl.replace(/\/+$/, ""));
    await writeFile(file, rewritten);
    return rewritten;
  }
  throw new Error(`${ibDir} has neither repositories.conf nor repositories`);
}

export interface RunMakeOptions {
  /** Run under bubblewrap: read-only /, private /tmp, writable `ibDir` and `binds`. */
  sandbox?: boolean;
  /** Extra writable folders (BIN_DIR, a shared dl/ ...). */
  binds?: string[];
  timeoutMs?: number;
}

/** `make <args>` in `ibDir` with a clean environment (PATH, HOME, LANG only). */
export function runMake(ibDir: string, args: string[], opts: RunMakeOptions = {}): Promise<MakeResult> {
  const env = { PATH: "/usr/local/bin:/usr/bin:/bin", HOME: "/tmp", LANG: "C" };
  if (!opts.sandbox) return run("make", args, { cwd: ibDir, env, timeoutMs: opts.timeoutMs ?? 120_000 });
  const bwrapArgs = [
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "--tmpfs",
    "/tmp",
    // after --tmpfs /tmp, so folders below /tmp stay visible
    ...[ibDir, ...(opts.binds ?? [])].flatMap((d) => ["--bind", d, d]),
    "--unshare-pid",
    "--die-with-parent",
    "--clearenv",
    ...Object.entries(env).flatMap(([k, v]) => ["--setenv", k, v]),
    "--chdir",
    ibDir,
    "make",
    ...args,
  ];
  return run("bwrap", bwrapArgs, { cwd: ibDir, env, timeoutMs: opts.timeoutMs ?? 120_000 });
}

function run(
  command: string,
  args: string[],
  opts: { cwd: string; env?: Record<string, string>; timeoutMs: number },
): Promise<MakeResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    const timer = setTimeout(() => {
      // the whole process group: make, its sub-makes and node
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    }, opts.timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      });
    });
  });
}
