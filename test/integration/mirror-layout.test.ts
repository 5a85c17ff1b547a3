import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateMirror, type MirrorInfo } from "../../fixtures/mirror/generate-mirror.js";
import { loadImageBuilderTool } from "../../fixtures/mirror/imagebuilder-tool.js";
import { verifyMessage } from "../../src/shared/usign.js";

const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest("hex");

let work: string;
let info: MirrorInfo;
let generationMs = 0;

const read = (rel: string) => readFile(path.join(info.dir, rel));
const readText = (rel: string) => readFile(path.join(info.dir, rel), "utf8");
const readJson = async <T>(rel: string) => JSON.parse(await readText(rel)) as T;

interface ProfilesJson {
  arch_packages: string;
  default_packages: string[];
  linux_kernel?: { version: string; release: string; vermagic: string };
  metadata_version: number;
  profiles: Record<
    string,
    {
      device_packages: string[];
      image_prefix: string;
      images: { filesystem?: string; name: string; sha256: string; sha256_unsigned: string; type: string }[];
      supported_devices: string[];
      titles: { vendor?: string; model?: string; variant?: string }[];
    }
  >;
  source_date_epoch: number;
  target: string;
  version_code: string;
  version_number: string;
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "asu-mirror-layout-"));
  const started = Date.now();
  info = await generateMirror({ dir: path.join(work, "mirror") });
  generationMs = Date.now() - started;
  console.log(`mirror generated in ${generationMs} ms`);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe("versions and targets", () => {
  it("publishes .versions.json as downloads.openwrt.org does", async () => {
    expect(await readJson(".versions.json")).toEqual({
      stable_version: "24.10.4",
      oldstable_version: "23.05.4",
      upcoming_version: null,
      versions_list: ["24.10.4", "24.10.3", "23.05.4"],
    });
    expect(Object.keys(info.versions).sort()).toEqual(["23.05.4", "24.10.4", "SNAPSHOT"]);
    expect(info.minimalVersions).toEqual(["24.10.3"]);
  });

  it("publishes .targets.json per version, 24.10.3 included", async () => {
    expect(await readJson("releases/23.05.4/.targets.json")).toEqual({
      "ath79/generic": "mips_24kc",
      "ramips/mt7621": "mipsel_24kc",
      "x86/64": "x86_64",
    });
    const t24 = { "ath79/generic": "mips_24kc", "x86/64": "x86_64" };
    expect(await readJson("releases/24.10.4/.targets.json")).toEqual(t24);
    expect(await readJson("releases/24.10.3/.targets.json")).toEqual(t24);
    expect(await readJson("snapshots/.targets.json")).toEqual(t24);
  });

  it("publishes .overview.json with every profile", async () => {
    const overview = await readJson<{
      release: string;
      profiles: { id: string; target: string; titles: unknown[] }[];
    }>("releases/23.05.4/.overview.json");
    expect(overview.release).toBe("23.05.4");
    expect(overview.profiles).toContainEqual({
      id: "tplink_archer-c7-v5",
      target: "ath79/generic",
      titles: [{ model: "Archer C7", variant: "v5", vendor: "TP-Link" }],
    });
    expect(overview.profiles.filter((p) => p.target === "ramips/mt7621")).toHaveLength(237);
  });
});

describe("profiles.json", () => {
  it("has OpenWrt's fields, revisions and linux_kernel where kmods are split", async () => {
    const p23 = await readJson<ProfilesJson>("releases/23.05.4/targets/ath79/generic/profiles.json");
    expect(Object.keys(p23)).toEqual([
      "arch_packages",
      "default_packages",
      "metadata_version",
      "profiles",
      "source_date_epoch",
      "target",
      "version_code",
      "version_number",
    ]);
    expect(p23.version_code).toBe("r24012-d8dd03c46f");
    expect(p23.metadata_version).toBe(1);
    const c7 = p23.profiles["tplink_archer-c7-v5"]!;
    expect(c7.supported_devices).toEqual(["tplink,archer-c7-v5", "archer-c7-v5"]);
    expect(c7.image_prefix).toBe("openwrt-23.05.4-ath79-generic-tplink_archer-c7-v5");
    expect(c7.images.map((i) => i.name)).toEqual([
      "openwrt-23.05.4-ath79-generic-tplink_archer-c7-v5-initramfs-kernel.bin",
      "openwrt-23.05.4-ath79-generic-tplink_archer-c7-v5-squashfs-factory.bin",
      "openwrt-23.05.4-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
    ]);

    const p24 = await readJson<ProfilesJson>("releases/24.10.4/targets/x86/64/profiles.json");
    expect(p24.version_code).toBe("r28959-29397011cc");
    expect(p24.linux_kernel).toMatchObject({ version: "6.6.110", release: "1" });
    expect(p24.linux_kernel!.vermagic).toMatch(/^[0-9a-f]{32}$/);
    const kmods = `releases/24.10.4/targets/x86/64/kmods/6.6.110-1-${p24.linux_kernel!.vermagic}`;
    expect(info.versions["24.10.4"]!.targets["x86/64"]!.kmods).toBe(kmods);
    expect(await readText(`${kmods}/Packages`)).toContain("Package: kmod-e1000e\nVersion: 6.6.110-r1\n");
    expect(await readText("releases/24.10.4/targets/x86/64/packages/Packages")).not.toContain(
      "Package: kmod-",
    );

    const snap = await readJson<ProfilesJson>("snapshots/targets/ath79/generic/profiles.json");
    expect(snap.version_number).toBe("SNAPSHOT");
    expect(snap.version_code).toMatch(/^r30000-[0-9a-f]{10}$/);
    expect(snap.default_packages).toContain("apk-mbedtls");
    expect(snap.profiles["tplink_archer-c7-v5"]!.image_prefix).toBe(
      "openwrt-ath79-generic-tplink_archer-c7-v5",
    );
    const snapKmods = (await readdir(path.join(info.dir, "snapshots/targets/ath79/generic/kmods")))[0];
    expect(snapKmods).toBe(`6.18.5-1-${snap.linux_kernel!.vermagic}`);
  });

  it("serves the real 23.05.4 ramips/mt7621 profiles with recomputed hashes for built images", async () => {
    const real = JSON.parse(
      await readFile(
        new URL("../../fixtures/mirror/data/23.05.4-ramips-mt7621-profiles.json", import.meta.url),
        "utf8",
      ),
    ) as ProfilesJson;
    const ours = await readJson<ProfilesJson>("releases/23.05.4/targets/ramips/mt7621/profiles.json");
    expect(ours.arch_packages).toBe("mipsel_24kc");
    expect(Object.keys(ours.profiles)).toEqual(Object.keys(real.profiles));
    for (const [id, profile] of Object.entries(real.profiles)) {
      const mine = ours.profiles[id]!;
      expect(mine.supported_devices).toEqual(profile.supported_devices);
      expect(mine.titles).toEqual(profile.titles);
      expect(mine.device_packages).toEqual(profile.device_packages);
      expect(mine.images.map((i) => [i.name, i.type, i.filesystem])).toEqual(
        profile.images.map((i) => [i.name, i.type, i.filesystem]),
      );
      for (const [i, image] of mine.images.entries()) {
        if (image.filesystem === "squashfs") expect(image.sha256).not.toBe(profile.images[i]!.sha256);
        else expect(image.sha256).toBe(profile.images[i]!.sha256);
      }
    }
    expect(ours.profiles["xiaomi_mi-router-3g"]!.supported_devices).toEqual([
      "xiaomi,mi-router-3g",
      "R3G",
      "mir3g",
      "xiaomi,mir3g",
    ]);
  });
});

describe("signatures and checksums", () => {
  it("signs sha256sums, which lists the ImageBuilder and profiles.json with their hashes", async () => {
    for (const [version, v] of Object.entries(info.versions)) {
      for (const [target, t] of Object.entries(v.targets)) {
        const dir = `${v.path}/targets/${target}`;
        const sums = await readText(`${dir}/sha256sums`);
        const sig = await readText(`${dir}/sha256sums.sig`);
        expect(verifyMessage(sums, sig, info.publicKeyLine)).toEqual({ ok: true });
        const ib = path.basename(t.imagebuilder);
        expect(ib).toMatch(
          version === "SNAPSHOT"
            ? /^openwrt-imagebuilder-[a-z0-9]+-[a-z0-9]+\.Linux-x86_64\.tar\.zst$/
            : version === "23.05.4"
              ? /^openwrt-imagebuilder-23\.05\.4-[a-z0-9]+-[a-z0-9]+\.Linux-x86_64\.tar\.xz$/
              : /^openwrt-imagebuilder-24\.10\.4-[a-z0-9]+-[a-z0-9]+\.Linux-x86_64\.tar\.zst$/,
        );
        expect(sums).toContain(`${sha256(await read(t.imagebuilder))} *${ib}\n`);
        expect(sums).toContain(`${sha256(await read(`${dir}/profiles.json`))} *profiles.json\n`);
        // the regex upstream ASU uses to find the archive
        expect(/^(.{64}) \*(openwrt-imagebuilder-.+?\.Linux-x86_64\.tar\.(xz|zst))$/m.exec(sums)?.[2]).toBe(
          ib,
        );
      }
    }
  });

  it("signs opkg indexes (Packages.sig) and ships Packages.gz", async () => {
    const feed = "releases/23.05.4/packages/mips_24kc/base";
    const text = await readText(`${feed}/Packages`);
    expect(verifyMessage(text, await readText(`${feed}/Packages.sig`), info.publicKeyLine)).toEqual({
      ok: true,
    });
    expect(gunzipSync(await read(`${feed}/Packages.gz`)).toString("utf8")).toBe(text);
    expect(text).toMatch(
      /^Package: libubox20240329\nVersion: 2024\.03\.29~eb9bcb64-1\nDepends: libc\nProvides: libubox\n/m,
    );
    expect(text).toMatch(/^ABIVersion: 20240329$/m);
    expect(text).toMatch(/^Package: dnsmasq-full\n(.+\n)*Conflicts: dnsmasq\n/m);
    const sha = /Filename: (busybox_[^\n]+\.ipk)\nSize: (\d+)\nSHA256sum: ([0-9a-f]{64})/.exec(text);
    expect(sha).not.toBeNull();
    const ipk = await read(`${feed}/${sha![1]}`);
    expect(ipk.length).toBe(Number(sha![2]));
    expect(sha256(ipk)).toBe(sha![3]);
    await expect(stat(path.join(info.dir, feed, "index.json"))).rejects.toThrow();
  });

  it("publishes index.json version 2 (ABI-free names) for 24.10 and SNAPSHOT", async () => {
    const i24 = await readJson<{ version: number; architecture: string; packages: Record<string, string> }>(
      "releases/24.10.4/packages/mips_24kc/base/index.json",
    );
    expect(i24.version).toBe(2);
    expect(i24.architecture).toBe("mips_24kc");
    expect(i24.packages.libubox).toBe("2024.03.29~eb9bcb64-r1");
    expect(i24.packages.libubox20240329).toBeUndefined();
    expect(await readText("releases/24.10.4/packages/mips_24kc/base/Packages")).toContain(
      "Package: libubox20240329\n",
    );

    const snap = await readJson<{ version: number; packages: Record<string, string> }>(
      "snapshots/packages/x86_64/luci/index.json",
    );
    expect(snap.version).toBe(2);
    expect(snap.packages["luci-app-package-manager"]).toBeDefined();
    expect(snap.packages["luci-app-opkg"]).toBeUndefined();
  });

  it("signs apk indexes inside packages.adb", async () => {
    const tool = await loadImageBuilderTool();
    const adb = tool.splitAdb(await read("snapshots/packages/x86_64/base/packages.adb"));
    expect(adb).toBeDefined();
    expect(verifyMessage(adb!.payload, adb!.signature, info.publicKeyLine)).toEqual({ ok: true });
    const names = tool.parseAdbPayload(adb!.payload).map((p) => p.name);
    expect(names).toContain("apk-mbedtls");
    expect(names).not.toContain("opkg");
  });
});

describe("feeds and packages", () => {
  it("lists feeds in packages/<arch>/feeds.conf and targets' feeds.buildinfo", async () => {
    const conf = await readText("releases/23.05.4/packages/mipsel_24kc/feeds.conf");
    expect(
      conf
        .split("\n")
        .filter(Boolean)
        .map((l) => l.split(" ")[1]),
    ).toEqual(["base", "luci", "packages", "routing", "telephony"]);
    const buildinfo = await readText("releases/24.10.4/targets/x86/64/feeds.buildinfo");
    expect(buildinfo).toMatch(
      /^src-git packages https:\/\/git\.openwrt\.org\/feed\/packages\.git\^[0-9a-f]{40}$/m,
    );
    expect(await readText("releases/24.10.4/targets/x86/64/version.buildinfo")).toBe("r28959-29397011cc\n");
  });

  it("follows OpenWrt's package changes between branches", async () => {
    const names = async (rel: string) =>
      (await readText(rel))
        .split("\n")
        .filter((l) => l.startsWith("Package: "))
        .map((l) => l.slice(9));
    const pk23 = await names("releases/23.05.4/packages/x86_64/packages/Packages");
    const pk24 = await names("releases/24.10.4/packages/x86_64/packages/Packages");
    expect(pk23).toContain("auc");
    expect(pk23).not.toContain("owut");
    expect(pk24).toContain("owut");
    expect(pk24).not.toContain("auc");
    const luci24 = await names("releases/24.10.4/packages/x86_64/luci/Packages");
    expect(luci24).toContain("luci-app-package-manager");
    expect(luci24).toContain("luci-proto-wireguard");
    expect(luci24).not.toContain("luci-app-wireguard");
    expect(luci24).not.toContain("luci-i18n-base-en");
    const snapKmods = info.versions.SNAPSHOT!.targets["x86/64"]!.kmods!;
    const snap = await readJson<{ packages: Record<string, string> }>(`${snapKmods}/index.json`);
    expect(snap.packages["kmod-wireguard"]).toBe("6.18.5-r1");
    expect(snap.packages["kmod-nf-conntrack6"]).toBeUndefined();
  });
});
