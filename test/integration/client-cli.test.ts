import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VERSION } from "../../src/shared/version.js";
import { request, startStack, stopStack, type Stack } from "./harness.js";

/*
 * `asu build`, `asu profiles` and `asu packages` as a person runs them: `node dist/cli/main.js`
 * (npm test builds dist/ first) against a server with a real worker and the synthetic mirror.
 * The server on this branch has no event stream, so `asu build` falls back to polling here;
 * src/cli/client/build-events.test.ts covers the stream itself.
 */

const CLI = path.resolve("dist/cli/main.js");
const ESC = "\u001b";

let stack: Stack;

beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stopStack(stack);
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command and collects its output; resolves when it has exited. */
function run(command: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: tmpdir(), ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const asu = (...args: string[]) => run(process.execPath, [CLI, ...args]);

const buildArgs = (out: string, ...extra: string[]) => [
  "build",
  "--server",
  stack.api.url,
  "--version",
  "24.10.4",
  "--target",
  "ath79/generic",
  "--profile",
  "tplink,archer-c7-v5",
  "--out",
  out,
  "--poll-interval",
  "0.2",
  ...extra,
];

async function sha256(file: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(file))
    .digest("hex");
}

/** A port on which nothing listens. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("asu build", () => {
  it("builds, downloads the sysupgrade and factory images, checks their sha256 and prints where they are (plain output off a terminal)", async () => {
    const out = await mkdtemp(path.join(tmpdir(), "asu-cli-out-"));
    const res = await asu(...buildArgs(out, "--packages", "luci,tcpdump"));
    expect(res.code, res.stderr).toBe(0);

    // The answer the server gives for the same request, to compare with.
    const answer = await request(stack.api.url, "POST", "/api/v1/build", {
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink,archer-c7-v5",
      packages: ["luci", "tcpdump"],
    });
    expect(answer.status).toBe(200);
    const images = (answer.body.images as { name: string; type: string; sha256: string }[]).filter((i) =>
      ["sysupgrade", "factory"].includes(i.type),
    );
    expect(images.map((i) => i.type).sort()).toEqual(["factory", "sysupgrade"]);
    expect((await readdir(out)).sort()).toEqual(images.map((i) => i.name).sort());
    for (const image of images) {
      expect(await sha256(path.join(out, image.name))).toBe(image.sha256);
      expect(res.stdout).toContain(`${path.join(out, image.name)}  sha256 ${image.sha256}`);
    }
    expect(res.stdout).toContain("Built tplink_archer-c7-v5 for ath79/generic, OpenWrt 24.10.4");
    // Progress went to stderr as plain lines: stages, then each verified download.
    expect(res.stderr).toMatch(/^\[\d+:\d\d\] requesting tplink,archer-c7-v5 \(ath79\/generic, 24\.10\.4\)/m);
    expect(res.stderr).toMatch(/^\[\d+:\d\d\] built tplink_archer-c7-v5 \(request [0-9a-f]{12}\)$/m);
    for (const image of images) {
      expect(res.stderr).toMatch(new RegExp(`^\\[\\d+:\\d\\d\\] ${image.name}: .* sha256 verified$`, "m"));
    }
    // Not a terminal: no escape sequences, no carriage returns, no progress bar.
    expect(res.stdout + res.stderr).not.toContain(ESC);
    expect(res.stdout + res.stderr).not.toContain("\r");
    expect(res.stderr).not.toContain("░");
  });

  it("draws progress bars on a terminal (pseudo-terminal through script(1))", async () => {
    const out = await mkdtemp(path.join(tmpdir(), "asu-cli-tty-"));
    const args = [CLI, ...buildArgs(out, "--packages", "htop")].map((a) => `'${a}'`).join(" ");
    const res = await run("script", ["-qefc", `'${process.execPath}' ${args}`, "/dev/null"], {
      TERM: "xterm",
      COLUMNS: "120",
    });
    await (await import("node:fs/promises")).writeFile("/tmp/cli-tty-out.txt", res.stdout);
    expect(res.code, res.stdout).toBe(0);
    // cli-progress hides the cursor, redraws lines in place and shows it again at the end.
    expect(res.stdout).toContain(`${ESC}[?25l`);
    expect(res.stdout).toContain(`${ESC}[?25h`);
    expect(res.stdout).toMatch(/build [█░]+ /);
    expect(res.stdout).toMatch(/squashfs-sysupgrade [█░]+ [\d.]+ KiB \/ [\d.]+ KiB \| \d+:\d\d/);
    expect(res.stdout).toMatch(/build █+ done \| \d+:\d\d/);
    expect(res.stdout).toContain("sha256 verified");
    const files = await readdir(out);
    expect(files.some((f) => f.endsWith("-squashfs-sysupgrade.bin"))).toBe(true);
  });

  it("exits 2 and shows the server's detail for a bad request", async () => {
    const out = await mkdtemp(path.join(tmpdir(), "asu-cli-bad-"));
    const res = await asu(...buildArgs(out, "--packages", "luci-app-wireguard"));
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("asu: The server refused the request (HTTP 422): ");
    expect(res.stderr).toContain("luci-app-wireguard");
    expect(res.stderr).toContain("luci-proto-wireguard"); // the server's "did you mean"
    expect(await readdir(out)).toEqual([]);
  });

  it("exits 2 for an unknown target, with the server's words", async () => {
    const res = await asu(...buildArgs(tmpdir()).map((a) => (a === "ath79/generic" ? "nosuch/target" : a)));
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/asu: The server refused the request \(HTTP 400\): .*nosuch\/target/);
  });

  it("sends --defaults and shows the server's refusal (exit 2) when it does not allow them", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "asu-cli-defaults-"));
    const script = path.join(dir, "99-asu");
    await writeFile(script, "uci set system.@system[0].hostname=asu\n");
    const res = await asu(...buildArgs(path.join(dir, "out"), "--defaults", script));
    expect(res.code).toBe(2);
    expect(res.stderr).toContain('This server does not allow "defaults" (a first-boot script).');
  });

  it("stops on Ctrl-C with exit 130 and writes no image", async () => {
    const out = await mkdtemp(path.join(tmpdir(), "asu-cli-int-"));
    const child = spawn(process.execPath, [CLI, ...buildArgs(out, "--packages", "vim")], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    let interrupted = false;
    const exited = new Promise<number | null>((resolve) => child.on("close", resolve));
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
      // Interrupt once the build is being followed: one Ctrl-C (a second one kills at once).
      if (!interrupted && /no event stream|queued|building/.test(stderr)) {
        interrupted = true;
        child.kill("SIGINT");
      }
    });
    expect(await exited).toBe(130);
    expect(stderr).toContain("asu: interrupted");
    expect(await readdir(out)).toEqual([]);
  });

  it("exits 3 and shows the detail when the build fails", async () => {
    const out = await mkdtemp(path.join(tmpdir(), "asu-cli-fail-"));
    const res = await asu(...buildArgs(out, "--packages", "dnsmasq-full"));
    expect(res.code, res.stderr).toBe(3);
    expect(res.stderr).toContain(
      "asu: The build failed: Error: Impossible package selection: conflicts (dnsmasq, dnsmasq-full)",
    );
    expect(await readdir(out)).toEqual([]);
  });

  it("exits 4 when the server cannot be reached", async () => {
    const port = await closedPort();
    const res = await asu(
      "build",
      "--server",
      `http://127.0.0.1:${port}`,
      "--version",
      "24.10.4",
      "--target",
      "ath79/generic",
      "--profile",
      "tplink,archer-c7-v5",
    );
    expect(res.code).toBe(4);
    expect(res.stderr).toContain(`asu: http://127.0.0.1:${port} cannot be reached: connect ECONNREFUSED`);
  });

  it("takes build --version as the OpenWrt version; the program's own version is asu --version", async () => {
    const own = await asu("--version");
    expect(own.code).toBe(0);
    expect(own.stdout.trim()).toBe(VERSION);
    // Without the server option the build command complains about that, not about --version.
    const res = await asu("build", "--version", "24.10.4", "--target", "ath79/generic", "--profile", "x");
    expect(res.code).toBe(2);
    expect(res.stdout).not.toContain(VERSION);
    expect(res.stderr).toContain("required option '-s, --server <url>' not specified");
  });
});

describe("asu profiles and asu packages", () => {
  it("profiles --search finds devices by profile, title or supported device name", async () => {
    const res = await asu(
      "profiles",
      "--server",
      stack.api.url,
      "--version",
      "24.10.4",
      "--target",
      "ath79/generic",
      "--search",
      "archer-c7",
    );
    expect(res.code, res.stderr).toBe(0);
    const ids = res.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(/\s+/)[0]);
    expect(ids).toEqual(["tplink_archer-c7-v2", "tplink_archer-c7-v5"]);
    expect(res.stdout).toMatch(
      /^tplink_archer-c7-v5\s+TP-Link Archer C7 v5\s+tplink,archer-c7-v5, archer-c7-v5$/m,
    );
  });

  it("packages --search lists matching names with versions, kmods included", async () => {
    const res = await asu(
      "packages",
      "--server",
      stack.api.url,
      "--version",
      "24.10.4",
      "--target",
      "ath79/generic",
      "--search",
      "wireguard",
    );
    expect(res.code, res.stderr).toBe(0);
    const names = res.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(/\s+/)[0]);
    expect(names).toContain("luci-proto-wireguard");
    expect(names).toContain("wireguard-tools");
    expect(names).toContain("kmod-wireguard");
    expect(names).not.toContain("luci-app-wireguard");
    expect(res.stdout).toMatch(/^kmod-wireguard\s+6\.6\.110-r1$/m);
  });

  it("says so, and exits 2, for a version the server does not build", async () => {
    const res = await asu(
      "packages",
      "--server",
      stack.api.url,
      "--version",
      "10.10.10",
      "--target",
      "ath79/generic",
    );
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^asu: Unknown version: 10\.10\.10\. This server builds .*24\.10\.4/m);
  });
});
