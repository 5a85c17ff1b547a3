import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";

/**
 * A tiny download server for unit tests: serves an in-memory tree in the real OpenWrt
 * layout over loopback HTTP, with ETag / Last-Modified validators, and records every
 * request so tests can count upstream traffic. Not the synthetic mirror (src/mirror):
 * this holds just enough files to exercise the upstream client and request validation.
 */
export interface FixtureUpstream {
  url: string;
  /** path (no leading slash) → body. */
  files: Map<string, string>;
  requests: { path: string; status: number; conditional: boolean }[];
  /** Replace (or, with undefined, delete) a file. */
  set(path: string, body: string | object | undefined): void;
  /** Make a path answer with this status, "hang" (never answer) or "reset" (drop the connection). */
  fail(path: string, how: number | "hang" | "reset" | undefined): void;
  /** Delay every answer by this many ms. */
  delayMs: number;
  /** false: send no ETag, only Last-Modified. */
  etags: boolean;
  count(path: string): number;
  close(): Promise<void>;
}

const LAST_MODIFIED = "Tue, 16 Jul 2024 22:14:18 GMT";

export async function startFixtureUpstream(tree: Record<string, string | object>): Promise<FixtureUpstream> {
  const files = new Map<string, string>();
  for (const [path, body] of Object.entries(tree)) files.set(path, toText(body));
  const failures = new Map<string, number | "hang" | "reset">();
  const hanging = new Set<ServerResponse>();

  const fixture: FixtureUpstream = {
    url: "",
    files,
    requests: [],
    delayMs: 0,
    etags: true,
    set(path, body) {
      if (body === undefined) files.delete(path);
      else files.set(path, toText(body));
    },
    fail(path, how) {
      if (how === undefined) failures.delete(path);
      else failures.set(path, how);
    },
    count(path) {
      return fixture.requests.filter((r) => r.path === path).length;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = decodeURIComponent((req.url ?? "/").split("?")[0] ?? "/").replace(/^\/+/, "");
    const conditional =
      req.headers["if-none-match"] !== undefined || req.headers["if-modified-since"] !== undefined;
    const failure = failures.get(path);
    if (failure === "hang") {
      fixture.requests.push({ path, status: 0, conditional });
      hanging.add(res);
      return;
    }
    if (failure === "reset") {
      fixture.requests.push({ path, status: 0, conditional });
      req.socket.destroy();
      return;
    }
    if (typeof failure === "number") {
      fixture.requests.push({ path, status: failure, conditional });
      res.writeHead(failure, { "content-type": "text/plain" }).end("failure");
      return;
    }
    const body = files.get(path);
    if (body === undefined) {
      fixture.requests.push({ path, status: 404, conditional });
      res.writeHead(404, { "content-type": "text/html" }).end("<h1>404 Not Found</h1>");
      return;
    }
    const etag = `"${createHash("sha1").update(body).digest("hex").slice(0, 16)}"`;
    const headers: Record<string, string> = { "last-modified": LAST_MODIFIED };
    if (fixture.etags) headers.etag = etag;
    const notModified = fixture.etags
      ? req.headers["if-none-match"] === etag
      : req.headers["if-modified-since"] === LAST_MODIFIED;
    if (notModified) {
      fixture.requests.push({ path, status: 304, conditional });
      res.writeHead(304, headers).end();
      return;
    }
    fixture.requests.push({ path, status: 200, conditional });
    res.writeHead(200, { ...headers, "content-type": "application/octet-stream" }).end(body);
  };

  const server = createServer((req, res) => {
    if (fixture.delayMs > 0) setTimeout(() => handle(req, res), fixture.delayMs);
    else handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  fixture.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fixture;
}

function toText(body: string | object): string {
  return typeof body === "string" ? body : JSON.stringify(body);
}

/** One opkg `Packages` stanza. */
export function opkgStanza(name: string, version: string, extra: Record<string, string> = {}): string {
  const fields = { Package: name, Version: version, ...extra };
  return Object.entries(fields)
    .map(([k, v]) => `${k}: ${v}`)
    .join("\n");
}

/** An opkg `Packages` file from `{name: version}` (names may carry an ABI suffix via `abi`). */
export function opkgPackages(
  packages: Record<string, string>,
  opts: { arch?: string; abi?: Record<string, string> } = {},
): string {
  return (
    Object.entries(packages)
      .map(([name, version]) => {
        const abi = opts.abi?.[name];
        const extra: Record<string, string> = {};
        if (abi) extra.ABIVersion = abi;
        extra.Architecture = opts.arch ?? "all";
        extra.Description = `The ${name} package.\n more text on a continuation line`;
        return opkgStanza(abi ? `${name}${abi}` : name, version, extra);
      })
      .join("\n\n") + "\n"
  );
}

/** An apk `index.json` (v2). */
export function apkIndex(arch: string, packages: Record<string, string>): string {
  return JSON.stringify({ version: 2, architecture: arch, packages });
}

/**
 * Where OpenWrt's published 23.05.4 metadata is (read-only test input): the repository's
 * data/openwrt-23.05.4, else ASU_OPENWRT_23_05_4 or the shared data folder. undefined when
 * none exists, so tests that need it can say so instead of failing obscurely.
 */
export function realOpenwrt23054Dir(): string | undefined {
  const candidates = [
    fileURLToPath(new URL("../../data/openwrt-23.05.4/", import.meta.url)),
    process.env.ASU_OPENWRT_23_05_4,
    // The project's shared/ folder sits beside the repository (as in CI).
    fileURLToPath(new URL("../../../shared/data/openwrt-23.05.4/", import.meta.url)),
  ];
  return candidates.find((dir): dir is string => dir !== undefined && existsSync(`${dir}/targets`));
}

const ath79Devices: Record<string, { devices: string[]; packages: string[] }> = {
  // Copied from OpenWrt's 23.05.4 ath79/generic profiles.json (some boards are listed twice).
  "8dev_carambola2": { devices: ["8dev,carambola2", "carambola2"], packages: ["kmod-usb-chipidea2"] },
  "tplink_archer-c7-v2": { devices: ["tplink,archer-c7-v2", "archer-c7"], packages: ["kmod-usb2"] },
  "tplink_archer-c7-v5": { devices: ["tplink,archer-c7-v5", "archer-c7-v5"], packages: ["kmod-usb2"] },
  netgear_wndr3700: { devices: ["netgear,wndr3700", "wndr3700"], packages: ["kmod-switch-rtl8366s"] },
  "netgear_wndr3700-v2": {
    devices: ["netgear,wndr3700-v2", "wndr3700", "netgear,wndr3700v2"],
    packages: ["kmod-switch-rtl8366s"],
  },
  "buffalo_wzr-hp-g300nh-s": {
    devices: ["buffalo,wzr-hp-g300nh-s", "wzr-hp-g300nh"],
    packages: ["kmod-switch-rtl8366s"],
  },
  "buffalo_wzr-hp-g300nh-rb": {
    devices: ["buffalo,wzr-hp-g300nh-rb", "wzr-hp-g300nh"],
    packages: ["kmod-switch-rtl8366rb"],
  },
};

function profiles23(
  target: string,
  arch: string,
  entries: Record<string, { devices: string[]; packages: string[] }>,
) {
  const slug = target.replace("/", "-");
  return {
    arch_packages: arch,
    default_packages: ["base-files", "busybox", "dnsmasq", "firewall4", "kernel", "libc", "opkg", "uci"],
    metadata_version: 1,
    source_date_epoch: 1721081658,
    target,
    version_code: "r24012-d8dd03c46f",
    version_number: "23.05.4",
    profiles: Object.fromEntries(
      Object.entries(entries).map(([id, { devices, packages }]) => [
        id,
        {
          device_packages: packages,
          image_prefix: `openwrt-23.05.4-${slug}-${id}`,
          images: [
            {
              filesystem: "squashfs",
              name: `openwrt-23.05.4-${slug}-${id}-squashfs-sysupgrade.bin`,
              sha256: "0".repeat(64),
              sha256_unsigned: "0".repeat(64),
              type: "sysupgrade",
            },
          ],
          supported_devices: devices,
          titles: [{ vendor: "Vendor", model: id }],
        },
      ]),
    ),
  };
}

/**
 * A small download tree covering the layouts validation meets:
 *   - 23.05.4: opkg, ath79/generic profiles with real supported_devices, x86/64 with only
 *     `generic`, feeds.buildinfo, ABI-suffixed names, a missing feed;
 *   - 24.10.4: opkg with a kmods folder named by profiles.json `linux_kernel`, default feeds;
 *   - SNAPSHOT: apk index.json v2 with kmods.
 */
export function sampleUpstreamTree(): Record<string, string | object> {
  const r23 = "releases/23.05.4";
  const r24 = "releases/24.10.4";
  const kernel = { version: "6.6.86", release: "1", vermagic: "0123456789abcdef0123456789abcdef" };
  const kmodsDir = `${kernel.version}-${kernel.release}-${kernel.vermagic}`;
  const profile24 = (id: string, devices: string[]) => ({
    image_prefix: `openwrt-24.10.4-ath79-generic-${id}`,
    images: [{ name: `openwrt-24.10.4-ath79-generic-${id}-squashfs-sysupgrade.bin`, type: "sysupgrade" }],
    supported_devices: devices,
    titles: [{ vendor: "TP-Link", model: id }],
    device_packages: ["kmod-ath10k-ct", "ath10k-firmware-qca988x-ct"],
  });
  return {
    ".versions.json": {
      stable_version: "24.10.4",
      oldstable_version: "23.05.4",
      upcoming_version: "25.12.0-rc1",
      versions_list: ["25.12.0-rc1", "24.10.4", "24.10.3", "23.05.4", "23.05.3", "22.03.7"],
    },

    // 23.05.4
    [`${r23}/.targets.json`]: { "ath79/generic": "mips_24kc", "x86/64": "x86_64" },
    [`${r23}/targets/ath79/generic/profiles.json`]: profiles23("ath79/generic", "mips_24kc", ath79Devices),
    [`${r23}/targets/x86/64/profiles.json`]: profiles23("x86/64", "x86_64", {
      generic: { devices: [], packages: ["kmod-e1000e", "kmod-igb"] },
    }),
    [`${r23}/targets/ath79/generic/feeds.buildinfo`]: [
      "src-git packages https://git.openwrt.org/feed/packages.git^abc",
      "src-git luci https://git.openwrt.org/project/luci.git^def",
      "src-git routing https://git.openwrt.org/feed/routing.git^123",
      "src-git telephony https://git.openwrt.org/feed/telephony.git^456",
      "",
    ].join("\n"),
    [`${r23}/targets/ath79/generic/packages/Packages`]: opkgPackages(
      {
        "base-files": "1560-r24012-d8dd03c46f",
        kernel: "5.15.162-1-5a35b6c5c4a1a2d9e9d3b3c5e2c1c4a0",
        libc: "1.2.4-4",
        libubox: "2024.03.29~eb9bcb64-1",
        "kmod-ath9k": "5.15.162+6.1.97-1",
        "kmod-wireguard": "5.15.162-1",
        "kmod-switch-rtl8366s": "5.15.162-1",
        "kmod-switch-rtl8366rb": "5.15.162-1",
        "wpad-basic-mbedtls": "2023-09-08-e5ccbfc6-6",
        swconfig: "12",
      },
      { arch: "mips_24kc", abi: { libubox: "20240329" } },
    ),
    [`${r23}/packages/mips_24kc/base/Packages`]: opkgPackages(
      {
        firewall4: "2023-09-01-598d9fbb-1",
        dnsmasq: "2.90-2",
        "dnsmasq-full": "2.90-2",
        opkg: "2022-02-24-d038e5b6-2",
        auc: "0.3.2-1",
        uci: "2023-08-10-5781664d-1",
      },
      { arch: "mips_24kc" },
    ),
    [`${r23}/packages/mips_24kc/luci/Packages`]: opkgPackages({
      luci: "git-24.196.59693-4a4bc3c",
      "luci-app-firewall": "git-24.196.59693-4a4bc3c",
      "luci-app-opkg": "git-24.196.59693-4a4bc3c",
      "luci-app-attendedsysupgrade": "git-24.196.59693-4a4bc3c",
      "luci-proto-wireguard": "git-24.196.59693-4a4bc3c",
      "luci-i18n-base-de": "git-24.196.59693-4a4bc3c",
      "luci-i18n-opkg-de": "git-24.196.59693-4a4bc3c",
    }),
    [`${r23}/packages/mips_24kc/packages/Packages`]: opkgPackages(
      {
        tcpdump: "4.99.4-1",
        "vim-full": "9.0-3",
        "wireguard-tools": "1.0.20210914-3",
        curl: "8.7.1-1",
        "luci-app-wol": "git-24.196.59693-4a4bc3c",
      },
      { arch: "mips_24kc" },
    ),
    [`${r23}/packages/mips_24kc/routing/Packages`]: opkgPackages(
      { babeld: "1.13.1-1" },
      { arch: "mips_24kc" },
    ),
    // telephony deliberately missing: a feed that is not there is skipped.

    [`${r23}/targets/x86/64/packages/Packages`]: opkgPackages(
      { "base-files": "1560-r24012-d8dd03c46f", "kmod-e1000": "5.15.162-1", grub2: "2.06-5" },
      { arch: "x86_64" },
    ),
    [`${r23}/packages/x86_64/base/Packages`]: opkgPackages({
      firewall4: "2023-09-01-598d9fbb-1",
      opkg: "2022-1",
    }),
    [`${r23}/packages/x86_64/packages/Packages`]: opkgPackages({ tcpdump: "4.99.4-1" }),

    // 24.10.4: kernel modules in their own folder
    [`${r24}/.targets.json`]: { "ath79/generic": "mips_24kc" },
    [`${r24}/targets/ath79/generic/profiles.json`]: {
      arch_packages: "mips_24kc",
      default_packages: ["base-files", "kernel", "libc", "wpad-basic-mbedtls", "owut"],
      metadata_version: 1,
      target: "ath79/generic",
      version_code: "r28427-6df0e3d02a",
      version_number: "24.10.4",
      linux_kernel: kernel,
      profiles: {
        "tplink_archer-c7-v5": profile24("tplink_archer-c7-v5", ["tplink,archer-c7-v5"]),
        "tplink_archer-c6-v2": profile24("tplink_archer-c6-v2", ["tplink,archer-c6-v2"]),
      },
    },
    [`${r24}/targets/ath79/generic/packages/Packages`]: opkgPackages(
      {
        "base-files": "1653-r28427-6df0e3d02a",
        "wpad-basic-mbedtls": "2024.09.15-1",
        kernel: "6.6.86-1-0123",
      },
      { arch: "mips_24kc" },
    ),
    [`${r24}/targets/ath79/generic/kmods/${kmodsDir}/Packages`]: opkgPackages(
      { "kmod-ath10k-ct": "6.6.86+2023-11-17-1", "kmod-wireguard": "6.6.86-1" },
      { arch: "mips_24kc" },
    ),
    [`${r24}/packages/mips_24kc/base/Packages`]: opkgPackages({
      owut: "2025.02.01~1-r1",
      "ath10k-firmware-qca988x-ct": "2024-1",
      "ipq-wifi-tplink_archer-c6-v2": "2024-1",
    }),
    [`${r24}/packages/mips_24kc/luci/Packages`]: opkgPackages({
      luci: "25.0-1",
      "luci-app-package-manager": "25.0-1",
      "luci-i18n-package-manager-de": "25.0-1",
    }),
    [`${r24}/packages/mips_24kc/packages/Packages`]: opkgPackages({ tcpdump: "4.99.5-1" }),

    // SNAPSHOT: apk
    "snapshots/.targets.json": { "x86/64": "x86_64" },
    "snapshots/targets/x86/64/profiles.json": {
      arch_packages: "x86_64",
      default_packages: ["base-files", "apk-mbedtls"],
      target: "x86/64",
      version_code: "r30000-0123456789",
      version_number: "SNAPSHOT",
      linux_kernel: kernel,
      profiles: { generic: { supported_devices: [], images: [] } },
    },
    "snapshots/targets/x86/64/packages/index.json": apkIndex("x86_64", {
      "base-files": "1700-r30000",
      "apk-mbedtls": "3.0.0-r1",
    }),
    [`snapshots/targets/x86/64/kmods/${kmodsDir}/index.json`]: apkIndex("x86_64", {
      "kmod-e1000": "6.6.86-r1",
    }),
    "snapshots/packages/x86_64/base/index.json": apkIndex("x86_64", { owut: "2025.02.01-r1" }),
    "snapshots/packages/x86_64/packages/index.json": apkIndex("x86_64", { tcpdump: "4.99.5-r1" }),
  };
}
