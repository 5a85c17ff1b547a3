import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir, access } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MirrorInfo } from "../../fixtures/mirror/generate-mirror.js";
import { copyFastMirror } from "../support/fast-mirror.js";
import { snapshotRevision } from "../../fixtures/mirror/mirror-catalog.js";
import { startMirrorServer, type MirrorServer } from "../../fixtures/mirror/mirror-server.js";
import {
  rewriteRepositories,
  runMake,
  unpackImageBuilder,
} from "../../fixtures/mirror/imagebuilder-test-kit.js";
import { spawnSync } from "node:child_process";

const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

let work: string;
let mirrorRoot: string | undefined;
let info: MirrorInfo;
let server: MirrorServer;
const ib: Record<string, string> = {};

async function ibFor(version: string, target: string, name = `${version}-${target}`): Promise<string> {
  const archive = path.join(info.dir, info.versions[version]!.targets[target]!.imagebuilder);
  const dir = await unpackImageBuilder(archive, path.join(work, "ib", name.replace(/\//g, "_")));
  await rewriteRepositories(dir, server.url);
  return dir;
}

/** Lists the members of an (uncompressed or .gz) image with system tar. */
function tarList(file: string): string[] {
  const r = spawnSync("tar", ["-tf", file], { encoding: "utf8" });
  expect(r.status).toBe(0);
  return r.stdout.split("\n").filter((l) => l !== "");
}

function tarCat(file: string, member: string): string {
  const r = spawnSync("tar", ["-xOf", file, member], { encoding: "utf8" });
  expect(r.stderr).toBe("");
  return r.stdout;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "asu-mirror-ib-"));
  // A private copy of the run's mirror: some tests tamper with a feed (then restore it).
  const copy = await copyFastMirror();
  info = copy.info;
  mirrorRoot = copy.root;
  server = await startMirrorServer({ dir: info.dir });
  ib.ath79_23 = await ibFor("23.05.4", "ath79/generic");
  ib.x86_24 = await ibFor("24.10.4", "x86/64");
  ib.x86_snap = await ibFor("SNAPSHOT", "x86/64");
  ib.ath79_snap = await ibFor("SNAPSHOT", "ath79/generic");
});

afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
  if (mirrorRoot) await rm(mirrorRoot, { recursive: true, force: true });
});

describe("make info", () => {
  it("prints target, architecture, revision, default packages and profiles in OpenWrt's format", async () => {
    const r = await runMake(ib.ath79_23!, ["info"]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    const lines = r.stdout.split("\n");
    expect(lines.slice(0, 6)).toEqual([
      'Current Target: "ath79/generic"',
      'Current Architecture: "mips"',
      'Current Revision: "r24012-d8dd03c46f"',
      "Default Packages: base-files busybox ca-bundle dnsmasq dropbear firewall4 fstools kmod-ath9k kmod-gpio-button-hotplug kmod-nft-offload libc libgcc libustream-mbedtls logd mtd netifd nftables odhcp6c odhcpd-ipv6only opkg ppp ppp-mod-pppoe procd procd-seccomp procd-ujail swconfig uboot-envtools uci uclient-fetch urandom-seed urngd wpad-basic-mbedtls",
      "Available Profiles:",
      "",
    ]);
    expect(r.stdout).toContain(
      [
        "tplink_archer-c7-v5:",
        "    TP-Link Archer C7 v5",
        "    Packages: kmod-usb2 kmod-usb-ledtrig-usbport kmod-ath10k-ct ath10k-firmware-qca988x-ct",
        "    hasImageMetadata: 1",
        "    SupportedDevices: tplink,archer-c7-v5 archer-c7-v5",
        "",
      ].join("\n"),
    );
    // the regex upstream ASU uses to read a profile's packages
    expect(/tplink_tl-wr842n-v3:\n {4}.+\n {4}Packages: (.*?)\n/.exec(r.stdout)?.[1]).toBe(
      "kmod-usb2 kmod-usb-ledtrig-usbport",
    );
  });

  it("omits SupportedDevices for x86's generic profile and shows the snapshot revision", async () => {
    const r = await runMake(ib.x86_snap!, ["info"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Current Revision: "${snapshotRevision(30000)}"`);
    expect(r.stdout).toMatch(/Default Packages: .*\bapk-mbedtls\b/);
    expect(
      r.stdout.endsWith(
        "generic:\n    Generic x86/64\n    Packages: kmod-amazon-ena kmod-amd-xgbe kmod-bnx2 kmod-e1000e kmod-e1000 kmod-forcedeth kmod-fs-vfat kmod-igb kmod-igc kmod-ixgbe kmod-r8169 kmod-tg3\n    hasImageMetadata: 0\n",
      ),
    ).toBe(true);
  });
});

describe("make manifest", () => {
  it("opkg: prints 'name - version' sorted, ABI suffixes stripped with STRIP_ABI=1", async () => {
    const r = await runMake(ib.ath79_23!, [
      "manifest",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=luci -dnsmasq",
      "STRIP_ABI=1",
    ]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    for (const line of lines) expect(line).toMatch(/^[a-z0-9][\w.+-]* - \S+$/);
    const names = lines.map((l) => l.split(" - ")[0]!);
    expect(names).toEqual([...names].sort());
    expect(lines).toContain("libubox - 2024.03.29~eb9bcb64-1");
    expect(lines).toContain("libustream-mbedtls - 2023-02-25-498f6e26-2");
    expect(lines).toContain("luci - git-24.086.45142-09d5a38");
    expect(lines).toContain("luci-app-opkg - git-24.086.45142-09d5a38");
    expect(lines).toContain("kmod-ath10k-ct - 5.15.162-1");
    expect(names).not.toContain("dnsmasq");
    expect(names.some((n) => /\d{8}$/.test(n))).toBe(false);
    // the index fetch log goes to stderr, as the real IB sends opkg update there
    expect(r.stderr).toContain("Signature check passed.");
  });

  it("opkg: keeps ABI-versioned names without STRIP_ABI", async () => {
    const r = await runMake(ib.ath79_23!, ["manifest", "PROFILE=tplink_archer-c7-v5"]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toContain("libubox20240329 - 2024.03.29~eb9bcb64-1");
    expect(lines).toContain("libjson-c5 - 0.16-3");
    expect(lines).not.toContain("libubox - 2024.03.29~eb9bcb64-1");
  });

  it("apk: prints 'name version' sorted", async () => {
    const r = await runMake(ib.x86_snap!, [
      "manifest",
      "PROFILE=generic",
      "PACKAGES=luci-app-attendedsysupgrade owut",
      "STRIP_ABI=1",
    ]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    for (const line of lines) expect(line).toMatch(/^[a-z0-9][\w.+-]* [^ ]+$/);
    expect(lines.map((l) => l.split(" ")[0])).toEqual([...lines.map((l) => l.split(" ")[0])].sort());
    expect(lines).toContain("apk-mbedtls 3.0.0_pre20250925-r1");
    expect(lines).toContain("libubox 2025.07.23~49056d17-r1");
    expect(lines).toContain("dnsmasq 2.90-r3");
    expect(lines.find((l) => l.startsWith("owut "))).toMatch(/^owut 2025\.12\.\d\d~[0-9a-f]{8}-r1$/);
    expect(lines.find((l) => l.startsWith("kernel "))).toMatch(/^kernel 6\.18\.5~[0-9a-f]{32}-r1$/);
  });

  it("opkg: reports an unknown package with opkg's exact text", async () => {
    const r = await runMake(ib.ath79_23!, [
      "manifest",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=luci-app-wireguard",
      "STRIP_ABI=1",
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(
      "Collected errors:\n * opkg_install_cmd: Cannot install package luci-app-wireguard.\n",
    );
    expect(r.stderr).toMatch(/make\[\d\]: \*\*\* \[Makefile:\d+: package_install\] Error 255/);
    expect(r.stderr).toMatch(/make: \*\*\* \[Makefile:\d+: manifest\] Error 2/);
  });

  it("opkg: reports conflicting packages with opkg's exact text", async () => {
    const r = await runMake(ib.ath79_23!, [
      "manifest",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=dnsmasq-full",
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      [
        "Collected errors:",
        " * check_conflicts_for: The following packages conflict with dnsmasq-full:",
        " * check_conflicts_for: \tdnsmasq *",
        " * opkg_install_cmd: Cannot install package dnsmasq-full.",
        "",
      ].join("\n"),
    );
  });

  it("apk: reports an unknown package with apk's exact text", async () => {
    const r = await runMake(ib.x86_snap!, ["manifest", "PROFILE=generic", "PACKAGES=foo"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr).toContain(
      "ERROR: unable to select packages:\n  foo (no such package):\n    required by: world[foo]\n",
    );
    expect(r.stderr).toMatch(/make\[\d\]: \*\*\* \[Makefile:\d+: package_install\] Error 1/);
  });

  it("apk: reports conflicting packages with apk's exact text", async () => {
    const r = await runMake(ib.x86_snap!, ["manifest", "PROFILE=generic", "PACKAGES=dnsmasq-full"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(
      [
        "ERROR: unable to select packages:",
        "  dnsmasq-full-2.90-r3:",
        "    conflicts: dnsmasq-2.90-r3[dnsmasq=2.90-r3]",
        "    satisfies: world[dnsmasq-full]",
        "  dnsmasq-2.90-r3:",
        "    conflicts: dnsmasq-full-2.90-r3[dnsmasq=2.90-r3]",
        "    satisfies: world[dnsmasq]",
        "",
      ].join("\n"),
    );
  });

  it("refuses an unknown profile with the real ImageBuilder's text", async () => {
    const r = await runMake(ib.ath79_23!, ["manifest", "PROFILE=foo"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe(
      'Profile "foo" does not exist!\nUse "make info" to get a list of available profile names.\n',
    );
    expect(r.stderr).toMatch(/make\[1\]: \*\*\* \[Makefile:\d+: _check_profile\] Error 1/);
  });
});

describe("package index signatures", () => {
  it("opkg: a tampered Packages fails the signature check and its packages become unavailable", async () => {
    const feed = path.join(info.dir, "releases/23.05.4/packages/mips_24kc/luci");
    const original = await readFile(path.join(feed, "Packages"));
    const originalGz = await readFile(path.join(feed, "Packages.gz"));
    try {
      const tampered = Buffer.concat([
        original,
        Buffer.from("\nPackage: evil\nVersion: 1\nArchitecture: all\n"),
      ]);
      await writeFile(path.join(feed, "Packages"), tampered);
      await writeFile(path.join(feed, "Packages.gz"), gzipSync(tampered));
      const r = await runMake(ib.ath79_23!, ["manifest", "PROFILE=tplink_archer-c7-v5", "PACKAGES=luci"]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(
        `Downloading ${server.url}/releases/23.05.4/packages/mips_24kc/luci/Packages.sig\nSignature check failed.\nRemove wrong Signature file.\n`,
      );
      expect(r.stderr).toContain("Collected errors:\n * opkg_install_cmd: Cannot install package luci.\n");
    } finally {
      await writeFile(path.join(feed, "Packages"), original);
      await writeFile(path.join(feed, "Packages.gz"), originalGz);
    }
    expect(gunzipSync(await readFile(path.join(feed, "Packages.gz"))).equals(original)).toBe(true);
  });

  it("apk: a tampered packages.adb is UNTRUSTED and its packages become unavailable", async () => {
    const file = path.join(info.dir, "snapshots/packages/x86_64/luci/packages.adb");
    const original = await readFile(file);
    try {
      await writeFile(file, Buffer.from(original.toString("utf8").replace('"luci-base"', '"luci-evil"')));
      const r = await runMake(ib.x86_snap!, ["manifest", "PROFILE=generic", "PACKAGES=luci"]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain(
        `WARNING: updating and opening ${server.url}/snapshots/packages/x86_64/luci/packages.adb: UNTRUSTED signature\n`,
      );
      expect(r.stderr).toContain("  luci (no such package):\n    required by: world[luci]\n");
    } finally {
      await writeFile(file, original);
    }
  });
});

describe("make image", () => {
  it("writes images, manifest and profiles.json whose hashes match the bytes; FILES land in the image", async () => {
    const bin = path.join(work, "bin-files");
    const files = path.join(work, "files");
    await mkdir(path.join(files, "etc/uci-defaults"), { recursive: true });
    await writeFile(
      path.join(files, "etc/uci-defaults/99-asu-defaults"),
      "uci set system.@system[0].hostname='asu'\n",
    );
    const r = await runMake(ib.ath79_23!, [
      "image",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=luci -dnsmasq dnsmasq-full",
      "EXTRA_IMAGE_NAME=0123abcd4567",
      `BIN_DIR=${bin}`,
      `FILES=${files}`,
    ]);
    expect(r.stderr).not.toContain("is too big");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(
      "Building images for ath79 - TP-Link Archer C7 v5\nPackages: luci dnsmasq-full ",
    );
    const prefix = "openwrt-23.05.4-0123abcd4567-ath79-generic-tplink_archer-c7-v5";
    expect((await readdir(bin)).sort()).toEqual(
      [
        `${prefix}-squashfs-factory.bin`,
        `${prefix}-squashfs-sysupgrade.bin`,
        `${prefix}.manifest`,
        "profiles.json",
        "sha256sums",
      ].sort(),
    );
    const profiles = JSON.parse(await readFile(path.join(bin, "profiles.json"), "utf8")) as {
      version_code: string;
      target: string;
      profiles: Record<
        string,
        {
          image_prefix: string;
          images: {
            name: string;
            sha256: string;
            sha256_unsigned: string;
            type: string;
            filesystem: string;
          }[];
        }
      >;
    };
    expect(profiles.version_code).toBe("r24012-d8dd03c46f");
    expect(profiles.target).toBe("ath79/generic");
    const profile = profiles.profiles["tplink_archer-c7-v5"]!;
    expect(profile.image_prefix).toBe(prefix);
    expect(profile.images.map((i) => [i.type, i.filesystem])).toEqual([
      ["factory", "squashfs"],
      ["sysupgrade", "squashfs"],
    ]);
    for (const image of profile.images) {
      const bytes = await readFile(path.join(bin, image.name));
      expect(sha256(bytes)).toBe(image.sha256);
      if (image.type === "sysupgrade") {
        // metadata appended after the image, as fwtool does; sha256_unsigned covers the image alone
        const trailer = bytes.readUInt32BE(bytes.length - 12);
        expect(bytes.subarray(bytes.length - 16, bytes.length - 12).toString()).toBe("FWx0");
        expect(sha256(bytes.subarray(0, bytes.length - trailer))).toBe(image.sha256_unsigned);
        expect(image.sha256_unsigned).not.toBe(image.sha256);
      } else {
        expect(image.sha256_unsigned).toBe(image.sha256);
      }
    }
    const sysupgrade = path.join(bin, `${prefix}-squashfs-sysupgrade.bin`);
    const members = tarList(sysupgrade);
    expect(members).toContain("etc/uci-defaults/99-asu-defaults");
    expect(tarCat(sysupgrade, "etc/uci-defaults/99-asu-defaults")).toBe(
      "uci set system.@system[0].hostname='asu'\n",
    );
    expect(tarCat(sysupgrade, "etc/openwrt_release")).toContain("DISTRIB_REVISION='r24012-d8dd03c46f'");
    const status = tarCat(sysupgrade, "usr/lib/opkg/status");
    expect(status).toContain("Package: luci\nVersion: git-24.086.45142-09d5a38\n");
    expect(status).toContain("Package: dnsmasq-full\n");
    expect(status).not.toContain("Package: dnsmasq\n");
    expect(members).toContain("usr/sbin/dnsmasq");
    const manifest = await readFile(path.join(bin, `${prefix}.manifest`), "utf8");
    expect(manifest).toContain("libubox20240329 - 2024.03.29~eb9bcb64-1\n");
    const sums = await readFile(path.join(bin, "sha256sums"), "utf8");
    expect(sums).toContain(`${sha256(await readFile(sysupgrade))} *${prefix}-squashfs-sysupgrade.bin\n`);
  });

  it("is deterministic: the same inputs give byte-identical outputs", async () => {
    const outputs: Record<string, string>[] = [];
    for (const n of [1, 2]) {
      const bin = path.join(work, `bin-det-${n}`);
      const r = await runMake(ib.x86_24!, [
        "image",
        "PROFILE=generic",
        "PACKAGES=luci htop",
        "EXTRA_IMAGE_NAME=det",
        `BIN_DIR=${bin}`,
      ]);
      expect(r.code).toBe(0);
      const hashes: Record<string, string> = {};
      for (const f of (await readdir(bin)).sort()) hashes[f] = sha256(await readFile(path.join(bin, f)));
      outputs.push(hashes);
    }
    expect(Object.keys(outputs[0]!)).toEqual([
      "openwrt-24.10.4-det-x86-64-generic-ext4-combined-efi.img.gz",
      "openwrt-24.10.4-det-x86-64-generic-ext4-combined.img.gz",
      "openwrt-24.10.4-det-x86-64-generic-ext4-rootfs.img.gz",
      "openwrt-24.10.4-det-x86-64-generic-squashfs-combined-efi.img.gz",
      "openwrt-24.10.4-det-x86-64-generic-squashfs-combined.img.gz",
      "openwrt-24.10.4-det-x86-64-generic-squashfs-rootfs.img.gz",
      "openwrt-24.10.4-det-x86-64-generic.manifest",
      "profiles.json",
      "sha256sums",
    ]);
    expect(outputs[1]).toEqual(outputs[0]);
  });

  it("builds with default packages exactly the image the upstream profiles.json describes", async () => {
    const bin = path.join(work, "bin-default");
    const r = await runMake(ib.x86_snap!, ["image", "PROFILE=generic", `BIN_DIR=${bin}`]);
    expect(r.code).toBe(0);
    const upstream = JSON.parse(
      await readFile(path.join(info.dir, "snapshots/targets/x86/64/profiles.json"), "utf8"),
    ) as {
      profiles: Record<string, { images: { name: string; sha256: string }[] }>;
    };
    const images = upstream.profiles.generic!.images;
    expect(images.map((i) => i.name)).toContain("openwrt-x86-64-generic-squashfs-combined.img.gz");
    for (const image of images) {
      expect(sha256(await readFile(path.join(bin, image.name)))).toBe(image.sha256);
    }
    const combined = path.join(bin, "openwrt-x86-64-generic-squashfs-combined.img.gz");
    expect(tarList(combined)).toContain("lib/apk/db/installed");
  });

  it("prints OpenWrt's check-size warning and skips the image when packages do not fit (exit 0)", async () => {
    const ok = path.join(work, "bin-small-ok");
    const fits = await runMake(ib.ath79_23!, [
      "image",
      "PROFILE=tplink_tl-wr842n-v3",
      "PACKAGES=luci",
      `BIN_DIR=${ok}`,
    ]);
    expect(fits.code).toBe(0);
    expect(fits.stderr).not.toContain("is too big");
    expect(
      await exists(
        path.join(ok, "openwrt-23.05.4-ath79-generic-tplink_tl-wr842n-v3-squashfs-sysupgrade.bin"),
      ),
    ).toBe(true);

    const big = path.join(work, "bin-small-big");
    const r = await runMake(ib.ath79_23!, [
      "image",
      "PROFILE=tplink_tl-wr842n-v3",
      "PACKAGES=luci big-package-a",
      `BIN_DIR=${big}`,
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(
      /^ {4}WARNING: Image file \/\S+\/openwrt-23\.05\.4-ath79-generic-tplink_tl-wr842n-v3-squashfs-sysupgrade\.bin is too big: \d+ > 7995392$/m,
    );
    expect(
      await exists(
        path.join(big, "openwrt-23.05.4-ath79-generic-tplink_tl-wr842n-v3-squashfs-sysupgrade.bin"),
      ),
    ).toBe(false);
  });

  it("fails like make_ext4fs when the x86 rootfs partition is too small; ROOTFS_FILESYSTEM picks the filesystem", async () => {
    const bin = path.join(work, "bin-ext4");
    const r = await runMake(ib.x86_24!, ["image", "PROFILE=generic", "ROOTFS_PARTSIZE=8", `BIN_DIR=${bin}`]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain("Creating filesystem with parameters:\n    Size: 8388608\n");
    expect(r.stderr).toMatch(
      /^error: ext4_allocate_best_fit_partial: failed to allocate \d+ blocks, out of space\?$/m,
    );

    const sq = path.join(work, "bin-squashfs-only");
    const ok = await runMake(ib.x86_24!, [
      "image",
      "PROFILE=generic",
      "ROOTFS_PARTSIZE=8",
      "ROOTFS_FILESYSTEM=squashfs",
      `BIN_DIR=${sq}`,
    ]);
    expect(ok.code).toBe(0);
    const names = await readdir(sq);
    expect(names.filter((n) => n.endsWith(".img.gz")).sort()).toEqual([
      "openwrt-24.10.4-x86-64-generic-squashfs-combined-efi.img.gz",
      "openwrt-24.10.4-x86-64-generic-squashfs-combined.img.gz",
      "openwrt-24.10.4-x86-64-generic-squashfs-rootfs.img.gz",
    ]);
  });

  it("asks for a profile on multi-profile targets and refuses unknown ones", async () => {
    const none = await runMake(ib.ath79_snap!, ["image", `BIN_DIR=${path.join(work, "bin-none")}`]);
    expect(none.code).not.toBe(0);
    expect(none.stdout).toContain('Use "make info" to get a list of available profile names.');
    const unknown = await runMake(ib.ath79_snap!, ["image", "PROFILE=foo"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stdout).toBe(
      'Profile "foo" does not exist!\nUse "make info" to get a list of available profile names.\n',
    );
  });

  it("reuses package files in dl/: a second build fetches indexes only", async () => {
    const dir = await ibFor("24.10.4", "ath79/generic", "dl-cache");
    const bin = path.join(work, "bin-cache");
    const args = [
      "image",
      "PROFILE=tplink_archer-c7-v5",
      "PACKAGES=luci-app-attendedsysupgrade owut",
      `BIN_DIR=${bin}`,
    ];
    server.requests.length = 0;
    const first = await runMake(dir, args);
    expect(first.code).toBe(0);
    const firstPackages = server.requests.filter((p) => p.endsWith(".ipk"));
    expect(firstPackages).toContain(
      `/releases/24.10.4/packages/mips_24kc/packages/owut_2025.07.17~3d5e5f8a-r1_all.ipk`,
    );
    expect(
      firstPackages.some((p) =>
        /\/kmods\/6\.6\.110-1-[0-9a-f]{32}\/kmod-ath10k-ct_6\.6\.110-r1_mips_24kc\.ipk$/.test(p),
      ),
    ).toBe(true);
    expect(first.stdout).toMatch(
      /^Downloading http:\/\/127\.0\.0\.1:\d+\/releases\/24\.10\.4\/packages\/mips_24kc\/packages\/owut_/m,
    );

    server.requests.length = 0;
    const second = await runMake(dir, [...args.slice(0, -1), `BIN_DIR=${bin}-2`]);
    expect(second.code).toBe(0);
    expect(server.requests.filter((p) => p.endsWith(".ipk"))).toEqual([]);
    expect(server.requests.filter((p) => p.endsWith("/Packages.gz")).length).toBe(7);
    expect(second.stdout).toContain("Using cached owut_2025.07.17~3d5e5f8a-r1_all.ipk");

    // another ImageBuilder of the same release pointed at the first one's dl/ shares the cache
    const other = await ibFor("24.10.4", "ath79/generic", "dl-cache-2");
    server.requests.length = 0;
    const third = await runMake(other, [
      ...args.slice(0, -1),
      `BIN_DIR=${bin}-3`,
      `DL_DIR=${path.join(dir, "dl")}`,
    ]);
    expect(third.code).toBe(0);
    expect(server.requests.filter((p) => p.endsWith(".ipk"))).toEqual([]);
    expect(await readdir(path.join(other, "dl"))).toEqual([]);
  });

  it("runs inside bubblewrap with a clean environment, writing only its folder and BIN_DIR", async () => {
    const dir = await ibFor("SNAPSHOT", "ath79/generic", "sandboxed");
    const bin = path.join(work, "bin-sandbox");
    await mkdir(bin, { recursive: true });
    const r = await runMake(
      dir,
      ["image", "PROFILE=tplink_archer-c7-v5", "PACKAGES=luci", `BIN_DIR=${bin}`],
      {
        sandbox: true,
        binds: [bin],
      },
    );
    expect(r.stderr).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect((await readdir(bin)).filter((f) => f.endsWith(".bin")).sort()).toEqual([
      "openwrt-ath79-generic-tplink_archer-c7-v5-squashfs-factory.bin",
      "openwrt-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
    ]);
    const world = tarCat(
      path.join(bin, "openwrt-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin"),
      "etc/apk/world",
    );
    expect(world.split("\n")).toContain("luci");
  });
});
