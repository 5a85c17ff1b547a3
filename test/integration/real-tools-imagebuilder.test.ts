import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, type ExpectStatic, it } from "vitest";
import { spawnSync } from "node:child_process";
import { startMirrorServer, type MirrorServer } from "../../fixtures/mirror/mirror-server.js";
import type { CommandResult } from "../../fixtures/real-tools/command-runner.js";
import type { RealToolsMirrorInfo } from "../../fixtures/real-tools/generate-real-mirror.js";
import { ensureRealToolsMirror } from "../../fixtures/real-tools/real-mirror-cache.js";
import {
  addRepository,
  pointRepositoriesAt,
  runImageBuilderMake,
  unpackRealImageBuilder,
} from "../../fixtures/real-tools/real-imagebuilder-kit.js";
import { checkArchiveEntries, parseTarListing } from "../../src/imagebuilder/archive-listing.js";
import { findImageBuilderArchive } from "../../src/imagebuilder/sha256sums.js";
import { verifyMessage } from "../../src/shared/usign.js";

/**
 * OpenWrt's real ImageBuilder flow (its Makefile, include/, scripts/) with real opkg and apk,
 * driven by hand as the server will: unpack, point the repositories at the loopback mirror,
 * then `make info`, `make manifest`, `make image`. Expected texts are the tools' own words,
 * as recorded in ../shared/third_party/openwrt-imagebuilder/FINDINGS.md.
 *
 * One ImageBuilder runs one make at a time (TARGET_DIR, tmp/ and keys are shared), so the three
 * ImageBuilders each have a queue, and the queues run side by side.
 */

const TOOLS = process.env.ASU_REAL_TOOLS_DIR;
if (!TOOLS) {
  throw new Error(
    "ASU_REAL_TOOLS_DIR is not set: point it at the folder with the compiled opkg, usign, ucert, fwtool, " +
      "mkhash, padjffs2 and apk (see docs/real-tools-mirror.md). This test never skips.",
  );
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

interface ProfilesJson {
  version_code: string;
  version_number: string;
  target: string;
  arch_packages: string;
  linux_kernel: { version: string; release: string; vermagic: string };
  profiles: Record<
    string,
    {
      image_prefix: string;
      supported_devices: string[];
      device_packages: string[];
      titles: Record<string, string>[];
      images: { name: string; type: string; filesystem: string; sha256: string }[];
    }
  >;
}

class ImageBuilderUnderTest {
  dir = "";
  private queue: Promise<unknown> = Promise.resolve();
  constructor(
    readonly version: string,
    readonly target: string,
    readonly apk: boolean,
  ) {}

  /** Runs `fn` after every earlier job of this ImageBuilder. */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  make(args: string[]): Promise<CommandResult> {
    return runImageBuilderMake(this.dir, args, 300_000);
  }

  targetDir(): string {
    const board = this.target.split("/")[0] ?? "";
    const arch = board === "x86" ? "x86_64" : "mips_24kc";
    return path.join(this.dir, `build_dir/target-${arch}_musl/root-${board}`);
  }
}

let info: RealToolsMirrorInfo;
let server: MirrorServer;
let work: string;
let files: string;
const ib2410 = new ImageBuilderUnderTest("24.10.4", "ath79/generic", false);
const ib2305 = new ImageBuilderUnderTest("23.05.4", "x86/64", false);
const ibSnap = new ImageBuilderUnderTest("SNAPSHOT", "x86/64", true);

beforeAll(async () => {
  info = await ensureRealToolsMirror({ toolsHostDir: TOOLS });
  server = await startMirrorServer({ dir: info.dir });
  work = await mkdtemp(path.join(tmpdir(), "asu-real-ib-"));
  files = path.join(work, "files");
  await mkdir(path.join(files, "etc/uci-defaults"), { recursive: true });
  await writeFile(path.join(files, "etc/uci-defaults/99-asu-test"), "# from FILES\n");
  for (const ib of [ib2410, ib2305, ibSnap]) {
    const archive = path.join(
      info.dir,
      info.versions[ib.version]?.targets[ib.target]?.imagebuilder ?? "missing",
    );
    ib.dir = await unpackRealImageBuilder(archive, path.join(work, "ib", ib.version));
    await pointRepositoriesAt(ib.dir, ib.apk, server.url);
  }
}, 1_800_000);

afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

async function mirrorProfiles(version: string, target: string): Promise<ProfilesJson> {
  const rel = `${info.versions[version]?.path}/targets/${target}/profiles.json`;
  return JSON.parse(await readFile(path.join(info.dir, rel), "utf8")) as ProfilesJson;
}

function manifestLines(stdout: string): string[] {
  return stdout.split("\n").filter((l) => / - /.test(l));
}

/** A successful image build: the images profiles.json lists, with their hashes, and the manifest. */
async function expectImages(
  expect: ExpectStatic,
  ib: ImageBuilderUnderTest,
  bin: string,
  profile: string,
  extra: string,
): Promise<ProfilesJson> {
  const written = await readdir(bin);
  expect(written).toContain("profiles.json");
  expect(written).toContain("sha256sums");
  const profiles = JSON.parse(await readFile(path.join(bin, "profiles.json"), "utf8")) as ProfilesJson;
  const spec = info.versions[ib.version];
  expect(profiles.version_code).toBe(spec?.revision);
  expect(profiles.version_number).toBe(ib.version);
  expect(profiles.target).toBe(ib.target);
  expect(Object.keys(profiles.profiles)).toEqual([profile]);
  const entry = profiles.profiles[profile];
  expect(entry?.images.length).toBeGreaterThan(0);
  for (const image of entry?.images ?? []) {
    expect(written).toContain(image.name);
    expect(sha256(await readFile(path.join(bin, image.name)))).toBe(image.sha256);
  }
  // the mirror publishes the same profile, image names (without EXTRA_IMAGE_NAME) and devices
  const published = (await mirrorProfiles(ib.version, ib.target)).profiles[profile];
  expect(published?.supported_devices).toEqual(entry?.supported_devices);
  expect(published?.titles).toEqual(entry?.titles);
  expect(published?.images.map((i) => i.name).sort()).toEqual(
    entry?.images.map((i) => i.name.replace(`-${extra}-`, "-")).sort(),
  );
  return profiles;
}

type Scenario = (expect: ExpectStatic) => Promise<void>;
const scenarios = new Map<ImageBuilderUnderTest, [string, Scenario][]>();
function scenario(ib: ImageBuilderUnderTest, name: string, fn: Scenario): void {
  scenarios.set(ib, [...(scenarios.get(ib) ?? []), [name, fn]]);
}

// ----- what the server checks before it unpacks ----------------------------------------------

scenario(
  ib2305,
  "every ImageBuilder is listed in signed sha256sums and passes the server's archive check",
  async (expect) => {
    for (const version of Object.values(info.versions)) {
      for (const target of Object.values(version.targets)) {
        const tdir = path.join(info.dir, version.path, "targets", target.target);
        const sums = await readFile(path.join(tdir, "sha256sums"), "utf8");
        const sig = await readFile(path.join(tdir, "sha256sums.sig"), "utf8");
        expect(verifyMessage(sums, sig, info.publicKeyLine)).toEqual({ ok: true });
        const ref = findImageBuilderArchive(sums);
        expect(`${version.path}/targets/${target.target}/${ref?.name}`).toBe(target.imagebuilder);
        const archive = path.join(info.dir, target.imagebuilder);
        expect(sha256(await readFile(archive))).toBe(ref?.sha256);
        const listing = spawnSync(
          "tar",
          ["-tv", "--quoting-style=escape", "--numeric-owner", "--full-time", "-f", archive],
          { encoding: "utf8", maxBuffer: 1 << 26 },
        );
        expect(listing.status).toBe(0);
        const check = checkArchiveEntries(parseTarListing(listing.stdout), 1 << 30);
        expect(check).toMatchObject({
          ok: true,
          topDir: path.basename(archive).replace(/\.tar\.(zst|xz)$/, ""),
        });
      }
    }
  },
);

// ----- 24.10.4, opkg, ath79/generic ------------------------------------------------------

scenario(ib2410, "24.10.4 opkg: make info lists the profiles of profiles.json", async (expect) => {
  const r = await ib2410.make(["info"]);
  expect(r.code).toBe(0);
  expect(r.stdout).toContain('Current Target: "ath79/generic"');
  expect(r.stdout).toContain('Current Architecture: "mips"');
  expect(r.stdout).toContain('Current Revision: "r28959-29397011cc"');
  expect(r.stdout).toMatch(/^Default Packages: base-files .* opkg$/m);
  const published = await mirrorProfiles("24.10.4", "ath79/generic");
  for (const [id, p] of Object.entries(published.profiles)) {
    expect(r.stdout).toContain(`\n${id}:\n`);
    expect(r.stdout).toContain(`    SupportedDevices: ${p.supported_devices.join(" ")}\n`);
  }
  expect(r.stdout).toContain("    SupportedDevices: tplink,archer-c7-v5 archer-c7-v5\n");
});

scenario(
  ib2410,
  "24.10.4 opkg: make manifest STRIP_ABI=1 prints names without the ABI version",
  async (expect) => {
    const r = await ib2410.make([
      "manifest",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=hello foo-tool",
      "STRIP_ABI=1",
    ]);
    expect(r.code).toBe(0);
    const lines = manifestLines(r.stdout);
    expect(lines).toContain("hello - 2.12.1-r1");
    expect(lines).toContain("foo-tool - 1.4.2-r1");
    expect(lines).toContain("libfoo - 1.4.2-r1");
    expect(lines).toContain("kmod-ath10k-ct - 6.12.66-r1");
    expect(r.stdout).not.toContain("libfoo20240101");
  },
);

scenario(
  ib2410,
  "24.10.4 opkg: make image builds signed images, profiles.json and the manifest",
  async (expect) => {
    const bin = path.join(work, "bin-2410-ok");
    const r = await ib2410.make([
      "image",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=hello luci-app-bar -ppp -ppp-mod-pppoe",
      "EXTRA_IMAGE_NAME=abc",
      `BIN_DIR=${bin}`,
      `FILES=${files}`,
    ]);
    expect(r.code, r.stderr).toBe(0);
    await expectImages(expect, ib2410, bin, "tplink_archer-c7-v5", "abc");
    const written = await readdir(bin);
    expect(written).toContain(
      "openwrt-24.10.4-abc-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
    );
    expect(written).toContain("openwrt-24.10.4-abc-ath79-generic-tplink_archer-c7-v5-squashfs-factory.bin");
    const manifest = await readFile(
      path.join(bin, "openwrt-24.10.4-abc-ath79-generic-tplink_archer-c7-v5.manifest"),
      "utf8",
    );
    expect(manifest).toContain("luci-app-bar - ");
    expect(manifest).toContain("hello - 2.12.1-r1");
    expect(manifest).not.toMatch(/^ppp /m);
    // append-metadata: fwtool metadata and a ucert signature from the IB's local key
    const sysupgrade = await readFile(
      path.join(bin, "openwrt-24.10.4-abc-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin"),
    );
    expect(sysupgrade.includes(Buffer.from('"supported_devices"'))).toBe(true);
    expect(sysupgrade.includes(Buffer.from("tplink,archer-c7-v5"))).toBe(true);
    expect(await readFile(path.join(ib2410.targetDir(), "etc/uci-defaults/99-asu-test"), "utf8")).toBe(
      "# from FILES\n",
    );
  },
);

scenario(ib2410, "24.10.4 opkg: unknown package", async (expect) => {
  const r = await ib2410.make([
    "image",
    "PROFILE=tplink_archer-c7-v5",
    "PACKAGES=does-not-exist",
    `BIN_DIR=${work}/b1`,
  ]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(" * opkg_install_cmd: Cannot install package does-not-exist.");
  expect(r.stdout).toContain("Unknown package 'does-not-exist'.");
});

scenario(ib2410, "24.10.4 opkg: missing dependency", async (expect) => {
  const r = await ib2410.make([
    "image",
    "PROFILE=tplink_archer-c7-v5",
    "PACKAGES=broken-dep",
    `BIN_DIR=${work}/b2`,
  ]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(
    " * pkg_hash_check_unresolved: cannot find dependency nonexistent-lib for broken-dep",
  );
  expect(r.stderr).toContain(
    " * pkg_hash_fetch_best_installation_candidate: Packages for broken-dep found, but incompatible with the architectures configured",
  );
  expect(r.stderr).toContain(" * opkg_install_cmd: Cannot install package broken-dep.");
});

scenario(ib2410, "24.10.4 opkg: conflicts are checked one way only", async (expect) => {
  const ab = await ib2410.make(["manifest", "PROFILE=tplink_archer-c7-v5", "PACKAGES=conflict-a conflict-b"]);
  expect(ab.code).toBe(0);
  expect(manifestLines(ab.stdout)).toEqual(
    expect.arrayContaining(["conflict-a - 1.0-r1", "conflict-b - 1.0-r1"]),
  );
  const ba = await ib2410.make([
    "image",
    "PROFILE=tplink_archer-c7-v5",
    "PACKAGES=conflict-b conflict-a",
    `BIN_DIR=${work}/b3`,
  ]);
  expect(ba.code).toBe(2);
  expect(ba.stderr).toContain(" * check_conflicts_for: The following packages conflict with conflict-a:");
  expect(ba.stderr).toContain(" * check_conflicts_for: \tconflict-b * ");
  expect(ba.stderr).toContain(" * opkg_install_cmd: Cannot install package conflict-a.");
});

scenario(ib2410, "24.10.4 opkg: dnsmasq-full without -dnsmasq fails on a file clash", async (expect) => {
  const clash = await ib2410.make([
    "image",
    "PROFILE=tplink_archer-c7-v5",
    "PACKAGES=dnsmasq-full",
    `BIN_DIR=${work}/b4`,
  ]);
  expect(clash.code).toBe(2);
  expect(clash.stderr).toContain(
    ` * check_data_file_clashes: Package dnsmasq wants to install file ${ib2410.targetDir()}/etc/init.d/dnsmasq\n` +
      "\tBut that file is already provided by package  * dnsmasq-full\n",
  );
  expect(clash.stderr).toContain(" * opkg_install_cmd: Cannot install package dnsmasq.");
  const ok = await ib2410.make(["manifest", "PROFILE=tplink_archer-c7-v5", "PACKAGES=dnsmasq-full -dnsmasq"]);
  expect(ok.code).toBe(0);
  const lines = manifestLines(ok.stdout);
  expect(lines).toContain("dnsmasq-full - 2.91-r1");
  expect(lines).not.toContain("dnsmasq - 2.91-r1");
});

scenario(ib2410, "24.10.4 opkg: a failing postinst", async (expect) => {
  const r = await ib2410.make([
    "image",
    "PROFILE=tplink_archer-c7-v5",
    "PACKAGES=postinst-fail",
    `BIN_DIR=${work}/b5`,
  ]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain(' * pkg_run_script: package "postinst-fail" postinst script returned status 1.');
  expect(r.stderr).toContain(" * opkg_configure: postinst-fail.postinst returned 1.");
});

scenario(ib2410, "24.10.4 opkg: unknown profile", async (expect) => {
  const r = await ib2410.make(["image", "PROFILE=nope", `BIN_DIR=${work}/b6`]);
  expect(r.code).toBe(2);
  expect(r.stdout).toContain(
    'Profile "nope" does not exist!\nUse "make info" to get a list of available profile names.\n',
  );
});

scenario(ib2410, "24.10.4 opkg: image too big exits 0 with no image and no profiles.json", async (expect) => {
  const bin = path.join(work, "bin-2410-big");
  const r = await ib2410.make(["image", "PROFILE=ubnt_unifi", "PACKAGES=bigpkg", `BIN_DIR=${bin}`]);
  expect(r.code).toBe(0);
  expect(r.stderr).toMatch(
    /^ {4}WARNING: Image file \S+\/tmp\/openwrt-24\.10\.4-ath79-generic-ubnt_unifi-squashfs-sysupgrade\.bin is too big: \d+ > 7929856$/m,
  );
  expect(r.stdout).toContain("JSON info file script could not find any JSON files for target");
  expect((await readdir(bin)).sort()).toEqual([
    "openwrt-24.10.4-ath79-generic-ubnt_unifi.manifest",
    "sha256sums",
  ]);
});

scenario(ib2410, "24.10.4 opkg: a feed with a bad signature is dropped", async (expect) => {
  const conf = path.join(ib2410.dir, "repositories.conf");
  const saved = await readFile(conf, "utf8");
  try {
    await addRepository(ib2410.dir, false, {
      name: "badsig",
      url: `${server.url}/${info.badsig.feeds["24.10.4"]?.["mips_24kc"]}`,
    });
    const r = await ib2410.make([
      "image",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=badsig-hello",
      `BIN_DIR=${work}/b7`,
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Signature check failed.\nRemove wrong Signature file.\n");
    expect(r.stderr).toContain(" * opkg_install_cmd: Cannot install package badsig-hello.");
  } finally {
    await writeFile(conf, saved);
  }
});

scenario(
  ib2410,
  "24.10.4 opkg: a custom repository with its key (repositories + repository_keys)",
  async (expect) => {
    const conf = path.join(ib2410.dir, "repositories.conf");
    const saved = await readFile(conf, "utf8");
    const key = path.join(ib2410.dir, "keys", info.custom.usign.keyIdHex);
    try {
      await addRepository(ib2410.dir, false, {
        name: "custom",
        url: `${server.url}/${info.custom.feeds["24.10.4"]?.["mips_24kc"]}`,
        key: { keyName: info.custom.usign.keyIdHex, contents: info.custom.usign.publicFile },
      });
      const r = await ib2410.make(["manifest", "PROFILE=tplink_archer-c7-v5", "PACKAGES=custom-hello"]);
      expect(r.code, r.stderr).toBe(0);
      expect(manifestLines(r.stdout)).toContain("custom-hello - 1.0-r1");
    } finally {
      await writeFile(conf, saved);
      await rm(key, { force: true });
    }
  },
);

// ----- 23.05.4, opkg, x86/64: ABI-versioned names -----------------------------------------

scenario(ib2305, "23.05.4 opkg: feeds carry ABI-versioned names; STRIP_ABI=1 strips them", async (expect) => {
  const index = await readFile(
    path.join(info.dir, "releases/23.05.4/packages/x86_64/packages/Packages"),
    "utf8",
  );
  expect(index).toMatch(/^Package: libfoo20240101\nVersion: 1\.4\.2-r1\n/m);
  expect(index).toContain("ABIVersion: 20240101\n");
  expect(index).toMatch(/^Package: foo-tool\nVersion: 1\.4\.2-r1\nDepends: libc, libfoo20240101\n/m);

  const info23 = await ib2305.make(["info"]);
  expect(info23.code).toBe(0);
  expect(info23.stdout).toContain('Current Target: "x86/64"');
  expect(info23.stdout).toContain('Current Revision: "r24012-d8dd03c46f"');

  const raw = await ib2305.make(["manifest", "PROFILE=generic", "PACKAGES=foo-tool"]);
  expect(raw.code).toBe(0);
  expect(manifestLines(raw.stdout)).toContain("libfoo20240101 - 1.4.2-r1");
  expect(manifestLines(raw.stdout)).toContain("libustream-mbedtls20201210 - 2024.07.28~99bd3d2b-r1");
  const stripped = await ib2305.make(["manifest", "PROFILE=generic", "PACKAGES=foo-tool", "STRIP_ABI=1"]);
  expect(stripped.code).toBe(0);
  expect(manifestLines(stripped.stdout)).toContain("libfoo - 1.4.2-r1");
  expect(manifestLines(stripped.stdout)).toContain("libustream-mbedtls - 2024.07.28~99bd3d2b-r1");
  expect(stripped.stdout).not.toContain("20240101");
});

scenario(ib2305, "23.05.4 opkg: make image for the second x86 profile", async (expect) => {
  const bin = path.join(work, "bin-2305");
  const r = await ib2305.make([
    "image",
    "PROFILE=pc-engines_apu2",
    "PACKAGES=foo-tool",
    "EXTRA_IMAGE_NAME=abi",
    `BIN_DIR=${bin}`,
  ]);
  expect(r.code, r.stderr).toBe(0);
  const profiles = await expectImages(expect, ib2305, bin, "pc-engines_apu2", "abi");
  expect(profiles.profiles["pc-engines_apu2"]?.supported_devices).toEqual([
    "pc-engines,apu2",
    "pc-engines,apu3",
  ]);
  expect(await readdir(bin)).toContain("openwrt-23.05.4-abi-x86-64-pc-engines_apu2-squashfs-combined.img.gz");
  expect(info.versions["23.05.4"]?.targets["x86/64"]?.imagebuilder).toMatch(
    /openwrt-imagebuilder-23\.05\.4-x86-64\.Linux-x86_64\.tar\.xz$/,
  );
  expect(info.versions["23.05.4"]?.targets["x86/64"]?.kmods).toBeUndefined();
});

// ----- SNAPSHOT, apk, x86/64 ------------------------------------------------------------

scenario(ibSnap, "SNAPSHOT apk: index.json v2 names without ABI", async (expect) => {
  const feed = path.join(info.dir, "snapshots/packages/x86_64/packages");
  const index = JSON.parse(await readFile(path.join(feed, "index.json"), "utf8")) as {
    version: number;
    architecture: string;
    packages: Record<string, string>;
  };
  expect(index.version).toBe(2);
  expect(index.architecture).toBe("x86_64");
  expect(index.packages.libfoo).toBe("1.4.2-r1");
  expect(index.packages["libfoo20240101"]).toBeUndefined();
  expect(await readdir(feed)).toContain("libfoo20240101-1.4.2-r1.apk");
});

scenario(ibSnap, "SNAPSHOT apk: make info and make manifest STRIP_ABI=1", async (expect) => {
  const i = await ibSnap.make(["info"]);
  expect(i.code).toBe(0);
  expect(i.stdout).toContain('Current Target: "x86/64"');
  expect(i.stdout).toMatch(/^Default Packages: .* apk-mbedtls$/m);
  const r = await ibSnap.make(["manifest", "PROFILE=generic", "PACKAGES=hello foo-tool", "STRIP_ABI=1"]);
  expect(r.code, r.stderr).toBe(0);
  const lines = manifestLines(r.stdout);
  expect(lines).toContain("libfoo - 1.4.2-r1");
  expect(lines).toContain("foo-tool - 1.4.2-r1");
  expect(r.stdout).not.toContain("20240101");
});

scenario(ibSnap, "SNAPSHOT apk: make image with ROOTFS_PARTSIZE and FILES", async (expect) => {
  const bin = path.join(work, "bin-snap");
  const r = await ibSnap.make([
    "image",
    "PROFILE=generic",
    "PACKAGES=hello luci-app-bar -ppp -ppp-mod-pppoe",
    "EXTRA_IMAGE_NAME=abc",
    `BIN_DIR=${bin}`,
    `FILES=${files}`,
    "ROOTFS_PARTSIZE=16",
  ]);
  expect(r.code, r.stderr).toBe(0);
  await expectImages(expect, ibSnap, bin, "generic", "abc");
  const combined = await readFile(path.join(bin, "openwrt-abc-x86-64-generic-squashfs-combined.img.gz"));
  expect(gunzipSync(combined).length).toBe(16 * 1024 * 1024);
  const manifest = await readFile(path.join(bin, "openwrt-abc-x86-64-generic.manifest"), "utf8");
  expect(manifest).toContain("luci-app-bar - ");
  expect(manifest).not.toMatch(/^ppp /m);
  expect(await readFile(path.join(ibSnap.targetDir(), "etc/uci-defaults/99-asu-test"), "utf8")).toBe(
    "# from FILES\n",
  );
});

scenario(ibSnap, "SNAPSHOT apk: unknown package and missing dependency", async (expect) => {
  const unknown = await ibSnap.make(["manifest", "PROFILE=generic", "PACKAGES=does-not-exist"]);
  expect(unknown.code).toBe(2);
  expect(unknown.stderr).toContain(
    "ERROR: unable to select packages:\n  does-not-exist (no such package):\n    required by: world[does-not-exist]\n",
  );
  const missing = await ibSnap.make(["manifest", "PROFILE=generic", "PACKAGES=broken-dep"]);
  expect(missing.code).toBe(2);
  expect(missing.stderr).toContain(
    "  nonexistent-lib (no such package):\n    required by: broken-dep-0.1-r1[nonexistent-lib]\n",
  );
});

scenario(ibSnap, "SNAPSHOT apk: conflicts, both ways, and dnsmasq-full", async (expect) => {
  for (const order of ["conflict-a conflict-b", "conflict-b conflict-a"]) {
    const r = await ibSnap.make(["manifest", "PROFILE=generic", `PACKAGES=${order}`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(
      "  conflict-b-1.0-r1:\n    breaks: conflict-a-1.0-r1[!conflict-b]\n    satisfies: world[conflict-b]\n",
    );
  }
  const clash = await ibSnap.make(["manifest", "PROFILE=generic", "PACKAGES=dnsmasq-full"]);
  expect(clash.code).toBe(2);
  expect(clash.stderr).toContain(
    "  dnsmasq-2.91-r1:\n    breaks: dnsmasq-full-2.91-r1[!dnsmasq]\n    satisfies: world[dnsmasq]\n",
  );
  const ok = await ibSnap.make(["manifest", "PROFILE=generic", "PACKAGES=dnsmasq-full -dnsmasq"]);
  expect(ok.code, ok.stderr).toBe(0);
  expect(manifestLines(ok.stdout)).toContain("dnsmasq-full - 2.91-r1");
});

scenario(ibSnap, "SNAPSHOT apk: a failing post-install script", async (expect) => {
  const r = await ibSnap.make(["image", "PROFILE=generic", "PACKAGES=postinst-fail", `BIN_DIR=${work}/s1`]);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(
    /^postinst script \.\/lib\/apk\/db\/postinst-fail-1\.0-r1\.X1[0-9a-f]+\.post-install has failed with exit code 1$/m,
  );
});

scenario(
  ibSnap,
  "SNAPSHOT apk: an untrusted feed, then the custom repository with its key",
  async (expect) => {
    const repos = path.join(ibSnap.dir, "repositories");
    const saved = await readFile(repos, "utf8");
    try {
      await addRepository(ibSnap.dir, true, {
        name: "badsig",
        url: `${server.url}/${info.badsig.feeds.SNAPSHOT?.x86_64}`,
      });
      // over HTTP apk says "updating and opening <url>"; FINDINGS quotes the file:// form "opening <path>"
      const bad = await ibSnap.make(["manifest", "PROFILE=generic", "PACKAGES=badsig-hello"]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(
        /^WARNING: updating and opening http:\/\/\S+\/badsig\/SNAPSHOT\/x86_64\/packages\.adb: UNTRUSTED signature$/m,
      );
      expect(bad.stderr).toContain("  badsig-hello (no such package):\n");
    } finally {
      await writeFile(repos, saved);
    }
    const key = path.join(ibSnap.dir, "keys", info.custom.apk.name);
    try {
      await addRepository(ibSnap.dir, true, {
        name: "custom",
        url: `${server.url}/${info.custom.feeds.SNAPSHOT?.x86_64}`,
        key: { keyName: info.custom.apk.name, contents: info.custom.apk.publicPem },
      });
      const r = await ibSnap.make(["manifest", "PROFILE=generic", "PACKAGES=custom-hello"]);
      expect(r.code, r.stderr).toBe(0);
      expect(manifestLines(r.stdout)).toContain("custom-hello - 1.0-r1");
    } finally {
      await writeFile(repos, saved);
      await rm(key, { force: true });
    }
  },
);

// Registered round-robin below: vitest runs a few concurrent tests at a time (maxConcurrency),
// and interleaving keeps every ImageBuilder's queue busy instead of filling the slots with one.
describe.concurrent(
  "real-tools ImageBuilders (OpenWrt's IB Makefile, real opkg and apk)",
  { timeout: 900_000 },
  () => {
    const lists = [...scenarios.values()];
    for (let i = 0; lists.some((l) => i < l.length); i++) {
      for (const [ib, list] of scenarios) {
        const entry = list[i];
        if (entry) it(entry[0], ({ expect }) => ib.serial(() => entry[1](expect)));
      }
    }
  },
);
