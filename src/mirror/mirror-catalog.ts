import { readFileSync } from "node:fs";

/**
 * What the synthetic OpenWrt mirror publishes: versions, targets, profiles and packages.
 * docs/mirror.md lists the same facts for people writing tests against the mirror; keep both in step.
 */

export type Family = "23.05" | "24.10" | "SNAPSHOT";
export type PackageManager = "opkg" | "apk";

export interface VersionSpec {
  version: string;
  family: Family;
  /** Path below the mirror root, as `branches.<b>.path` with the version filled in. */
  path: string;
  packageManager: PackageManager;
  revisionNumber: number;
  revision: string;
  sourceDateEpoch: number;
  kernelVersion: string;
  /** kmods live in targets/<t>/<s>/kmods/<kernel>-<release>-<vermagic>/ instead of targets/<t>/<s>/packages/. */
  kmodsSplit: boolean;
  /** Library packages carry an ABI version in their name (libubox20240329) and an ABIVersion field. */
  abiNames: boolean;
  /** Feeds also carry index.json with "version": 2 (ABI-free names). */
  indexJson: boolean;
  archiveExt: "tar.zst" | "tar.xz";
  /** Image and ImageBuilder file names contain the version (releases), or not (snapshots). */
  versionFilenames: boolean;
  /** profiles.json carries linux_kernel {version, release, vermagic}. */
  linuxKernelInProfiles: boolean;
  targets: string[];
}

export const FEEDS = ["base", "luci", "packages", "routing", "telephony"] as const;
export type FeedName = (typeof FEEDS)[number];

/** Git hashes of the feeds, for feeds.conf and feeds.buildinfo. */
export const FEED_HASHES: Record<FeedName, string> = {
  base: "d8dd03c46fb1e7b3e0d0d3a7a2b3f1f2a4b5c6d7",
  packages: "063b2393cbc3e5aab9d2b40b2911cab1c3967c59",
  luci: "b07cf9dcfc37e021e5619a41c847e63afbd5d34a",
  routing: "648753932d5a7deff7f2bdb33c000018a709ad84",
  telephony: "86af194d03592121f5321474ec9918dd109d3057",
};

export const FEED_GIT: Record<FeedName, string> = {
  base: "https://git.openwrt.org/openwrt/openwrt.git",
  packages: "https://git.openwrt.org/feed/packages.git",
  luci: "https://git.openwrt.org/project/luci.git",
  routing: "https://git.openwrt.org/feed/routing.git",
  telephony: "https://git.openwrt.org/feed/telephony.git",
};

export const VERSIONS_JSON = {
  stable_version: "24.10.4",
  oldstable_version: "23.05.4",
  upcoming_version: null,
  versions_list: ["24.10.4", "24.10.3", "23.05.4"],
};

/** Listed in .versions.json; only {path}/.targets.json is published for it. */
export const MINIMAL_VERSIONS = ["24.10.3"];

export const DEFAULT_SNAPSHOT_REVISION = 30000;

export function snapshotRevision(n: number): string {
  return `r${n}-${hexFrom(`snapshot-${n}`, 10)}`;
}

/** A stable pseudo-random hex string derived from `seed` (FNV-1a based; not cryptographic). */
export function hexFrom(seed: string, length: number): string {
  let out = "";
  let h = 0x811c9dc5;
  let i = 0;
  while (out.length < length) {
    for (const ch of `${seed}#${i}`) {
      h ^= ch.charCodeAt(0);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    out += h.toString(16).padStart(8, "0");
    i += 1;
  }
  return out.slice(0, length);
}

export function versionSpecs(snapshotRev: number): VersionSpec[] {
  return [
    {
      version: "SNAPSHOT",
      family: "SNAPSHOT",
      path: "snapshots",
      packageManager: "apk",
      revisionNumber: snapshotRev,
      revision: snapshotRevision(snapshotRev),
      // one minute per revision, so a newer snapshot is also a later one
      sourceDateEpoch: 1767225600 + (snapshotRev - DEFAULT_SNAPSHOT_REVISION) * 60,
      kernelVersion: "6.18.5",
      kmodsSplit: true,
      abiNames: false,
      indexJson: true,
      archiveExt: "tar.zst",
      versionFilenames: false,
      linuxKernelInProfiles: true,
      targets: ["ath79/generic", "x86/64"],
    },
    {
      version: "24.10.4",
      family: "24.10",
      path: "releases/24.10.4",
      packageManager: "opkg",
      revisionNumber: 28959,
      revision: "r28959-29397011cc",
      sourceDateEpoch: 1759938541,
      kernelVersion: "6.6.110",
      kmodsSplit: true,
      abiNames: true,
      indexJson: true,
      archiveExt: "tar.zst",
      versionFilenames: true,
      linuxKernelInProfiles: true,
      targets: ["ath79/generic", "x86/64"],
    },
    {
      version: "23.05.4",
      family: "23.05",
      path: "releases/23.05.4",
      packageManager: "opkg",
      revisionNumber: 24012,
      revision: "r24012-d8dd03c46f",
      sourceDateEpoch: 1721081658,
      kernelVersion: "5.15.162",
      kmodsSplit: false,
      abiNames: true,
      indexJson: false,
      archiveExt: "tar.xz",
      versionFilenames: true,
      linuxKernelInProfiles: false,
      targets: ["ath79/generic", "x86/64", "ramips/mt7621"],
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// targets and profiles

export interface ImageDef {
  /** Name after the image prefix, e.g. "-squashfs-sysupgrade.bin". */
  suffix: string;
  type: string;
  /** "squashfs" and "ext4" images are built by the fake ImageBuilder; others are listed only. */
  filesystem: string | undefined;
  /** Upstream hashes for images the ImageBuilder does not build (ramips data). */
  sha256?: string;
  sha256_unsigned?: string;
}

export interface Title {
  vendor?: string;
  model?: string;
  variant?: string;
  title?: string;
}

export interface ProfileSpec {
  id: string;
  titles: Title[];
  supportedDevices: string[];
  devicePackages: string[];
  images: ImageDef[];
  /** check-size limit of squashfs images in bytes (IMAGE_SIZE); undefined = rootfs partition. */
  imageSize: number | undefined;
}

export interface TargetSpec {
  target: string;
  board: string;
  subtarget: string;
  /** `make info`'s "Current Architecture". */
  arch: string;
  archPackages: string;
  kernelSize: number;
  filesystems: string[];
  /** CONFIG_TARGET_ROOTFS_PARTSIZE in MiB (x86 only). */
  rootfsPartsizeMb: number | undefined;
  defaultPackages: string[];
  profiles: ProfileSpec[];
}

const KIB = 1024;

const ATH79_DEFAULTS = [
  "base-files",
  "busybox",
  "ca-bundle",
  "dnsmasq",
  "dropbear",
  "firewall4",
  "fstools",
  "kmod-ath9k",
  "kmod-gpio-button-hotplug",
  "kmod-nft-offload",
  "libc",
  "libgcc",
  "libustream-mbedtls",
  "logd",
  "mtd",
  "netifd",
  "nftables",
  "odhcp6c",
  "odhcpd-ipv6only",
  "opkg",
  "ppp",
  "ppp-mod-pppoe",
  "procd",
  "procd-seccomp",
  "procd-ujail",
  "swconfig",
  "uboot-envtools",
  "uci",
  "uclient-fetch",
  "urandom-seed",
  "urngd",
  "wpad-basic-mbedtls",
];

const X86_DEFAULTS = [
  "base-files",
  "busybox",
  "ca-bundle",
  "dnsmasq",
  "dropbear",
  "e2fsprogs",
  "firewall4",
  "fstools",
  "grub2-bios-setup",
  "kmod-button-hotplug",
  "kmod-nft-offload",
  "libc",
  "libgcc",
  "libustream-mbedtls",
  "logd",
  "mkf2fs",
  "mtd",
  "netifd",
  "nftables",
  "odhcp6c",
  "odhcpd-ipv6only",
  "opkg",
  "partx-utils",
  "ppp",
  "ppp-mod-pppoe",
  "procd",
  "procd-seccomp",
  "procd-ujail",
  "uci",
  "uclient-fetch",
  "urandom-seed",
  "urngd",
];

const RAMIPS_DEFAULTS = [
  "base-files",
  "busybox",
  "ca-bundle",
  "dnsmasq",
  "dropbear",
  "firewall4",
  "fstools",
  "kmod-gpio-button-hotplug",
  "kmod-leds-gpio",
  "kmod-nft-offload",
  "libc",
  "libgcc",
  "libustream-mbedtls",
  "logd",
  "mtd",
  "netifd",
  "nftables",
  "odhcp6c",
  "odhcpd-ipv6only",
  "opkg",
  "ppp",
  "ppp-mod-pppoe",
  "procd",
  "procd-seccomp",
  "procd-ujail",
  "uboot-envtools",
  "uci",
  "uclient-fetch",
  "urandom-seed",
  "urngd",
  "wpad-basic-mbedtls",
];

const SQUASHFS_FACTORY_SYSUPGRADE: [string, string, string | undefined][] = [
  ["-initramfs-kernel.bin", "kernel", "initramfs"],
  ["-squashfs-factory.bin", "factory", "squashfs"],
  ["-squashfs-sysupgrade.bin", "sysupgrade", "squashfs"],
];

function images(list: [string, string, string | undefined][]): ImageDef[] {
  return list.map(([suffix, type, filesystem]) => ({ suffix, type, filesystem }));
}

// Profiles copied from OpenWrt 23.05.4's ath79/generic profiles.json (titles, devices, packages,
// image names); image_size is each device's IMAGE_SIZE.
const ATH79_PROFILES: ProfileSpec[] = [
  {
    id: "buffalo_wzr-hp-g300nh-rb",
    titles: [{ model: "WZR-HP-G300NH (RTL8366RB switch)", vendor: "Buffalo" }],
    supportedDevices: ["buffalo,wzr-hp-g300nh-rb", "wzr-hp-g300nh"],
    devicePackages: [
      "kmod-gpio-cascade",
      "kmod-mux-gpio",
      "kmod-usb2",
      "kmod-usb-ledtrig-usbport",
      "kmod-switch-rtl8366rb",
    ],
    images: images([
      ["-squashfs-factory.bin", "factory", "squashfs"],
      ["-squashfs-tftp.bin", "tftp", "squashfs"],
      ["-squashfs-sysupgrade.bin", "sysupgrade", "squashfs"],
      ["-initramfs-kernel.bin", "kernel", "initramfs"],
    ]),
    imageSize: 32256 * KIB,
  },
  {
    id: "glinet_gl-ar300m16",
    titles: [{ model: "GL-AR300M16", vendor: "GL.iNet" }],
    supportedDevices: ["glinet,gl-ar300m16", "gl-ar300m"],
    devicePackages: ["kmod-usb2"],
    images: images([
      ["-squashfs-sysupgrade.bin", "sysupgrade", "squashfs"],
      ["-initramfs-kernel.bin", "kernel", "initramfs"],
    ]),
    imageSize: 16000 * KIB,
  },
  {
    id: "netgear_wndr3700",
    titles: [{ model: "WNDR3700", variant: "v1", vendor: "NETGEAR" }],
    supportedDevices: ["netgear,wndr3700", "wndr3700"],
    devicePackages: [
      "kmod-usb-ohci",
      "kmod-usb2",
      "kmod-usb-ledtrig-usbport",
      "kmod-leds-reset",
      "kmod-owl-loader",
      "kmod-switch-rtl8366s",
    ],
    images: images([
      ["-squashfs-factory.img", "factory", "squashfs"],
      ["-squashfs-factory-NA.img", "factory-NA", "squashfs"],
      ["-squashfs-sysupgrade.bin", "sysupgrade", "squashfs"],
      ["-initramfs-kernel.bin", "kernel", "initramfs"],
    ]),
    imageSize: 7680 * KIB,
  },
  {
    id: "tplink_archer-c6-v2",
    titles: [{ model: "Archer C6", variant: "v2 (EU/RU/JP)", vendor: "TP-Link" }],
    supportedDevices: ["tplink,archer-c6-v2"],
    devicePackages: ["kmod-ath10k-ct", "ath10k-firmware-qca9888-ct"],
    images: images(SQUASHFS_FACTORY_SYSUPGRADE),
    imageSize: 7808 * KIB,
  },
  {
    id: "tplink_archer-c7-v2",
    titles: [{ model: "Archer C7", variant: "v2", vendor: "TP-Link" }],
    supportedDevices: ["tplink,archer-c7-v2", "archer-c7"],
    devicePackages: ["kmod-usb2", "kmod-usb-ledtrig-usbport", "kmod-ath10k-ct", "ath10k-firmware-qca988x-ct"],
    images: images([
      ["-squashfs-factory-eu.bin", "factory-eu", "squashfs"],
      ["-initramfs-kernel.bin", "kernel", "initramfs"],
      ["-squashfs-factory.bin", "factory", "squashfs"],
      ["-squashfs-factory-us.bin", "factory-us", "squashfs"],
      ["-squashfs-sysupgrade.bin", "sysupgrade", "squashfs"],
    ]),
    imageSize: 15872 * KIB,
  },
  {
    id: "tplink_archer-c7-v5",
    titles: [{ model: "Archer C7", variant: "v5", vendor: "TP-Link" }],
    supportedDevices: ["tplink,archer-c7-v5", "archer-c7-v5"],
    devicePackages: ["kmod-usb2", "kmod-usb-ledtrig-usbport", "kmod-ath10k-ct", "ath10k-firmware-qca988x-ct"],
    images: images(SQUASHFS_FACTORY_SYSUPGRADE),
    imageSize: 15104 * KIB,
  },
  {
    id: "tplink_tl-wr842n-v3",
    titles: [{ model: "TL-WR842N", variant: "v3", vendor: "TP-Link" }],
    supportedDevices: ["tplink,tl-wr842n-v3", "tl-wr842n-v3"],
    devicePackages: ["kmod-usb2", "kmod-usb-ledtrig-usbport"],
    images: images([
      ["-squashfs-factory.bin", "factory", "squashfs"],
      ["-squashfs-sysupgrade.bin", "sysupgrade", "squashfs"],
      ["-initramfs-kernel.bin", "kernel", "initramfs"],
    ]),
    imageSize: 7808 * KIB,
  },
  {
    id: "ubnt_unifiac-lite",
    titles: [{ model: "UniFi AC Lite", vendor: "Ubiquiti" }],
    supportedDevices: ["ubnt,unifiac-lite", "unifiac-lite"],
    devicePackages: ["kmod-ath10k-ct", "ath10k-firmware-qca988x-ct", "-swconfig"],
    images: images([
      ["-initramfs-kernel.bin", "kernel", "initramfs"],
      ["-squashfs-sysupgrade.bin", "sysupgrade", "squashfs"],
    ]),
    imageSize: 15744 * KIB,
  },
];

const X86_PROFILE: ProfileSpec = {
  id: "generic",
  titles: [{ model: "x86/64", vendor: "Generic" }],
  supportedDevices: [],
  devicePackages: [
    "kmod-amazon-ena",
    "kmod-amd-xgbe",
    "kmod-bnx2",
    "kmod-e1000e",
    "kmod-e1000",
    "kmod-forcedeth",
    "kmod-fs-vfat",
    "kmod-igb",
    "kmod-igc",
    "kmod-ixgbe",
    "kmod-r8169",
    "kmod-tg3",
  ],
  images: images([
    ["-ext4-combined.img.gz", "combined", "ext4"],
    ["-squashfs-combined.img.gz", "combined", "squashfs"],
    ["-ext4-rootfs.img.gz", "rootfs", "ext4"],
    ["-squashfs-combined-efi.img.gz", "combined-efi", "squashfs"],
    ["-squashfs-rootfs.img.gz", "rootfs", "squashfs"],
    ["-ext4-combined-efi.img.gz", "combined-efi", "ext4"],
  ]),
  imageSize: undefined,
};

/** All ramips/mt7621 devices get this check-size limit (the data has no IMAGE_SIZE). */
const RAMIPS_IMAGE_SIZE = 15744 * KIB;

const ASSET_DATA = new URL("../../src/mirror/data/", import.meta.url);

interface UpstreamProfiles {
  default_packages: string[];
  profiles: Record<
    string,
    {
      device_packages: string[];
      image_prefix: string;
      images: { filesystem?: string; name: string; sha256: string; sha256_unsigned: string; type: string }[];
      supported_devices: string[];
      titles: Title[];
    }
  >;
}

function ramipsProfiles(): ProfileSpec[] {
  const data = JSON.parse(
    readFileSync(new URL("23.05.4-ramips-mt7621-profiles.json", ASSET_DATA), "utf8"),
  ) as UpstreamProfiles;
  return Object.entries(data.profiles).map(([id, p]) => ({
    id,
    titles: p.titles,
    supportedDevices: p.supported_devices,
    devicePackages: p.device_packages,
    images: p.images.map((img) => ({
      suffix: img.name.slice(p.image_prefix.length),
      type: img.type,
      filesystem: img.filesystem,
      sha256: img.sha256,
      sha256_unsigned: img.sha256_unsigned,
    })),
    imageSize: RAMIPS_IMAGE_SIZE,
  }));
}

export function targetSpec(target: string, family: Family): TargetSpec {
  const apk = family === "SNAPSHOT";
  const withManager = (list: string[]) => list.map((p) => (apk && p === "opkg" ? "apk-mbedtls" : p));
  switch (target) {
    case "ath79/generic":
      return {
        target,
        board: "ath79",
        subtarget: "generic",
        arch: "mips",
        archPackages: "mips_24kc",
        kernelSize: 2048 * KIB,
        filesystems: ["squashfs"],
        rootfsPartsizeMb: undefined,
        defaultPackages: withManager(ATH79_DEFAULTS),
        profiles: ATH79_PROFILES,
      };
    case "x86/64":
      return {
        target,
        board: "x86",
        subtarget: "64",
        arch: "x86_64",
        archPackages: "x86_64",
        kernelSize: 6144 * KIB,
        filesystems: ["squashfs", "ext4"],
        rootfsPartsizeMb: 104,
        defaultPackages: withManager(X86_DEFAULTS),
        profiles: [X86_PROFILE],
      };
    case "ramips/mt7621":
      return {
        target,
        board: "ramips",
        subtarget: "mt7621",
        arch: "mipsel",
        archPackages: "mipsel_24kc",
        kernelSize: 2816 * KIB,
        filesystems: ["squashfs"],
        rootfsPartsizeMb: undefined,
        defaultPackages: withManager(RAMIPS_DEFAULTS),
        profiles: ramipsProfiles(),
      };
    default:
      throw new Error(`unknown target ${target}`);
  }
}

// ---------------------------------------------------------------------------------------------
// packages

export type FeedSlot = FeedName | "core" | "kmods";

export interface PackageSpec {
  name: string;
  feed: FeedSlot;
  /** Versions in 23.05, 24.10 and SNAPSHOT; null where the package does not exist. */
  versions: [string | null, string | null, string | null];
  /** Installed-Size in KiB (what the image-size check counts). */
  sizeKib: number;
  depends: string[];
  /** ABI version for 23.05/24.10 (opkg): the package is named name+abi and Provides name. */
  abi?: [string, string];
  conflicts?: string[];
  provides?: string[];
  /** Architecture-independent ("all"), like LuCI's JavaScript and translations. */
  archAll?: boolean;
  section?: string;
  description?: string;
}

const ALL3 = (v1: string, v2: string, v3: string): [string, string, string] => [v1, v2, v3];

function p(
  name: string,
  feed: FeedSlot,
  versions: [string | null, string | null, string | null],
  sizeKib: number,
  depends: string[] = [],
  extra: Partial<PackageSpec> = {},
): PackageSpec {
  return { name, feed, versions, sizeKib, depends, ...extra };
}

const LUCI_23 = "git-24.086.45142-09d5a38";
const LUCI_24 = "25.276.27830~e1c6e5d";
const LUCI_SNAP = "26.012.61922~7a8e2b0";
const luci = (name: string, sizeKib: number, depends: string[], extra: Partial<PackageSpec> = {}) =>
  p(name, "luci", [LUCI_23, LUCI_24, LUCI_SNAP], sizeKib, depends, {
    archAll: true,
    section: "luci",
    ...extra,
  });

/**
 * Every package of every feed. Versions follow each branch's style: 23.05 "1.36.1-1",
 * 24.10 "1.36.1-r2" (opkg), SNAPSHOT "1.37.0-r5" (apk).
 */
export const PACKAGES: PackageSpec[] = [
  // core: targets/<t>/<s>/packages (base-files and kernel versions are computed per version)
  p("base-files", "core", ["", "", ""], 60, ["netifd", "procd", "jsonfilter", "ubus", "fstools", "fwtool"]),
  p("kernel", "core", ["", "", ""], 0, []),
  p("libc", "core", ALL3("1.2.4-4", "1.2.5-r4", "1.2.5-r5"), 620, ["libgcc"]),
  p("libgcc", "core", ALL3("12.3.0-4", "13.3.0-r4", "14.3.0-r5"), 80, []),

  // base
  p("busybox", "base", ALL3("1.36.1-1", "1.36.1-r2", "1.37.0-r5"), 420, ["libc"]),
  p("ca-bundle", "base", ALL3("20230311-1", "20240203-r1", "20250419-r2"), 230, [], { archAll: true }),
  p("dnsmasq", "base", ALL3("2.90-2", "2.90-r4", "2.90-r3"), 300, ["libc", "libubus"]),
  p(
    "dnsmasq-full",
    "base",
    ALL3("2.90-2", "2.90-r4", "2.90-r3"),
    420,
    ["libc", "libubus", "libnettle", "kmod-ipt-ipset"],
    {
      conflicts: ["dnsmasq"],
      provides: ["dnsmasq"],
    },
  ),
  p("libnettle", "base", ALL3("3.9.1-1", "3.10.1-r1", "3.10.1-r1"), 200, ["libgmp"], { abi: ["8", "8"] }),
  p("libgmp", "base", ALL3("6.2.1-1", "6.3.0-r1", "6.3.0-r1"), 300, ["libc"], { abi: ["10", "10"] }),
  p("dropbear", "base", ALL3("2022.82-6", "2024.86-r1", "2025.88-r2"), 200, ["libc"]),
  p(
    "firewall4",
    "base",
    ALL3("2023-09-01-598d9fbb-1", "2024.12.18~18fc0ead-r1", "2025.10.12~0e2e8b6b-r1"),
    100,
    ["kmod-nft-core", "nftables", "ucode", "ucode-mod-fs", "ucode-mod-ubus", "ucode-mod-uci"],
  ),
  p(
    "fstools",
    "base",
    ALL3("2023-02-28-bfe882d5-1", "2024.07.14~408c2cc4-r1", "2025.05.21~d7ee5d65-r1"),
    110,
    ["ubox", "libubox", "libuci", "libblobmsg-json", "libjson-c"],
  ),
  p("fwtool", "base", ALL3("2019-11-12-8f7fe925-1", "2019.11.12~8f7fe925-r1", "2019.11.12~8f7fe925-r1"), 20, [
    "libc",
  ]),
  p("ubox", "base", ALL3("2022-08-13-4c7b720b-2", "2024.04.26~85f10530-r1", "2025.07.23~a99f7a42-r1"), 60, [
    "libubox",
    "ubusd",
    "ubus",
    "libubus",
    "libuci",
  ]),
  p("logd", "base", ALL3("2022-08-13-4c7b720b-2", "2024.04.26~85f10530-r1", "2025.07.23~a99f7a42-r1"), 30, [
    "libubox",
    "libubus",
    "libblobmsg-json",
  ]),
  p("mtd", "base", ALL3("26", "26-r1", "26-r2"), 40, ["libc"]),
  p(
    "netifd",
    "base",
    ALL3("2024-01-04-c18cc79d-2", "2024.12.17~ad4bd03b-r3", "2025.10.20~777f5942-r1"),
    250,
    ["libuci", "libnl-tiny", "libubus", "ubus", "ubusd", "jshn", "libubox", "ucode"],
  ),
  p(
    "nftables-json",
    "base",
    ALL3("1.0.8-1", "1.1.1-r1", "1.1.6-r1"),
    620,
    ["kmod-nft-core", "libnftnl", "jansson"],
    {
      provides: ["nftables"],
    },
  ),
  p("nftables-nojson", "base", ALL3("1.0.8-1", "1.1.1-r1", "1.1.6-r1"), 560, ["kmod-nft-core", "libnftnl"], {
    provides: ["nftables"],
    conflicts: ["nftables-json"],
  }),
  p("libnftnl", "base", ALL3("1.2.6-1", "1.2.8-r1", "1.3.0-r1"), 90, ["libc"], { abi: ["11", "11"] }),
  p("jansson", "base", ALL3("2.14-3", "2.14-r3", "2.14.1-r1"), 50, ["libc"], { abi: ["4", "4"] }),
  p(
    "odhcp6c",
    "base",
    ALL3("2023-05-12-bcd28363-20", "2024.09.25~b6ae9ffa-r1", "2025.10.09~6fc9dc3c-r1"),
    60,
    ["libubox"],
  ),
  p(
    "odhcpd-ipv6only",
    "base",
    ALL3("2023-10-24-d8118f6e-1", "2024.05.08~a2988231-r1", "2025.10.16~b6a6ebbd-r1"),
    120,
    ["libubox", "libuci", "libubus"],
  ),
  p("opkg", "base", ["2022-02-24-d038e5b6-2", "2024.10.16~38eccbb1-r1", null], 160, [
    "libc",
    "uclient-fetch",
    "libpthread",
  ]),
  p("libpthread", "core", ["1.2.4-4", "1.2.5-r4", null], 5, ["libgcc"]),
  p("apk-mbedtls", "base", [null, null, "3.0.0_pre20250925-r1"], 400, ["libc", "libmbedtls", "zlib"], {
    provides: ["apk"],
  }),
  p("zlib", "base", ALL3("1.3.1-1", "1.3.1-r1", "1.3.1-r1"), 90, ["libc"]),
  p("ppp", "base", ALL3("2.4.9.git-2021-01-04-4", "2.5.1-r1", "2.5.2-r1"), 300, ["libc", "kmod-ppp"]),
  p("ppp-mod-pppoe", "base", ALL3("2.4.9.git-2021-01-04-4", "2.5.1-r1", "2.5.2-r1"), 50, [
    "ppp",
    "kmod-pppoe",
  ]),
  p("procd", "base", ALL3("2023-06-25-2db83655-2", "2024.12.22~42d39376-r1", "2025.10.13~fe2c6b4b-r1"), 160, [
    "ubusd",
    "ubus",
    "libjson-script",
    "ubox",
    "libubox",
    "libubus",
  ]),
  p(
    "procd-seccomp",
    "base",
    ALL3("2023-06-25-2db83655-2", "2024.12.22~42d39376-r1", "2025.10.13~fe2c6b4b-r1"),
    40,
    ["libubox", "libblobmsg-json"],
  ),
  p(
    "procd-ujail",
    "base",
    ALL3("2023-06-25-2db83655-2", "2024.12.22~42d39376-r1", "2025.10.13~fe2c6b4b-r1"),
    100,
    ["libubox", "libubus", "libuci", "libblobmsg-json"],
  ),
  p(
    "libjson-script",
    "base",
    ALL3("2024-03-29-eb9bcb64-1", "2024.03.29~eb9bcb64-r1", "2025.07.23~49056d17-r1"),
    20,
    ["libubox"],
    { abi: ["20240329", "20240329"] },
  ),
  p("swconfig", "base", ALL3("12", "12-r1", "12-r2"), 40, ["libuci", "libnl-tiny"]),
  p("uboot-envtools", "base", ALL3("2023.04-1", "2024.10-r1", "2025.10-r1"), 50, ["libc"]),
  p("uci", "base", ALL3("2023-08-10-5781664d-1", "2023.08.10~5781664d-r1", "2025.01.20~16ff0bad-r1"), 30, [
    "libuci",
  ]),
  p(
    "uclient-fetch",
    "base",
    ALL3("2023-04-13-007d9454-1", "2024.10.22~88ae8f20-r1", "2025.10.03~54bcd45b-r1"),
    30,
    ["libuclient"],
  ),
  p("urandom-seed", "base", ALL3("3", "3-r1", "3-r2"), 5, [], { archAll: true }),
  p("urngd", "base", ALL3("2023-07-25-7aefb47b-1", "2023.11.01~44365eb1-r1", "2023.11.01~44365eb1-r1"), 20, [
    "libubox",
  ]),
  p(
    "wpad-basic-mbedtls",
    "base",
    ALL3("2023-09-08-e5ccbfc6-6", "2024.09.15~5ace39b0-r2", "2025.08.26~ce6e3a0b-r1"),
    700,
    ["libc", "libubus", "libucode", "libmbedtls", "libnl-tiny"],
    { provides: ["hostapd-common"] },
  ),
  p(
    "libubox",
    "base",
    ALL3("2024.03.29~eb9bcb64-1", "2024.03.29~eb9bcb64-r1", "2025.07.23~49056d17-r1"),
    80,
    ["libc"],
    {
      abi: ["20240329", "20240329"],
    },
  ),
  p(
    "libblobmsg-json",
    "base",
    ALL3("2024.03.29~eb9bcb64-1", "2024.03.29~eb9bcb64-r1", "2025.07.23~49056d17-r1"),
    20,
    ["libjson-c", "libubox"],
    { abi: ["20240329", "20240329"] },
  ),
  p("jshn", "base", ALL3("2024.03.29~eb9bcb64-1", "2024.03.29~eb9bcb64-r1", "2025.07.23~49056d17-r1"), 30, [
    "libjson-c",
    "libubox",
    "libblobmsg-json",
  ]),
  p(
    "libubus",
    "base",
    ALL3("2023-06-05-f787c97b-1", "2025.01.02~afa57cce-r1", "2025.10.17~60e04048-r1"),
    40,
    ["libubox"],
    {
      abi: ["20230605", "20250102"],
    },
  ),
  p("ubus", "base", ALL3("2023-06-05-f787c97b-1", "2025.01.02~afa57cce-r1", "2025.10.17~60e04048-r1"), 30, [
    "libubus",
    "libblobmsg-json",
    "ubusd",
  ]),
  p("ubusd", "base", ALL3("2023-06-05-f787c97b-1", "2025.01.02~afa57cce-r1", "2025.10.17~60e04048-r1"), 40, [
    "libubox",
    "libblobmsg-json",
  ]),
  p(
    "libuci",
    "base",
    ALL3("2023-08-10-5781664d-1", "2023.08.10~5781664d-r1", "2025.01.20~16ff0bad-r1"),
    50,
    ["libubox"],
    {
      abi: ["20130104", "20130104"],
    },
  ),
  p("libjson-c", "base", ALL3("0.16-3", "0.18-r1", "0.18-r1"), 80, ["libc"], { abi: ["5", "5"] }),
  p("libmbedtls", "base", ALL3("2.28.8-1", "3.6.4-r1", "3.6.5-r1"), 620, ["libc"], { abi: ["12", "21"] }),
  p(
    "libustream-mbedtls",
    "base",
    ALL3("2023-02-25-498f6e26-2", "2024.07.28~99bd3d2b-r1", "2025.10.03~5e1bc342-r1"),
    30,
    ["libubox", "libmbedtls"],
    { abi: ["20201210", "20201210"] },
  ),
  p(
    "libuclient",
    "base",
    ALL3("2023-04-13-007d9454-1", "2024.10.22~88ae8f20-r1", "2025.10.03~54bcd45b-r1"),
    30,
    ["libubox"],
    { abi: ["20201210", "20201210"] },
  ),
  p(
    "libnl-tiny",
    "base",
    ALL3("2023-07-27-bc92a280-1", "2025.03.19~c0df580a-r1", "2025.03.19~c0df580a-r1"),
    40,
    ["libc"],
    { abi: ["20230721", "20250319"] },
  ),
  p(
    "libucode",
    "base",
    ALL3("2023-11-07-a6e75e02-1", "2025.07.18~3f64c8d9-r1", "2025.10.23~d65a5ef2-r1"),
    250,
    ["libjson-c"],
    { abi: ["20230711", "20230711"] },
  ),
  p("ucode", "base", ALL3("2023-11-07-a6e75e02-1", "2025.07.18~3f64c8d9-r1", "2025.10.23~d65a5ef2-r1"), 20, [
    "libucode",
  ]),
  ...["fs", "ubus", "uci", "uloop", "math", "html", "uclient", "rtnl"].map((m) =>
    p(
      `ucode-mod-${m}`,
      "base",
      ALL3("2023-11-07-a6e75e02-1", "2025.07.18~3f64c8d9-r1", "2025.10.23~d65a5ef2-r1"),
      25,
      ["libucode"],
    ),
  ),
  p("rpcd", "base", ALL3("2023-07-01-c07ab2f9-1", "2024.09.17~a4f5a3c0-r1", "2025.10.02~6e8e5a1e-r1"), 90, [
    "libubus",
    "libubox",
    "libuci",
    "libblobmsg-json",
    "libjson-c",
  ]),
  ...["file", "iwinfo", "rpcsys", "ucode"].map((m) =>
    p(
      `rpcd-mod-${m}`,
      "base",
      ALL3("2023-07-01-c07ab2f9-1", "2024.09.17~a4f5a3c0-r1", "2025.10.02~6e8e5a1e-r1"),
      25,
      ["rpcd"],
    ),
  ),
  p("uhttpd", "base", ALL3("2023-06-25-34a8a74d-2", "2025.07.06~b3c6b3b0-r1", "2025.07.06~b3c6b3b0-r1"), 90, [
    "libubox",
    "libblobmsg-json",
    "libjson-script",
    "libjson-c",
  ]),
  p(
    "uhttpd-mod-ubus",
    "base",
    ALL3("2023-06-25-34a8a74d-2", "2025.07.06~b3c6b3b0-r1", "2025.07.06~b3c6b3b0-r1"),
    20,
    ["uhttpd", "libubus"],
  ),
  p(
    "cgi-io",
    "base",
    ALL3("2022-08-10-901b0f04-21", "2022.08.10~901b0f04-r21", "2022.08.10~901b0f04-r22"),
    20,
    ["libubox", "libubus"],
  ),
  p(
    "jsonfilter",
    "base",
    ALL3("2024-01-23-594cfa86-1", "2025.04.18~8a86fb78-r1", "2025.04.18~8a86fb78-r1"),
    20,
    ["libubox", "libjson-c"],
  ),
  p("e2fsprogs", "base", ALL3("1.47.0-2", "1.47.0-r2", "1.47.3-r1"), 500, ["libc", "libuuid", "libext2fs"]),
  p("libuuid", "base", ALL3("2.39-2", "2.40.2-r1", "2.41.2-r1"), 30, ["libc"], { abi: ["1", "1"] }),
  p("libext2fs", "base", ALL3("1.47.0-2", "1.47.0-r2", "1.47.3-r1"), 400, ["libc", "libuuid"], {
    abi: ["2", "2"],
  }),
  p("grub2-bios-setup", "base", ALL3("2.06-5", "2.12-r1", "2.12-r3"), 600, ["libc"]),
  p("mkf2fs", "base", ALL3("1.16.0-1", "1.16.0-r2", "1.16.0-r3"), 120, ["libc", "libf2fs"]),
  p("libf2fs", "base", ALL3("1.16.0-1", "1.16.0-r2", "1.16.0-r3"), 80, ["libc", "libuuid"], {
    abi: ["6", "6"],
  }),
  p("partx-utils", "base", ALL3("2.39-2", "2.40.2-r1", "2.41.2-r1"), 100, [
    "libc",
    "libblkid",
    "libsmartcols",
  ]),
  p("libblkid", "base", ALL3("2.39-2", "2.40.2-r1", "2.41.2-r1"), 200, ["libc", "libuuid"], {
    abi: ["1", "1"],
  }),
  p("libsmartcols", "base", ALL3("2.39-2", "2.40.2-r1", "2.41.2-r1"), 150, ["libc"], { abi: ["1", "1"] }),
  p(
    "ath10k-firmware-qca988x-ct",
    "base",
    ALL3("2023-03-10-6e4f3f3e-1", "2024.07.30~ec3e6b71-r1", "2025.01.31~d1ab4b40-r1"),
    900,
    [],
  ),
  p(
    "ath10k-firmware-qca9888-ct",
    "base",
    ALL3("2023-03-10-6e4f3f3e-1", "2024.07.30~ec3e6b71-r1", "2025.01.31~d1ab4b40-r1"),
    900,
    [],
  ),
  p(
    "ipq-wifi-tplink_archer-c6-v2",
    "base",
    [null, "2024.09.02~1a8d9f51-r1", "2025.09.11~79e2b1c4-r1"],
    40,
    [],
  ),
  p("wireguard-tools", "base", ALL3("1.0.20210914-3", "1.0.20210914-r4", "1.0.20250521-r1"), 80, [
    "libc",
    "kmod-wireguard",
  ]),
  p("rssileds", "base", ALL3("4", "4-r1", "4-r2"), 20, ["libiwinfo", "libuci"]),
  p(
    "libiwinfo",
    "base",
    ALL3("2023-07-01-ca79f641-1", "2024.10.20~b94f066e-r1", "2025.10.14~4c9a8ed5-r1"),
    60,
    ["libnl-tiny", "libuci", "libubus"],
    {
      abi: ["20230701", "20230701"],
    },
  ),
  p("uencrypt-mbedtls", "base", ALL3("5", "5-r1", "5-r2"), 20, ["libmbedtls"]),
  p("uqmi", "base", ALL3("2022-10-20-6f956265-3", "2024.10.05~28b48a10-r1", "2025.07.30~1965c7d4-r1"), 150, [
    "libubox",
    "libblobmsg-json",
  ]),
  p("zyxel-bootconfig", "base", ALL3("1", "1-r1", "1-r2"), 10, ["libc"]),
  p("libpcap", "base", ALL3("1.10.4-1", "1.10.5-r1", "1.10.5-r1"), 300, ["libc"], { abi: ["1", "1"] }),
  p("attendedsysupgrade-common", "packages", ALL3("7", "9-r1", "10-r1"), 5, [], { archAll: true }),

  // luci
  luci("luci", 0, ["luci-light", "luci-app-firewall", "luci-app-opkg|luci-app-package-manager"], {
    section: "luci",
  }),
  luci("luci-light", 0, [
    "luci-base",
    "luci-mod-admin-full",
    "luci-theme-bootstrap",
    "luci-proto-ppp",
    "luci-proto-ipv6",
    "uhttpd",
    "uhttpd-mod-ubus",
    "rpcd-mod-rrdns",
  ]),
  luci("luci-base", 1400, [
    "cgi-io",
    "rpcd",
    "rpcd-mod-file",
    "rpcd-mod-luci",
    "rpcd-mod-ucode",
    "ucode",
    "ucode-mod-fs",
    "ucode-mod-uci",
    "ucode-mod-ubus",
    "ucode-mod-math",
    "ucode-mod-html",
    "liblucihttp-ucode",
  ]),
  luci("luci-mod-admin-full", 0, ["luci-base", "luci-mod-network", "luci-mod-status", "luci-mod-system"]),
  luci("luci-mod-network", 300, ["luci-base", "rpcd-mod-iwinfo"]),
  luci("luci-mod-status", 250, ["luci-base", "rpcd-mod-iwinfo"]),
  luci("luci-mod-system", 200, ["luci-base"]),
  luci("luci-theme-bootstrap", 250, ["luci-base"]),
  luci("luci-proto-ppp", 40, ["luci-base"]),
  luci("luci-proto-ipv6", 40, ["luci-base"]),
  luci("luci-proto-wireguard", 60, ["luci-base", "wireguard-tools", "ucode"]),
  luci("luci-app-firewall", 150, ["luci-base", "firewall4"]),
  p("luci-app-opkg", "luci", [LUCI_23, null, null], 80, ["luci-base", "opkg"], {
    archAll: true,
    section: "luci",
  }),
  p("luci-app-package-manager", "luci", [null, LUCI_24, LUCI_SNAP], 80, ["luci-base"], {
    archAll: true,
    section: "luci",
  }),
  luci("luci-app-attendedsysupgrade", 60, ["luci-base", "attendedsysupgrade-common", "rpcd-mod-rpcsys"]),
  luci("luci-i18n-base-de", 120, ["luci-base"]),
  luci("luci-i18n-base-fr", 120, ["luci-base"]),
  luci("luci-i18n-firewall-de", 20, ["luci-app-firewall"]),
  p("luci-i18n-opkg-de", "luci", [LUCI_23, null, null], 10, ["luci-app-opkg"], {
    archAll: true,
    section: "luci",
  }),
  p("luci-i18n-package-manager-de", "luci", [null, LUCI_24, LUCI_SNAP], 10, ["luci-app-package-manager"], {
    archAll: true,
    section: "luci",
  }),
  luci("luci-i18n-attendedsysupgrade-de", 10, ["luci-app-attendedsysupgrade"]),
  p(
    "rpcd-mod-luci",
    "luci",
    ALL3("20240305-1", "20240305-r1", "20250912-r1"),
    30,
    ["rpcd", "libubox", "libubus", "libnl-tiny", "libiwinfo"],
    { section: "luci" },
  ),
  p(
    "rpcd-mod-rrdns",
    "luci",
    ALL3("20170710", "20170710-r1", "20170710-r2"),
    15,
    ["rpcd", "libubox", "libubus"],
    { section: "luci" },
  ),
  p(
    "liblucihttp",
    "luci",
    ALL3("2023-03-15-9b5b683f-1", "2023.03.15~9b5b683f-r1", "2023.03.15~9b5b683f-r2"),
    20,
    ["libubox"],
    {
      abi: ["0", "0"],
      section: "luci",
    },
  ),
  p(
    "liblucihttp-ucode",
    "luci",
    ALL3("2023-03-15-9b5b683f-1", "2023.03.15~9b5b683f-r1", "2023.03.15~9b5b683f-r2"),
    15,
    ["liblucihttp", "libucode"],
    {
      section: "luci",
    },
  ),

  // packages
  p("auc", "packages", ["0.3.2-1", null, null], 40, [
    "attendedsysupgrade-common",
    "libuclient",
    "libubus",
    "libuci",
    "libblobmsg-json",
    "rpcd-mod-rpcsys",
    "ucode-mod-uclient",
  ]),
  p(
    "owut",
    "packages",
    [null, "2025.07.17~3d5e5f8a-r1", ""],
    60,
    [
      "attendedsysupgrade-common",
      "ucode",
      "ucode-mod-fs",
      "ucode-mod-ubus",
      "ucode-mod-uci",
      "ucode-mod-uclient",
      "ucode-mod-uloop",
      "rpcd-mod-file",
    ],
    { archAll: true },
  ),
  p("tcpdump", "packages", ALL3("4.99.4-1", "4.99.5-r1", "4.99.5-r2"), 700, ["libpcap"]),
  p("curl", "packages", ALL3("8.7.1-1", "8.12.1-r1", "8.16.0-r1"), 150, ["libcurl"]),
  p(
    "libcurl",
    "packages",
    ALL3("8.7.1-1", "8.12.1-r1", "8.16.0-r1"),
    450,
    ["libmbedtls", "zlib", "ca-bundle"],
    {
      abi: ["4", "4"],
    },
  ),
  p("htop", "packages", ALL3("3.3.0-1", "3.3.0-r1", "3.4.1-r1"), 200, ["libncurses"]),
  p("libncurses", "packages", ALL3("6.4-2", "6.4-r2", "6.5-r1"), 300, ["terminfo"], { abi: ["6", "6"] }),
  p("terminfo", "packages", ALL3("6.4-2", "6.4-r2", "6.5-r1"), 20, []),
  p("vim", "packages", ALL3("9.0-2", "9.1-r1", "9.1.1418-r1"), 1100, ["libncurses"]),
  p("big-package-a", "packages", ALL3("1.0-1", "1.0-r1", "1.0-r1"), 6144, ["libc"], {
    description: "Synthetic large package for image-size tests (6 MiB installed)",
  }),
  p("big-package-b", "packages", ALL3("1.0-1", "1.0-r1", "1.0-r1"), 6144, ["libc"], {
    description: "Synthetic large package for image-size tests (6 MiB installed)",
  }),
  p("comgt-ncm", "packages", ALL3("1.0-2", "1.0-r2", "1.0-r3"), 10, ["comgt", "kmod-usb-net-cdc-mbim"], {
    archAll: true,
  }),
  p("comgt", "packages", ALL3("0.32-34", "0.32-r35", "0.32-r36"), 40, ["libc"]),

  // routing / telephony
  p("batctl-default", "routing", ALL3("2023.1-2", "2024.2-r1", "2025.4-r1"), 80, [
    "libnl-tiny",
    "kmod-batman-adv",
  ]),
  p("babeld", "routing", ALL3("1.13.1-1", "1.13.1-r1", "1.13.1-r2"), 100, ["libubus"]),
  p("bird2", "routing", ALL3("2.14-1", "2.15.1-r1", "2.17.1-r1"), 600, ["libc"]),
  p("siproxd", "telephony", ALL3("0.8.3-1", "0.8.3-r2", "0.8.3-r3"), 100, ["libc"]),
  p("baresip", "telephony", ALL3("3.9.0-1", "3.16.0-r1", "3.24.0-r1"), 400, ["libc"]),
];

/**
 * Kernel modules: [name, size KiB, depends, {families, boards}] (default: every branch and target).
 * Like OpenWrt's kmods feeds, each target carries only the modules built for it.
 */
const KMODS: [string, number, string[], { families?: Family[]; boards?: string[] }?][] = [
  ["kmod-cfg80211", 900, []],
  ["kmod-mac80211", 1200, ["kmod-cfg80211"]],
  ["kmod-ath", 150, ["kmod-mac80211"]],
  ["kmod-ath9k-common", 500, ["kmod-ath"]],
  ["kmod-ath9k", 300, ["kmod-ath9k-common"]],
  ["kmod-hwmon-core", 30, []],
  ["kmod-ath10k-ct", 1400, ["kmod-ath", "kmod-hwmon-core"]],
  ["kmod-gpio-button-hotplug", 20, [], { boards: ["ath79", "ramips"] }],
  ["kmod-button-hotplug", 20, [], { boards: ["x86"] }],
  ["kmod-nfnetlink", 40, []],
  ["kmod-nf-reject", 30, []],
  ["kmod-nf-conntrack", 180, []],
  ["kmod-nf-conntrack6", 30, ["kmod-nf-conntrack"], { families: ["23.05", "24.10"] }],
  ["kmod-lib-crc32c", 10, [], { families: ["23.05", "24.10"] }],
  ["kmod-nf-nat", 80, ["kmod-nf-conntrack"]],
  ["kmod-nft-core", 250, ["kmod-nfnetlink", "kmod-nf-reject"]],
  ["kmod-nft-nat", 60, ["kmod-nft-core", "kmod-nf-nat"]],
  ["kmod-nf-flow", 60, ["kmod-nf-conntrack"]],
  ["kmod-nft-offload", 30, ["kmod-nf-flow", "kmod-nft-nat"]],
  ["kmod-ipt-ipset", 80, ["kmod-nfnetlink"]],
  ["kmod-ppp", 60, []],
  ["kmod-pppoe", 30, ["kmod-ppp"]],
  ["kmod-usb-core", 200, []],
  ["kmod-usb-ehci", 80, ["kmod-usb-core"]],
  ["kmod-usb2", 60, ["kmod-usb-core", "kmod-usb-ehci"]],
  ["kmod-usb-ohci", 60, ["kmod-usb-core"]],
  ["kmod-usb3", 300, ["kmod-usb-core"]],
  ["kmod-usb-ledtrig-usbport", 20, ["kmod-usb-core"]],
  ["kmod-leds-gpio", 20, []],
  ["kmod-leds-reset", 10, [], { boards: ["ath79"] }],
  ["kmod-owl-loader", 20, ["kmod-ath9k"], { boards: ["ath79"] }],
  ["kmod-switch-rtl8366-smi", 30, [], { boards: ["ath79"] }],
  ["kmod-switch-rtl8366s", 30, ["kmod-switch-rtl8366-smi"], { boards: ["ath79"] }],
  ["kmod-switch-rtl8366rb", 30, ["kmod-switch-rtl8366-smi"], { boards: ["ath79"] }],
  ["kmod-gpio-cascade", 10, [], { boards: ["ath79"] }],
  ["kmod-mux-core", 10, [], { boards: ["ath79"] }],
  ["kmod-mux-gpio", 10, ["kmod-mux-core"], { boards: ["ath79"] }],
  ["kmod-udptunnel4", 20, []],
  ["kmod-udptunnel6", 20, []],
  ["kmod-crypto-lib-chacha20poly1305", 60, []],
  ["kmod-crypto-lib-curve25519", 60, []],
  [
    "kmod-wireguard",
    120,
    ["kmod-udptunnel4", "kmod-udptunnel6", "kmod-crypto-lib-chacha20poly1305", "kmod-crypto-lib-curve25519"],
  ],
  ["kmod-batman-adv", 400, ["kmod-lib-crc16", "kmod-cfg80211"]],
  ["kmod-lib-crc16", 10, []],
  ["kmod-amazon-ena", 150, [], { boards: ["x86"] }],
  ["kmod-amd-xgbe", 300, [], { boards: ["x86"] }],
  ["kmod-bnx2", 200, [], { boards: ["x86"] }],
  ["kmod-e1000e", 350, [], { boards: ["x86"] }],
  ["kmod-e1000", 200, [], { boards: ["x86"] }],
  ["kmod-forcedeth", 80, [], { boards: ["x86"] }],
  ["kmod-nls-base", 20, []],
  ["kmod-fs-vfat", 150, ["kmod-nls-base"]],
  ["kmod-igb", 300, [], { boards: ["x86"] }],
  ["kmod-igc", 200, [], { boards: ["x86"] }],
  ["kmod-ixgbe", 400, [], { boards: ["x86"] }],
  ["kmod-r8169", 200, [], { boards: ["x86"] }],
  ["kmod-tg3", 250, [], { boards: ["x86"] }],
  ["kmod-ata-ahci", 100, [], { boards: ["x86", "ramips"] }],
  ["kmod-i2c-core", 50, [], { boards: ["ramips", "x86"] }],
  ["kmod-gpio-pca953x", 30, ["kmod-i2c-core"], { boards: ["ramips"] }],
  ["kmod-i2c-algo-pca", 20, ["kmod-i2c-core"], { boards: ["ramips"] }],
  ["kmod-i2c-ralink", 20, ["kmod-i2c-core"], { boards: ["ramips"] }],
  ["kmod-leds-ubnt-ledbar", 10, ["kmod-i2c-core"], { boards: ["ramips"] }],
  ["kmod-mt76-core", 250, ["kmod-mac80211"], { boards: ["ramips"] }],
  ["kmod-mt76", 10, ["kmod-mt76-core"], { boards: ["ramips"] }],
  ["kmod-mt7603", 300, ["kmod-mt76-core"], { boards: ["ramips"] }],
  ["kmod-mt76-connac", 100, ["kmod-mt76-core"], { boards: ["ramips"] }],
  ["kmod-mt7615e", 300, ["kmod-mt76-connac"], { boards: ["ramips"] }],
  ["kmod-mt7615-firmware", 600, ["kmod-mt7615e"], { boards: ["ramips"] }],
  ["kmod-mt7663-firmware-ap", 500, ["kmod-mt7615e"], { boards: ["ramips"] }],
  ["kmod-mt7915e", 500, ["kmod-mt76-connac"], { boards: ["ramips"] }],
  ["kmod-mt7915-firmware", 700, ["kmod-mt7915e"], { boards: ["ramips"] }],
  ["kmod-mt76x02-common", 150, ["kmod-mt76-core"], { boards: ["ramips"] }],
  ["kmod-mt76x0e", 100, ["kmod-mt76x02-common"], { boards: ["ramips"] }],
  ["kmod-mt76x2", 150, ["kmod-mt76x02-common"], { boards: ["ramips"] }],
  ["kmod-mt7621-qtn-rgmii", 10, [], { boards: ["ramips"] }],
  ["kmod-pps-gpio", 10, [], { boards: ["ramips"] }],
  ["kmod-rt2800-pci", 300, ["kmod-mac80211"], { boards: ["ramips"] }],
  ["kmod-sdhci-mt7620", 50, [], { boards: ["ramips"] }],
  ["kmod-sfp", 50, [], { boards: ["ramips"] }],
  ["kmod-sound-mt7620", 50, [], { boards: ["ramips"] }],
  ["kmod-usb-net", 60, ["kmod-usb-core"]],
  ["kmod-usb-net-cdc-mbim", 30, ["kmod-usb-net"]],
  ["kmod-usb-net-qmi-wwan", 30, ["kmod-usb-net"]],
  ["kmod-usb-net-rndis", 20, ["kmod-usb-net"]],
  ["kmod-usb-serial", 60, ["kmod-usb-core"]],
  ["kmod-usb-serial-option", 40, ["kmod-usb-serial"]],
  ["kmod-usb-serial-xr_usb_serial_common", 30, ["kmod-usb-serial"]],
];

export interface KmodSpec {
  name: string;
  sizeKib: number;
  depends: string[];
  families: Family[];
  /** Boards (ath79, x86, ramips) whose kmods feed has the module; undefined = all. */
  boards: string[] | undefined;
}

export const KERNEL_MODULES: KmodSpec[] = KMODS.map(([name, sizeKib, depends, opts]) => ({
  name,
  sizeKib,
  depends,
  families: opts?.families ?? ["23.05", "24.10", "SNAPSHOT"],
  boards: opts?.boards,
}));

export const FAMILY_INDEX: Record<Family, 0 | 1 | 2> = { "23.05": 0, "24.10": 1, SNAPSHOT: 2 };
