import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { StringDecoder } from "node:string_decoder";

/**
 * The only module that starts processes. Everything else (tar, make, bwrap) goes through
 * `ProcessRunner.run`, so every process gets a timeout, an output cap and a group kill,
 * and tests can swap the runner for a fake.
 */

export interface RunOptions {
  /** argv[0] is the program; no shell is ever involved. */
  argv: string[];
  cwd?: string;
  /** The complete environment; nothing is inherited from the server process. */
  env: Record<string, string>;
  timeoutMs: number;
  /** Cap per stream (stdout and stderr each). */
  maxOutputBytes: number;
  signal?: AbortSignal;
  /**
   * Called with each line of output as it arrives (live build progress, issue #14), without
   * its line ending; a line longer than MAX_LINE_CHARS is cut there. Never throws into the run.
   */
  onLine?: OutputLineListener;
}

export type OutputStream = "stdout" | "stderr";
export type OutputLineListener = (stream: OutputStream, line: string) => void;

/** Longest line handed to `onLine`; the rest of such a line is dropped, the capture keeps it. */
export const MAX_LINE_CHARS = 8192;

/** Splits a byte stream into lines for `onLine`, holding at most MAX_LINE_CHARS at a time. */
class LineSplitter {
  private readonly decoder = new StringDecoder("utf8");
  private partial = "";
  /** The current line went over MAX_LINE_CHARS and was sent: drop the rest of it. */
  private skipping = false;

  constructor(
    private readonly stream: OutputStream,
    private readonly listener: OutputLineListener,
  ) {}

  push(chunk: Buffer): void {
    this.take(this.decoder.write(chunk));
  }

  end(): void {
    this.take(this.decoder.end());
    if (this.partial !== "" && !this.skipping) this.emit(this.partial);
    this.partial = "";
  }

  private take(text: string): void {
    let rest = text;
    for (let nl = rest.indexOf("\n"); nl !== -1; nl = rest.indexOf("\n")) {
      const line = this.partial + rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      this.partial = "";
      if (this.skipping) this.skipping = false;
      else this.emit(line.length > MAX_LINE_CHARS ? line.slice(0, MAX_LINE_CHARS) : line);
    }
    if (this.skipping) return;
    this.partial += rest;
    if (this.partial.length > MAX_LINE_CHARS) {
      this.emit(this.partial.slice(0, MAX_LINE_CHARS));
      this.partial = "";
      this.skipping = true;
    }
  }

  private emit(line: string): void {
    try {
      this.listener(this.stream, line.endsWith("\r") ? line.slice(0, -1) : line);
    } catch {
      // A listener's fault must not break the build it watches.
    }
  }
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** The caller's AbortSignal fired and the process group was killed. */
  aborted: boolean;
  /** stdout or stderr went over maxOutputBytes; the middle was dropped. */
  truncated: boolean;
  durationMs: number;
}

export interface ProcessRunnerOptions {
  /** Time between SIGTERM and SIGKILL when a process group is killed. Default 5 s. */
  killGraceMs?: number;
  /**
   * After the main process exits, how long to wait for its stdout/stderr to close. A child
   * that left the process group (setsid) can hold the pipes open forever; we stop reading then.
   * Default 2 s.
   */
  closeGraceMs?: number;
}

/** Keeps the first and the last part of a stream; errors are usually at the end. */
class OutputCapture {
  private readonly headCap: number;
  private readonly tailCap: number;
  private head: Buffer[] = [];
  private headLen = 0;
  private tail: Buffer[] = [];
  private tailLen = 0;
  private total = 0;

  constructor(maxBytes: number) {
    this.headCap = Math.floor(maxBytes / 2);
    this.tailCap = maxBytes - this.headCap;
  }

  push(chunk: Buffer): void {
    this.total += chunk.length;
    let rest = chunk;
    if (this.headLen < this.headCap) {
      const take = Math.min(this.headCap - this.headLen, rest.length);
      this.head.push(rest.subarray(0, take));
      this.headLen += take;
      rest = rest.subarray(take);
    }
    if (rest.length === 0) return;
    this.tail.push(rest);
    this.tailLen += rest.length;
    while (this.tailLen > this.tailCap) {
      const first = this.tail[0] as Buffer;
      const excess = this.tailLen - this.tailCap;
      if (first.length <= excess) {
        this.tail.shift();
        this.tailLen -= first.length;
      } else {
        // Copy so that the dropped part of a large chunk can be freed.
        this.tail[0] = Buffer.from(first.subarray(excess));
        this.tailLen -= excess;
      }
    }
  }

  get truncated(): boolean {
    return this.total > this.headLen + this.tailLen;
  }

  text(): string {
    const head = Buffer.concat(this.head).toString("utf8");
    const tail = Buffer.concat(this.tail).toString("utf8");
    if (!this.truncated) return head + tail;
    const omitted = this.total - this.headLen - this.tailLen;
    return `${head}\n[... ${omitted} bytes omitted ...]\n${tail}`;
  }
}

export class ProcessRunner {
  private readonly killGraceMs: number;
  private readonly closeGraceMs: number;
  /** Process groups started and not yet reaped: shutdown kills them (issue #10). */
  private readonly groups = new Set<number>();

  constructor(options: ProcessRunnerOptions = {}) {
    this.killGraceMs = options.killGraceMs ?? 5000;
    this.closeGraceMs = options.closeGraceMs ?? 2000;
  }

  /**
   * Signals every process group still running. Each child leads its own group (detached),
   * so it would outlive this process; shutdown calls this before exiting.
   */
  killAll(signal: NodeJS.Signals = "SIGKILL"): number {
    for (const pgid of this.groups) {
      try {
        process.kill(-pgid, signal);
      } catch {
        // ESRCH: the group is already gone.
      }
    }
    return this.groups.size;
  }

  /**
   * Runs argv in its own process group and resolves once the process has exited. Rejects
   * only when the program cannot be started at all (e.g. ENOENT).
   */
  run(opts: RunOptions): Promise<RunResult> {
    const [program, ...args] = opts.argv;
    if (program === undefined || program === "") return Promise.reject(new Error("run: argv is empty"));
    if (!(opts.timeoutMs > 0)) return Promise.reject(new Error("run: timeoutMs must be positive"));
    if (!(opts.maxOutputBytes > 0)) return Promise.reject(new Error("run: maxOutputBytes must be positive"));
    if (opts.signal?.aborted) return Promise.reject(new Error(`run: ${program} aborted before it started`));

    return new Promise<RunResult>((resolve, reject) => {
      const started = performance.now();
      const stdout = new OutputCapture(opts.maxOutputBytes);
      const stderr = new OutputCapture(opts.maxOutputBytes);
      let timedOut = false;
      let aborted = false;
      let exit: { code: number | null; signal: string | null } | undefined;
      let settled = false;
      let killTimer: NodeJS.Timeout | undefined;
      let closeTimer: NodeJS.Timeout | undefined;

      // detached: the child leads a new process group, so one kill(-pid) reaches make and
      // everything it started (sh, opkg/apk, sleep...), not only the direct child.
      const child = spawn(program, args, {
        cwd: opts.cwd,
        env: opts.env,
        detached: true,
        shell: false,
        stdio: ["ignore", "pipe", "pipe"],
        windowsHide: true,
      });
      const pgid = child.pid;
      if (pgid !== undefined) this.groups.add(pgid);
      child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
      child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
      const lines = opts.onLine
        ? [new LineSplitter("stdout", opts.onLine), new LineSplitter("stderr", opts.onLine)]
        : [];
      if (lines.length > 0) {
        child.stdout.on("data", (chunk: Buffer) => lines[0]?.push(chunk));
        child.stderr.on("data", (chunk: Buffer) => lines[1]?.push(chunk));
      }

      const signalGroup = (sig: NodeJS.Signals): void => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, sig);
        } catch {
          // ESRCH: the group is already gone.
        }
      };

      const killGroup = (): void => {
        if (exit !== undefined) return;
        signalGroup("SIGTERM");
        killTimer ??= setTimeout(() => signalGroup("SIGKILL"), this.killGraceMs);
      };

      const timeoutTimer = setTimeout(() => {
        timedOut = true;
        killGroup();
      }, opts.timeoutMs);

      const onAbort = (): void => {
        aborted = true;
        killGroup();
      };
      opts.signal?.addEventListener("abort", onAbort, { once: true });

      const cleanup = (): void => {
        clearTimeout(timeoutTimer);
        if (killTimer) clearTimeout(killTimer);
        if (closeTimer) clearTimeout(closeTimer);
        opts.signal?.removeEventListener("abort", onAbort);
      };

      const finish = async (): Promise<void> => {
        if (settled || exit === undefined) return;
        settled = true;
        cleanup();
        for (const splitter of lines) splitter.end();
        if (pgid !== undefined) {
          await waitForGroupExit(pgid, this.closeGraceMs);
          this.groups.delete(pgid);
        }
        resolve({
          code: exit.code,
          signal: exit.signal,
          stdout: stdout.text(),
          stderr: stderr.text(),
          timedOut,
          aborted,
          truncated: stdout.truncated || stderr.truncated,
          durationMs: Math.round(performance.now() - started),
        });
      };

      child.once("error", (err) => {
        if (child.pid !== undefined) return; // errors after start also end in "exit"
        settled = true;
        cleanup();
        reject(new Error(`could not start ${program}: ${err.message}`, { cause: err }));
      });

      child.once("exit", (code, sig) => {
        exit = { code, signal: sig };
        // No process outlives its run: stragglers left in the group (daemonised children,
        // a `sleep &` that make did not wait for) are killed with the leader's exit. The
        // group id cannot be reused while members of the group are alive.
        signalGroup("SIGKILL");
        closeTimer = setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          void finish();
        }, this.closeGraceMs);
      });

      child.once("close", () => void finish());
    });
  }
}

/**
 * Waits (at most maxMs) until no live process is left in the group, so that callers can rely
 * on "resolved" meaning "nothing of it runs any more". Zombies count as dead: where pid 1 does
 * not reap (some container inits), they never go away.
 */
async function waitForGroupExit(pgid: number, maxMs: number): Promise<void> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return; // ESRCH: the group is empty
    }
    if (!(await groupHasLiveMember(pgid)) || Date.now() >= deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function groupHasLiveMember(pgid: number): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir("/proc");
  } catch {
    return false; // no procfs: nothing more we can check
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(pgrp) === pgid && state !== "Z") return true;
    } catch {
      // the process went away while we looked
    }
  }
  return false;
}
