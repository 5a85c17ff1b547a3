import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { MAX_LINE_CHARS, ProcessRunner } from "./process-runner.js";

const ENV = { PATH: "/usr/bin:/bin" };

/** A pid counts as gone when it no longer exists or is a zombie waiting for its reaper. */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

describe("ProcessRunner", () => {
  const runner = new ProcessRunner({ killGraceMs: 300, closeGraceMs: 300 });

  it("reports each line of output as it comes, and the last one without a newline", async () => {
    const lines: string[] = [];
    const result = await runner.run({
      argv: ["sh", "-c", "printf 'a\\nb'; printf 'c\\n' ; printf 'e1\\n' >&2; printf 'tail'"],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 1024,
      onLine: (stream, line) => lines.push(`${stream}:${line}`),
    });
    expect(result.code).toBe(0);
    expect(lines.filter((l) => l.startsWith("stdout:"))).toEqual(["stdout:a", "stdout:bc", "stdout:tail"]);
    expect(lines.filter((l) => l.startsWith("stderr:"))).toEqual(["stderr:e1"]);
  });

  it("hands each output line to onLine as it happens, per stream, long lines cut (issue #14)", async () => {
    const seen: [string, string][] = [];
    const long = "x".repeat(MAX_LINE_CHARS + 100);
    const result = await runner.run({
      // A line split over two writes, a CRLF line, a long line, and a last line without newline.
      argv: [
        "sh",
        "-c",
        `printf 'one\\ntw'; sleep 0.05; printf 'o\\r\\n'; echo oops >&2; echo ${long}; echo after; printf tail`,
      ],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 64 * 1024,
      onLine: (stream, line) => seen.push([stream, line]),
    });
    expect(result.code).toBe(0);
    expect(seen.filter(([s]) => s === "stdout").map(([, l]) => l)).toEqual([
      "one",
      "two",
      "x".repeat(MAX_LINE_CHARS),
      "after",
      "tail",
    ]);
    expect(seen.filter(([s]) => s === "stderr").map(([, l]) => l)).toEqual(["oops"]);
    // The capture is unchanged by it.
    expect(result.stdout).toContain(long);
  });

  it("a throwing onLine does not break the run", async () => {
    const result = await runner.run({
      argv: ["sh", "-c", "echo a; echo b"],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 1024,
      onLine: () => {
        throw new Error("listener bug");
      },
    });
    expect(result).toMatchObject({ code: 0, stdout: "a\nb\n" });
  });

  it("captures stdout, stderr and the exit code", async () => {
    const result = await runner.run({
      argv: ["sh", "-c", "echo out; echo err >&2; exit 3"],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 1024,
    });
    expect(result).toMatchObject({
      code: 3,
      signal: null,
      stdout: "out\n",
      stderr: "err\n",
      timedOut: false,
      aborted: false,
      truncated: false,
    });
    expect(result.durationMs).toBeGreaterThanOrEqual(0);
  });

  it("keeps the first and the last part of long output and marks the cut", async () => {
    const result = await runner.run({
      argv: [
        "sh",
        "-c",
        'i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; echo fatal error >&2',
      ],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 200,
    });
    expect(result.truncated).toBe(true);
    expect(result.code).toBe(0);
    expect(result.stdout.startsWith("line 0\nline 1\n")).toBe(true);
    expect(result.stdout.endsWith("line 1998\nline 1999\n")).toBe(true);
    // 2000 lines: "line 0".."line 9" (7 bytes), 10..99 (8), 100..999 (9), 1000..1999 (10).
    const total = 10 * 7 + 90 * 8 + 900 * 9 + 1000 * 10;
    expect(result.stdout).toContain(`\n[... ${total - 200} bytes omitted ...]\n`);
    expect(result.stdout.replace(/\n\[\.\.\. \d+ bytes omitted \.\.\.\]\n/, "")).toHaveLength(200);
    expect(result.stderr).toBe("fatal error\n");
  });

  it("does not truncate output of exactly the cap", async () => {
    const result = await runner.run({
      argv: ["printf", "%s", "x".repeat(100)],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 100,
    });
    expect(result.truncated).toBe(false);
    expect(result.stdout).toBe("x".repeat(100));
  });

  it("kills the child and its grandchildren at the timeout", async () => {
    const result = await runner.run({
      argv: ["sh", "-c", "sleep 1000 & echo $!; sleep 1000 & echo $!; echo $$; wait"],
      env: ENV,
      timeoutMs: 500,
      maxOutputBytes: 1024,
    });
    expect(result.timedOut).toBe(true);
    expect(result.signal).toBe("SIGTERM");
    const pids = result.stdout.trim().split("\n").map(Number);
    expect(pids).toHaveLength(3);
    for (const pid of pids) expect(isAlive(pid), `pid ${pid}`).toBe(false);
    expect(result.durationMs).toBeGreaterThanOrEqual(450);
    expect(result.durationMs).toBeLessThan(5000);
  });

  it("sends SIGKILL to a group that ignores SIGTERM after the grace period", async () => {
    const result = await runner.run({
      argv: ["sh", "-c", 'trap "" TERM; sleep 1000 & echo $!; while :; do sleep 0.05; done'],
      env: ENV,
      timeoutMs: 300,
      maxOutputBytes: 1024,
    });
    expect(result.timedOut).toBe(true);
    expect(result.signal).toBe("SIGKILL");
    expect(isAlive(Number(result.stdout.trim()))).toBe(false);
  });

  it("kills stragglers left in the group when the leader exits", async () => {
    const result = await runner.run({
      argv: ["sh", "-c", "sleep 1000 >/dev/null 2>&1 & echo $!"],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 1024,
    });
    expect(result.code).toBe(0);
    expect(isAlive(Number(result.stdout.trim()))).toBe(false);
  });

  it("kills the group when the caller aborts", async () => {
    const controller = new AbortController();
    const running = runner.run({
      argv: ["sh", "-c", "sleep 1000 & echo $!; wait"],
      env: ENV,
      timeoutMs: 60_000,
      maxOutputBytes: 1024,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 200);
    const result = await running;
    expect(result).toMatchObject({ aborted: true, timedOut: false, signal: "SIGTERM" });
    expect(isAlive(Number(result.stdout.trim()))).toBe(false);
  });

  it("passes only the given environment", async () => {
    process.env.ASU_TEST_SECRET = "leak";
    try {
      const result = await runner.run({
        argv: ["/usr/bin/env"],
        env: { FOO: "bar" },
        timeoutMs: 10_000,
        maxOutputBytes: 4096,
      });
      expect(result.stdout).toBe("FOO=bar\n");
    } finally {
      delete process.env.ASU_TEST_SECRET;
    }
  });

  it("runs argv without a shell and with stdin closed", async () => {
    const result = await runner.run({
      argv: ["printf", "%s|", "$HOME", "; echo pwned", "`id`"],
      env: ENV,
      timeoutMs: 10_000,
      maxOutputBytes: 1024,
    });
    expect(result.stdout).toBe("$HOME|; echo pwned|`id`|");
    const cat = await runner.run({ argv: ["cat"], env: ENV, timeoutMs: 5000, maxOutputBytes: 1024 });
    expect(cat).toMatchObject({ code: 0, stdout: "", timedOut: false });
  });

  it("runs in the given working folder", async () => {
    const result = await runner.run({
      argv: ["pwd"],
      cwd: "/usr",
      env: ENV,
      timeoutMs: 5000,
      maxOutputBytes: 1024,
    });
    expect(result.stdout).toBe("/usr\n");
  });

  it("rejects when the program does not exist", async () => {
    await expect(
      runner.run({ argv: ["/nonexistent/program"], env: ENV, timeoutMs: 5000, maxOutputBytes: 1024 }),
    ).rejects.toThrow("could not start /nonexistent/program: spawn /nonexistent/program ENOENT");
  });

  it("rejects bad options", async () => {
    await expect(runner.run({ argv: [], env: ENV, timeoutMs: 5000, maxOutputBytes: 1024 })).rejects.toThrow(
      "run: argv is empty",
    );
    await expect(
      runner.run({ argv: ["true"], env: ENV, timeoutMs: 0, maxOutputBytes: 1024 }),
    ).rejects.toThrow("run: timeoutMs must be positive");
  });
});

describe("ProcessRunner.killAll (shutdown)", () => {
  it("kills every running process group, grandchildren included, and forgets them", async () => {
    const runner = new ProcessRunner({ killGraceMs: 300, closeGraceMs: 300 });
    const runs = [1, 2].map(() =>
      runner.run({
        argv: ["sh", "-c", "sleep 1000 & sleep 1001 & wait"],
        env: ENV,
        timeoutMs: 60_000,
        maxOutputBytes: 1024,
      }),
    );
    // Groups are tracked from spawn on, so no wait is needed before the kill.
    expect(runner.killAll("SIGKILL")).toBe(2);
    const results = await Promise.all(runs);
    for (const result of results) expect(result.signal).toBe("SIGKILL");
    expect(runner.killAll("SIGKILL")).toBe(0);
  });
});
