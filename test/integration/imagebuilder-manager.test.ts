import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile, symlink } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { BranchConfig } from "../../src/config/config.js";
import {
  ImageBuilderManager,
  type ImageBuilderManagerOptions,
  type ImageBuilderStage,
} from "../../src/imagebuilder/imagebuilder-manager.js";
import {
  ImageBuilderNotFoundError,
  ImageBuilderPrepareError,
  ImageBuilderUnavailableError,
  ImageBuilderVerificationError,
  isRetryable,
} from "../../src/imagebuilder/imagebuilder-errors.js";
import { ProcessRunner } from "../../src/imagebuilder/process-runner.js";
import { prepareImageBuilder } from "../../src/imagebuilder/prepare-imagebuilder.js";
import { NativeRunner } from "../../src/imagebuilder/runners/native-runner.js";
import { generateKeyPair, signMessage, type UsignKeyPair } from "../../src/shared/usign.js";

const VERSION = "23.05.5";
const TARGET = "ath79/generic";
const TOP = `openwrt-imagebuilder-${VERSION}-ath79-generic.Linux-x86_64`;
const ARCHIVE = `${TOP}.tar.zst`;
const DIR = `/releases/${VERSION}/targets/${TARGET}/`;

const processRunner = new ProcessRunner({ killGraceMs: 500 });

// --- a tiny download server ------------------------------------------------------------------

class FakeUpstream {
  readonly files = new Map<string, Buffer>();
  readonly requests = new Map<string, number>();
  private server = http.createServer((req, res) => {
    const url = req.url ?? "/";
    this.requests.set(url, (this.requests.get(url) ?? 0) + 1);
    const body = this.files.get(url);
    if (body === undefined) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  url = "";

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  count(file: string): number {
    return this.requests.get(`${DIR}${file}`) ?? 0;
  }

  /** Publishes an archive with a sha256sums (and a signature when a key is given). */
  publish(
    archive: Buffer,
    opts: { key?: UsignKeyPair; name?: string; dir?: string; sums?: string } = {},
  ): string {
    const name = opts.name ?? ARCHIVE;
    const dir = opts.dir ?? DIR;
    const sha256 = createHash("sha256").update(archive).digest("hex");
    const sums =
      opts.sums ??
      [
        `${"0".repeat(64)} *openwrt-${VERSION}-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin`,
        `${sha256} *${name}`,
        "",
      ].join("\n");
    this.files.set(`${dir}${name}`, archive);
    this.files.set(`${dir}sha256sums`, Buffer.from(sums));
    if (opts.key) this.files.set(`${dir}sha256sums.sig`, Buffer.from(signMessage(sums, opts.key.secretFile)));
    else this.files.delete(`${dir}sha256sums.sig`);
    return sha256;
  }
}

// --- archives ----------------------------------------------------------------------------------

async function run(argv: string[], cwd?: string): Promise<void> {
  const result = await processRunner.run({
    argv,
    env: { PATH: "/usr/bin:/bin" },
    timeoutMs: 60_000,
    maxOutputBytes: 65536,
    ...(cwd ? { cwd } : {}),
  });
  if (result.code !== 0) throw new Error(`${argv.join(" ")} failed: ${result.stderr}`);
}

/** A stand-in ImageBuilder, packed with the system tar. */
async function buildArchive(
  work: string,
  marker: string,
  compression: "zst" | "xz" = "zst",
  makefile = `info:\n\techo ${marker}\n`,
): Promise<Buffer> {
  const src = await mkdtemp(path.join(work, "src-"));
  const top = path.join(src, TOP);
  await mkdir(path.join(top, "include"), { recursive: true });
  await mkdir(path.join(top, "staging_dir", "host", "bin"), { recursive: true });
  await writeFile(path.join(top, "Makefile"), makefile);
  await mkdir(path.join(top, "packages"));
  await writeFile(path.join(top, "include", "rules.mk"), "# rules\n");
  await writeFile(
    path.join(top, "repositories.conf"),
    [
      `src/gz openwrt_core https://downloads.openwrt.org/releases/${VERSION}/targets/${TARGET}/packages`,
      `src/gz openwrt_base http://downloads.openwrt.org/releases/${VERSION}/packages/mips_24kc/base`,
      "src/gz other https://downloads.openwrt.org.example.com/x",
      "src imagebuilder file:packages",
      "",
    ].join("\n"),
  );
  await writeFile(
    path.join(top, "repositories"),
    `https://downloads.openwrt.org/snapshots/targets/${TARGET}/packages/packages.adb\n`,
  );
  await symlink("/usr/bin/find", path.join(top, "staging_dir", "host", "bin", "find"));
  await writeFile(path.join(top, "staging_dir", "host", "bin", "tool"), "#!/bin/sh\n", { mode: 0o755 });
  const out = path.join(work, `ib-${marker}.tar.${compression}`);
  await run(["tar", compression === "zst" ? "--zstd" : "--xz", "-cf", out, "-C", src, TOP]);
  return readFile(out);
}

interface TarMember {
  name: string;
  type: "file" | "dir" | "symlink" | "hardlink" | "fifo";
  body?: string;
  link?: string;
}

/** A hand-made ustar archive, for members GNU tar would not create (absolute, "..", ...). */
async function craftArchive(work: string, members: TarMember[]): Promise<Buffer> {
  const blocks: Buffer[] = [];
  for (const m of members) {
    const body = Buffer.from(m.body ?? "");
    const header = Buffer.alloc(512);
    const put = (text: string, offset: number, length: number) =>
      header.write(text, offset, length, "latin1");
    const octal = (n: number, length: number) => n.toString(8).padStart(length - 1, "0");
    put(m.name, 0, 100);
    put(octal(m.type === "dir" ? 0o755 : 0o644, 8), 100, 8);
    put(octal(0, 8), 108, 8);
    put(octal(0, 8), 116, 8);
    put(octal(m.type === "file" ? body.length : 0, 12), 124, 12);
    put(octal(1_700_000_000, 12), 136, 12);
    put(" ".repeat(8), 148, 8);
    put({ file: "0", hardlink: "1", symlink: "2", fifo: "6", dir: "5" }[m.type], 156, 1);
    put(m.link ?? "", 157, 100);
    put("ustar\u000000", 257, 8);
    let sum = 0;
    for (const byte of header) sum += byte;
    put(`${octal(sum, 7)}\u0000 `, 148, 8);
    blocks.push(header);
    if (m.type === "file") {
      blocks.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  const tarFile = path.join(work, `crafted-${Date.now()}-${Math.random()}.tar`);
  await writeFile(tarFile, Buffer.concat(blocks));
  await run(["zstd", "-q", "-f", tarFile, "-o", `${tarFile}.zst`]);
  return readFile(`${tarFile}.zst`);
}

// --- the tests ---------------------------------------------------------------------------------

function branch(pubkey?: string, over: Partial<BranchConfig> = {}): BranchConfig {
  return {
    name: "23.05",
    path: "releases/{version}",
    path_packages: "releases/{version}/packages",
    enabled: true,
    snapshot: false,
    package_changes: [],
    package_manager: "opkg",
    ...(pubkey !== undefined ? { pubkey } : {}),
    ...over,
  };
}

describe("ImageBuilderManager", () => {
  let work: string;
  let cacheDir: string;
  let upstream: FakeUpstream;
  let key: UsignKeyPair;
  let archiveV1: Buffer;
  let archiveV2: Buffer;
  let infos: string[];
  let warnings: string[];

  function manager(over: Partial<ImageBuilderManagerOptions> = {}): ImageBuilderManager {
    return new ImageBuilderManager({
      cacheDir,
      upstreamUrl: upstream.url,
      requireSignatures: false,
      logger: { info: (_f, m) => infos.push(m), warn: (_f, m) => warnings.push(m) },
      processRunner,
      checkIntervalMs: 0,
      ...over,
    });
  }

  async function cacheListing(): Promise<string[]> {
    const keyDir = path.join(cacheDir, "imagebuilders", VERSION, "ath79_generic");
    return existsSync(keyDir) ? (await readdir(keyDir)).sort() : [];
  }

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "asu-ibm-"));
    key = generateKeyPair("test");
    archiveV1 = await buildArchive(work, "v1");
    archiveV2 = await buildArchive(work, "v2");
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  beforeEach(async () => {
    cacheDir = await mkdtemp(path.join(work, "cache-"));
    upstream = new FakeUpstream();
    await upstream.start();
    infos = [];
    warnings = [];
  });

  afterEach(async () => {
    await upstream.stop();
  });

  it("downloads, verifies and unpacks once, then reuses the tree", async () => {
    const sha256 = upstream.publish(archiveV1, { key });
    const ibm = manager();
    const stages: ImageBuilderStage[] = [];
    const lease = await ibm.acquire({
      version: VERSION,
      target: TARGET,
      branch: branch(key.publicLine),
      onStage: (s) => stages.push(s),
    });
    expect(stages).toEqual(["download_imagebuilder", "unpack_imagebuilder"]);
    const revisionKey = createHash("sha256").update(`${sha256} *${ARCHIVE}`).digest("hex").slice(0, 16);
    expect(lease).toMatchObject({
      root: path.join(cacheDir, "imagebuilders", VERSION, "ath79_generic", revisionKey, TOP),
      revisionKey,
      archiveName: ARCHIVE,
    });
    expect(await readFile(path.join(lease.root, "Makefile"), "utf8")).toBe("info:\n\techo v1\n");
    expect(await readlink(path.join(lease.root, "staging_dir", "host", "bin", "find"))).toBe("/usr/bin/find");
    expect((await lstat(path.join(lease.root, "staging_dir", "host", "bin", "tool"))).mode & 0o777).toBe(
      0o755,
    );
    expect(upstream.count(ARCHIVE)).toBe(1);
    expect(warnings).toEqual([]);

    const stagesAgain: ImageBuilderStage[] = [];
    const again = await ibm.acquire({
      version: VERSION,
      target: TARGET,
      branch: branch(key.publicLine),
      onStage: (s) => stagesAgain.push(s),
    });
    expect(again.root).toBe(lease.root);
    expect(stagesAgain).toEqual([]);
    expect(upstream.count(ARCHIVE)).toBe(1);
    expect(upstream.count("sha256sums")).toBe(2);
    expect(ibm.activeLeases()).toEqual({ [path.dirname(lease.root)]: 2 });

    // A fresh manager (a restarted server) finds the tree on disk.
    const restarted = manager();
    const third = await restarted.acquire({
      version: VERSION,
      target: TARGET,
      branch: branch(key.publicLine),
    });
    expect(third.root).toBe(lease.root);
    expect(upstream.count(ARCHIVE)).toBe(1);
    for (const l of [lease, again, third]) await l.release();
    expect(ibm.activeLeases()).toEqual({});
    expect(await readdir(path.join(path.dirname(lease.root), ".leases"))).toEqual([]);
  });

  it("hands out a tree that builds in the sandbox with the cache hidden", async () => {
    upstream.publish(archiveV1, { key });
    const lease = await manager().acquire({
      version: VERSION,
      target: TARGET,
      branch: branch(key.publicLine),
    });
    const runner = new NativeRunner({ processRunner, hiddenPaths: [cacheDir] });
    const ws = await runner.createWorkspace(lease.root, {});
    try {
      expect(path.dirname(ws.root)).toBe(path.join(path.dirname(lease.root), "workspaces"));
      const result = await runner.run(ws, {
        args: ["make", "-s", "info"],
        timeoutMs: 30_000,
        maxOutputBytes: 65536,
      });
      expect(result).toMatchObject({ code: 0, stdout: "v1\n", stderr: "" });
    } finally {
      await ws.dispose();
      await lease.release();
    }
  });

  it("re-reads sha256sums at most every checkIntervalMs", async () => {
    upstream.publish(archiveV1, { key });
    const ibm = manager({ checkIntervalMs: 60_000 });
    const a = await ibm.acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) });
    const b = await ibm.acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) });
    expect(b.root).toBe(a.root);
    expect(upstream.count("sha256sums")).toBe(1);
    expect(upstream.count("sha256sums.sig")).toBe(1);
  });

  it("re-reads sha256sums at once when asked to refresh, and installs the newer ImageBuilder (issue #11)", async () => {
    upstream.publish(archiveV1, { key });
    const ibm = manager({ checkIntervalMs: 60_000 });
    const req = { version: VERSION, target: TARGET, branch: branch(key.publicLine) };
    const old = await ibm.acquire(req);
    await old.release();
    upstream.publish(archiveV2, { key });
    const cached = await ibm.acquire(req);
    expect(cached.revisionKey).toBe(old.revisionKey);
    await cached.release();
    const fresh = await ibm.acquire({ ...req, refresh: true });
    expect(upstream.count("sha256sums")).toBe(2);
    expect(fresh.revisionKey).not.toBe(old.revisionKey);
    expect(await readFile(path.join(fresh.root, "Makefile"), "utf8")).toBe("info:\n\techo v2\n");
    await fresh.release();
  });

  it("rewrites the package feeds to upstream_url", async () => {
    upstream.publish(archiveV1, { key });
    const lease = await manager().acquire({
      version: VERSION,
      target: TARGET,
      branch: branch(key.publicLine),
    });
    expect(await readFile(path.join(lease.root, "repositories.conf"), "utf8")).toBe(
      [
        `src/gz openwrt_core ${upstream.url}/releases/${VERSION}/targets/${TARGET}/packages`,
        `src/gz openwrt_base ${upstream.url}/releases/${VERSION}/packages/mips_24kc/base`,
        "src/gz other https://downloads.openwrt.org.example.com/x",
        "src imagebuilder file:packages",
        "",
      ].join("\n"),
    );
    expect(await readFile(path.join(lease.root, "repositories"), "utf8")).toBe(
      `${upstream.url}/snapshots/targets/${TARGET}/packages/packages.adb\n`,
    );
  });

  it("downloads once for concurrent acquires in one process", async () => {
    upstream.publish(archiveV1, { key });
    const ibm = manager();
    const stages: ImageBuilderStage[][] = [[], [], [], [], []];
    const leases = await Promise.all(
      stages.map((list) =>
        ibm.acquire({
          version: VERSION,
          target: TARGET,
          branch: branch(key.publicLine),
          onStage: (s) => list.push(s),
        }),
      ),
    );
    expect(new Set(leases.map((l) => l.root)).size).toBe(1);
    expect(upstream.count(ARCHIVE)).toBe(1);
    // Everyone who waited for the download heard about it.
    for (const list of stages) expect(list).toEqual(["download_imagebuilder", "unpack_imagebuilder"]);
  });

  it("downloads once for concurrent acquires from two processes (file lock)", async () => {
    upstream.publish(archiveV1, { key });
    const [a, b] = await Promise.all([
      manager().acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) }),
      manager().acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) }),
    ]);
    expect(a.root).toBe(b.root);
    expect(upstream.count(ARCHIVE)).toBe(1);
    expect(existsSync(path.join(cacheDir, "imagebuilders", VERSION, "ath79_generic.lock"))).toBe(false);
  });

  it("unpacks .tar.xz archives and snapshot paths", async () => {
    const xz = await buildArchive(work, "xz", "xz");
    const name = "openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.xz";
    upstream.publish(xz, { key, name, dir: `/snapshots/targets/${TARGET}/` });
    const lease = await manager().acquire({
      version: "SNAPSHOT",
      target: TARGET,
      branch: branch(key.publicLine, { name: "SNAPSHOT", path: "snapshots", snapshot: true }),
    });
    expect(lease.archiveName).toBe(name);
    expect(await readFile(path.join(lease.root, "Makefile"), "utf8")).toBe("info:\n\techo xz\n");
    expect(upstream.requests.get(`/snapshots/targets/${TARGET}/${name}`)).toBe(1);
  });

  it("refuses an archive whose sha256 does not match, and keeps nothing", async () => {
    const sha256 = upstream.publish(archiveV1, { key });
    upstream.files.set(`${DIR}${ARCHIVE}`, archiveV2);
    const actual = createHash("sha256").update(archiveV2).digest("hex");
    const err = await manager()
      .acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageBuilderVerificationError);
    expect((err as ImageBuilderVerificationError).detail).toBe(
      `sha256 mismatch for ${ARCHIVE}: sha256sums says ${sha256}, the download has ${actual}`,
    );
    expect(isRetryable(err)).toBe(false);
    expect(await cacheListing()).toEqual([]);
  });

  it("refuses a sha256sums signed by another key", async () => {
    upstream.publish(archiveV1, { key });
    const other = generateKeyPair("other");
    const err = await manager()
      .acquire({ version: VERSION, target: TARGET, branch: branch(other.publicLine) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageBuilderVerificationError);
    expect((err as ImageBuilderVerificationError).detail).toBe(
      `the signature ${upstream.url}${DIR}sha256sums.sig does not verify with branches.23.05.pubkey ` +
        `(signed by key ${key.keyIdHex}, but the configured key is ${other.keyIdHex}); refusing the ImageBuilder`,
    );
    expect(upstream.count(ARCHIVE)).toBe(0);
  });

  it("refuses a sha256sums that was changed after signing", async () => {
    upstream.publish(archiveV1, { key });
    const sums = upstream.files.get(`${DIR}sha256sums`) as Buffer;
    upstream.files.set(`${DIR}sha256sums`, Buffer.concat([sums, Buffer.from(`${"1".repeat(64)} *extra\n`)]));
    const err = await manager()
      .acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) })
      .catch((e: unknown) => e);
    expect((err as ImageBuilderVerificationError).detail).toBe(
      `the signature ${upstream.url}${DIR}sha256sums.sig does not verify with branches.23.05.pubkey ` +
        "(signature does not match the signed file); refusing the ImageBuilder",
    );
    expect(isRetryable(err)).toBe(false);
  });

  it("refuses a missing signature when the branch has a pubkey", async () => {
    upstream.publish(archiveV1);
    const err = await manager()
      .acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageBuilderVerificationError);
    expect((err as ImageBuilderVerificationError).detail).toBe(
      `${upstream.url}${DIR}sha256sums.sig is missing, but branches.23.05.pubkey is set; refusing an unsigned sha256sums`,
    );
  });

  it("refuses a branch without pubkey when signatures are required, before any download", async () => {
    upstream.publish(archiveV1, { key });
    const err = await manager({ requireSignatures: true })
      .acquire({ version: VERSION, target: TARGET, branch: branch() })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageBuilderVerificationError);
    expect((err as ImageBuilderVerificationError).detail).toBe(
      'branch "23.05" has no pubkey, and require_signatures is on: set branches.23.05.pubkey to the usign public ' +
        `key that signs ${upstream.url}${DIR}sha256sums`,
    );
    expect(upstream.requests.size).toBe(0);
  });

  it("trusts sha256sums with a warning when the branch has no pubkey", async () => {
    upstream.publish(archiveV1);
    const lease = await manager().acquire({ version: VERSION, target: TARGET, branch: branch() });
    expect(await readFile(path.join(lease.root, "Makefile"), "utf8")).toBe("info:\n\techo v1\n");
    expect(warnings).toEqual([
      `branch "23.05" has no pubkey: trusting ${upstream.url}${DIR}sha256sums without a signature check`,
    ]);
    expect(upstream.count("sha256sums.sig")).toBe(0);
  });

  it("switches to a new tree when sha256sums changes; the old one lives until its lease is released", async () => {
    upstream.publish(archiveV1, { key });
    const ibm = manager();
    const old = await ibm.acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) });
    upstream.publish(archiveV2, { key });
    const stages: ImageBuilderStage[] = [];
    const fresh = await ibm.acquire({
      version: VERSION,
      target: TARGET,
      branch: branch(key.publicLine),
      onStage: (s) => stages.push(s),
    });
    expect(stages).toEqual(["download_imagebuilder", "unpack_imagebuilder"]);
    expect(fresh.revisionKey).not.toBe(old.revisionKey);
    expect(await readFile(path.join(fresh.root, "Makefile"), "utf8")).toBe("info:\n\techo v2\n");
    // The running build keeps its tree.
    expect(await readFile(path.join(old.root, "Makefile"), "utf8")).toBe("info:\n\techo v1\n");
    expect(await ibm.gc()).toEqual([]);
    await old.release();
    expect(existsSync(old.root)).toBe(false);
    expect(await cacheListing()).toEqual([fresh.revisionKey]);
    expect(infos).toContain(`removed unused ImageBuilder ${path.dirname(old.root)}`);
    // The newest tree stays after its last lease is gone.
    await fresh.release();
    expect(existsSync(fresh.root)).toBe(true);
    expect(await ibm.gc()).toEqual([]);
  });

  it("keeps an old tree leased by another process, and collects it once that process is gone", async () => {
    upstream.publish(archiveV1, { key });
    const other = manager();
    const old = await other.acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) });
    upstream.publish(archiveV2, { key });
    const ibm = manager();
    await ibm.acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) });
    expect(await ibm.gc()).toEqual([]);
    expect(existsSync(old.root)).toBe(true);
    // Simulate the holder dying: rewrite its marker with the pid of a process that has exited.
    const leaseDir = path.join(path.dirname(old.root), ".leases");
    const [marker] = await readdir(leaseDir);
    await writeFile(
      path.join(leaseDir, marker as string),
      JSON.stringify({ hostname: os.hostname(), pid: 2 ** 22 + 1, createdAt: Date.now() }),
    );
    const fakeLease = path.join(leaseDir, "otherhost-1-abc");
    await writeFile(
      fakeLease,
      JSON.stringify({ hostname: os.hostname(), pid: 2 ** 22 + 1, createdAt: Date.now() }),
    );
    // `other` still counts it in memory: a different manager (process) must decide.
    expect(await ibm.gc()).toEqual([path.dirname(old.root)]);
    expect(existsSync(old.root)).toBe(false);
    expect(warnings.filter((w) => w.startsWith("removing the stale ImageBuilder lease"))).toHaveLength(2);
  });

  it.each<[string, TarMember[], string]>([
    [
      "a ../ path",
      [
        { name: `${TOP}/`, type: "dir" },
        { name: "../evil", type: "file", body: "x" },
      ],
      '".." in path "../evil"',
    ],
    [
      "an absolute path",
      [
        { name: `${TOP}/`, type: "dir" },
        { name: "/tmp/asu-evil-absolute", type: "file", body: "x" },
      ],
      'absolute path "/tmp/asu-evil-absolute"',
    ],
    [
      "a symlink to /etc and a file through it",
      [
        { name: `${TOP}/`, type: "dir" },
        { name: `${TOP}/etc`, type: "symlink", link: "/etc" },
        { name: `${TOP}/etc/asu-evil`, type: "file", body: "x" },
      ],
      `symlink "${TOP}/etc" points outside the ImageBuilder ("/etc")`,
    ],
    [
      "a file written through an allowed host-tool symlink",
      [
        { name: `${TOP}/`, type: "dir" },
        { name: `${TOP}/staging_dir/host/bin/`, type: "dir" },
        { name: `${TOP}/staging_dir/host/bin/tools`, type: "symlink", link: "/usr/bin" },
        { name: `${TOP}/staging_dir/host/bin/tools/asu-evil`, type: "file", body: "x" },
      ],
      `"${TOP}/staging_dir/host/bin/tools/asu-evil" would be written through the symlink "${TOP}/staging_dir/host/bin/tools"`,
    ],
    [
      "a symlink out of the tree",
      [
        { name: `${TOP}/`, type: "dir" },
        { name: `${TOP}/up`, type: "symlink", link: "../../.." },
      ],
      `symlink "${TOP}/up" points outside the ImageBuilder ("../../..")`,
    ],
    [
      "a hardlink to /etc/passwd",
      [
        { name: `${TOP}/`, type: "dir" },
        { name: `${TOP}/passwd`, type: "hardlink", link: "/etc/passwd" },
      ],
      // GNU tar lists the target without its leading "/".
      `hardlink "${TOP}/passwd" points outside the ImageBuilder ("etc/passwd")`,
    ],
    [
      "a fifo",
      [
        { name: `${TOP}/`, type: "dir" },
        { name: `${TOP}/fifo`, type: "fifo" },
      ],
      `special file "${TOP}/fifo" (type "p")`,
    ],
  ])("refuses an archive with %s and writes nothing", async (_what, members, reason) => {
    const evil = await craftArchive(work, members);
    upstream.publish(evil, { key });
    const err = await manager()
      .acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageBuilderVerificationError);
    expect((err as ImageBuilderVerificationError).detail).toBe(
      `unsafe ImageBuilder archive ${ARCHIVE}: ${reason}`,
    );
    expect(isRetryable(err)).toBe(false);
    expect(await cacheListing()).toEqual([]);
    expect(existsSync("/tmp/asu-evil-absolute")).toBe(false);
    expect(existsSync("/etc/asu-evil")).toBe(false);
    expect(existsSync("/usr/bin/asu-evil")).toBe(false);
    expect(existsSync(path.join(cacheDir, "imagebuilders", VERSION, "evil"))).toBe(false);
  });

  it("reports network failures as retryable and a missing ImageBuilder as not retryable", async () => {
    const closed = new FakeUpstream();
    await closed.start();
    await closed.stop();
    const port = new URL(closed.url).port;
    const down = manager({ upstreamUrl: closed.url });
    const err = await down
      .acquire({ version: VERSION, target: TARGET, branch: branch() })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageBuilderUnavailableError);
    expect((err as ImageBuilderUnavailableError).detail).toBe(
      `could not fetch ${closed.url}${DIR}sha256sums: fetch failed: connect ECONNREFUSED 127.0.0.1:${port}`,
    );
    expect(isRetryable(err)).toBe(true);

    const missing = await manager()
      .acquire({ version: VERSION, target: TARGET, branch: branch() })
      .catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ImageBuilderNotFoundError);
    expect((missing as ImageBuilderNotFoundError).detail).toBe(
      `${upstream.url}${DIR}sha256sums was not found (HTTP 404)`,
    );
    expect(isRetryable(missing)).toBe(false);

    upstream.publish(archiveV1, { sums: `${"a".repeat(64)} *openwrt-sdk.tar.xz\n` });
    const noIb = await manager()
      .acquire({ version: VERSION, target: TARGET, branch: branch() })
      .catch((e: unknown) => e);
    expect((noIb as ImageBuilderNotFoundError).detail).toBe(
      `${upstream.url}${DIR}sha256sums lists no ImageBuilder (openwrt-imagebuilder-*.Linux-x86_64.tar.zst or .tar.xz)`,
    );
  });

  it("retries a vanished archive after re-reading sha256sums", async () => {
    upstream.publish(archiveV1, { key });
    upstream.files.delete(`${DIR}${ARCHIVE}`);
    const ibm = manager({ checkIntervalMs: 60_000 });
    const err = await ibm
      .acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) })
      .catch((e: unknown) => e);
    expect((err as ImageBuilderUnavailableError).detail).toBe(
      `could not download ${upstream.url}${DIR}${ARCHIVE}: HTTP 404`,
    );
    expect(isRetryable(err)).toBe(true);
    upstream.publish(archiveV2, { key });
    const lease = await ibm.acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) });
    expect(await readFile(path.join(lease.root, "Makefile"), "utf8")).toBe("info:\n\techo v2\n");
  });

  it("refuses versions and targets that could change a path", async () => {
    const ibm = manager();
    await expect(ibm.acquire({ version: "../x", target: TARGET, branch: branch() })).rejects.toThrow(
      '"../x" is not a valid version',
    );
    await expect(ibm.acquire({ version: VERSION, target: "ath79/../..", branch: branch() })).rejects.toThrow(
      '"ath79/../.." is not a valid target (expected "target/subtarget")',
    );
    expect(upstream.requests.size).toBe(0);
  });

  describe("first-run preparation (issue #8)", () => {
    // OpenWrt's rules, reduced to what they leave behind; each also records that it ran.
    const PREPARING = [
      "info:",
      "\techo prepared",
      "staging_dir/host/.prereq-build: include/rules.mk",
      "\techo prereq >> runs.log; id -u > staging_dir/host/.prereq-build",
      "_check_keys:",
      "\techo keys >> runs.log; test -s key-build || echo secret > key-build",
      "package_index:",
      "\techo index >> runs.log; echo 'Package: base-files' > packages/Packages",
      "",
    ].join("\n");

    function preparing(runner: NativeRunner, calls: string[]): Partial<ImageBuilderManagerOptions> {
      return {
        prepare: async (tree) => {
          calls.push(tree);
          await prepareImageBuilder(runner, tree, { timeoutMs: 60_000 });
        },
      };
    }

    it("runs the prerequisite check, key generation and package index once, sandboxed, before any lease", async () => {
      const archive = await buildArchive(work, "prep", "zst", PREPARING);
      upstream.publish(archive, { key });
      const runner = new NativeRunner({ processRunner, hiddenPaths: [] });
      const calls: string[] = [];
      const first = await manager(preparing(runner, calls)).acquire({
        version: VERSION,
        target: TARGET,
        branch: branch(key.publicLine),
      });
      expect(await readFile(path.join(first.root, "runs.log"), "utf8")).toBe("prereq\nkeys\nindex\n");
      // Ran inside the sandbox: no capabilities, but the tree was writable.
      expect((await readFile(path.join(first.root, "staging_dir/host/.prereq-build"), "utf8")).trim()).toBe(
        "0",
      );
      expect(await readFile(path.join(first.root, "key-build"), "utf8")).toBe("secret\n");
      expect(await readFile(path.join(first.root, "packages/Packages"), "utf8")).toBe(
        "Package: base-files\n",
      );
      const second = await manager(preparing(runner, calls)).acquire({
        version: VERSION,
        target: TARGET,
        branch: branch(key.publicLine),
      });
      expect(second.root).toBe(first.root);
      expect(calls).toHaveLength(1);
      // A workspace copy does not redo the check: make sees the stamp newer than its input.
      const ws = await runner.createWorkspace(first.root, {});
      try {
        const again = await runner.run(ws, {
          args: ["make", "-s", "staging_dir/host/.prereq-build"],
          timeoutMs: 30_000,
          maxOutputBytes: 65536,
        });
        expect(again.code).toBe(0);
        expect(await readFile(path.join(ws.dir, "runs.log"), "utf8")).toBe("prereq\nkeys\nindex\n");
      } finally {
        await ws.dispose();
        await first.release();
        await second.release();
      }
    });

    it("a failing prerequisite check installs nothing and names what is missing, for the operator", async () => {
      const failing = [
        "info:",
        "\techo never",
        "staging_dir/host/.prereq-build: include/rules.mk",
        "\t@echo \"Checking 'perl-ipc-cmd'... failed.\"; echo 'Prerequisite check failed. Use FORCE=1 to override.'; false",
        "",
      ].join("\n");
      upstream.publish(await buildArchive(work, "noprereq", "zst", failing), { key });
      const runner = new NativeRunner({ processRunner, hiddenPaths: [] });
      const calls: string[] = [];
      const err = await manager(preparing(runner, calls))
        .acquire({ version: VERSION, target: TARGET, branch: branch(key.publicLine) })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ImageBuilderPrepareError);
      expect(isRetryable(err)).toBe(false);
      expect((err as ImageBuilderPrepareError).detail).toContain("Checking 'perl-ipc-cmd'... failed.");
      expect((err as ImageBuilderPrepareError).detail).toContain(
        "host prerequisite check failed on this server",
      );
      expect(warnings.join("\n")).toContain("Checking 'perl-ipc-cmd'... failed.");
      // Nothing half-prepared is left for a build to use.
      expect((await cacheListing()).filter((e) => !e.startsWith(".") && e !== "workspaces")).toEqual([]);
    });
  });
});
