/**
 * The real OpenWrt host tools that globalSetup compiled: each one runs and does its actual job
 * (signatures that verify and fail when tampered with, hashes equal to node:crypto's, ...).
 */
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile, appendFile, mkdir, copyFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ensureRealTools, REAL_TOOL_NAMES } from "../../fixtures/real-tools/real-tools.js";
import { ProcessRunner, type RunResult } from "../../src/imagebuilder/process-runner.js";

const hostDir = inject("realToolsDir");
const bin = (name: string): string => path.join(hostDir, "bin", name);
const runner = new ProcessRunner();
let work: string;

/** Runs a tool with only the tools folder and the system on PATH (ucert calls `usign` from PATH). */
function run(argv: string[]): Promise<RunResult> {
  return runner.run({
    argv,
    cwd: work,
    env: { PATH: `${path.join(hostDir, "bin")}:/usr/bin:/bin`, HOME: work, LC_ALL: "C" },
    timeoutMs: 30_000,
    maxOutputBytes: 256 * 1024,
  });
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "asu-real-tools-"));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("real OpenWrt host tools", () => {
  it("globalSetup provides a folder with every tool, executable", async () => {
    for (const name of REAL_TOOL_NAMES) {
      const st = await stat(bin(name));
      expect(st.isFile(), name).toBe(true);
      expect(st.mode & 0o111, name).not.toBe(0);
    }
    expect(process.env.ASU_REAL_TOOLS_DIR).toBe(hostDir);
  });

  it("usign: -G, -S and -V round trip; -V rejects a tampered file", async () => {
    const gen = await run([bin("usign"), "-G", "-s", "key.sec", "-p", "key.pub", "-c", "asu test key"]);
    expect(gen.code, gen.stderr).toBe(0);
    expect(await readFile(path.join(work, "key.pub"), "utf8")).toMatch(/^untrusted comment: asu test key\n/);

    await writeFile(path.join(work, "Packages"), "Package: hello\nVersion: 1.0\n");
    const sign = await run([bin("usign"), "-S", "-m", "Packages", "-s", "key.sec"]);
    expect(sign.code, sign.stderr).toBe(0);
    // -S writes <message>.sig unless -x names another file, as opkg feeds expect (Packages.sig).
    expect(await readFile(path.join(work, "Packages.sig"), "utf8")).toMatch(/^untrusted comment: /);

    const verify = await run([bin("usign"), "-V", "-m", "Packages", "-p", "key.pub"]);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stderr).toContain("OK");

    await appendFile(path.join(work, "Packages"), "Package: evil\n");
    const tampered = await run([bin("usign"), "-V", "-m", "Packages", "-p", "key.pub"]);
    expect(tampered.code).not.toBe(0);
    expect(tampered.stderr).toContain("verification failed");
  });

  it("ucert is the full build: -I issues a certificate, -A appends a signature, -V checks the chain", async () => {
    const usage = await run([bin("ucert")]);
    expect(usage.stderr).toMatch(/-A:\s+append signature/);
    expect(usage.stderr).toMatch(/-I:\s+issue cert/);

    expect((await run([bin("usign"), "-G", "-s", "root.sec", "-p", "root.pub"])).code).toBe(0);
    expect((await run([bin("usign"), "-G", "-s", "build.sec", "-p", "build.pub"])).code).toBe(0);
    const issue = await run([bin("ucert"), "-I", "-c", "build.ucert", "-p", "build.pub", "-s", "root.sec"]);
    expect(issue.code, issue.stderr).toBe(0);

    await writeFile(path.join(work, "firmware.bin"), Buffer.alloc(4096, 0x5a));
    expect(
      (await run([bin("usign"), "-S", "-m", "firmware.bin", "-s", "build.sec", "-x", "firmware.sig"])).code,
    ).toBe(0);
    // Exits 1 even on success (upstream write_file() returns true); image-commands.mk ignores
    // its status, so we check the result instead: the chain below verifies.
    await run([bin("ucert"), "-A", "-c", "build.ucert", "-x", "firmware.sig"]);

    const fingerprint = (await run([bin("usign"), "-F", "-p", "root.pub"])).stdout.trim();
    expect(fingerprint).toMatch(/^[0-9a-f]{16}$/);
    await mkdir(path.join(work, "trusted"));
    await copyFile(path.join(work, "root.pub"), path.join(work, "trusted", fingerprint));

    const ok = await run([bin("ucert"), "-V", "-m", "firmware.bin", "-c", "build.ucert", "-P", "trusted"]);
    expect(ok.code, ok.stderr).toBe(0);
    await appendFile(path.join(work, "firmware.bin"), "x");
    const bad = await run([bin("ucert"), "-V", "-m", "firmware.bin", "-c", "build.ucert", "-P", "trusted"]);
    expect(bad.code).not.toBe(0);
  });

  it("opkg prints its version and usage", async () => {
    const version = await run([bin("opkg"), "--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^opkg version [0-9a-f]{12}\b/);

    const usage = await run([bin("opkg")]);
    const text = usage.stdout + usage.stderr;
    expect(text).toContain("usage: opkg [options...] sub-command [arguments...]");
    expect(text).toContain("--offline-root");
  });

  it("apk --version reports 3.0.6", async () => {
    const version = await run([bin("apk"), "--version"]);
    expect(version.code).toBe(0);
    expect(version.stdout).toMatch(/^apk-tools 3\.0\.6,/);
  });

  it("fwtool prints usage and round-trips metadata through an image", async () => {
    const usage = await run([bin("fwtool")]);
    expect(usage.code).not.toBe(0);
    // fwtool prints its argv[0], here the full path.
    expect(usage.stderr).toMatch(/Usage: \S*\/fwtool <options> <firmware>/);
    expect(usage.stderr).toMatch(/-I <file>:\s+Append metadata file to firmware image/);

    const metadata = JSON.stringify({
      supported_devices: ["tplink,archer-c7-v5"],
      version: { dist: "OpenWrt" },
    });
    await writeFile(path.join(work, "image.bin"), Buffer.alloc(8192, 0xa5));
    await writeFile(path.join(work, "metadata.json"), metadata);
    expect((await run([bin("fwtool"), "-I", "metadata.json", "image.bin"])).code).toBe(0);
    const extract = await run([bin("fwtool"), "-i", "out.json", "image.bin"]);
    expect(extract.code, extract.stderr).toBe(0);
    expect(await readFile(path.join(work, "out.json"), "utf8")).toBe(metadata);
  });

  it("mkhash sha256 equals node:crypto's", async () => {
    const text = "OpenWrt attended sysupgrade\n";
    await writeFile(path.join(work, "hash-me.txt"), text);
    const result = await run([bin("mkhash"), "sha256", "hash-me.txt"]);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(createHash("sha256").update(text).digest("hex"));
  });

  it("padjffs2 prints its usage", async () => {
    const usage = await run([bin("padjffs2")]);
    expect(usage.stdout + usage.stderr).toContain("Usage: padjffs2 file");
  });

  it("a second ensureRealTools() is a cache hit with the same folder", async () => {
    const lines: string[] = [];
    const again = await ensureRealTools({ log: (line) => lines.push(line) });
    expect(again.hostDir).toBe(hostDir);
    expect(again.key).toMatch(/^[0-9a-f]{64}$/);
    expect(path.basename(again.hostDir)).toBe(again.key.slice(0, 16));
    // The build path always logs before it starts the script; a hit runs nothing.
    expect(lines).toEqual([]);
  });
});
