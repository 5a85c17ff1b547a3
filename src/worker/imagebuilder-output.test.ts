import { describe, expect, it } from "vitest";
import {
  exceedsStorage,
  impossibleSelectionDetail,
  parseMakeInfo,
  parseManifest,
  parsePackageErrors,
} from "./imagebuilder-output.js";

describe("parseMakeInfo", () => {
  it("reads revision, default packages and per-profile packages in OpenWrt's format", () => {
    const text = [
      'Current Target: "ath79/generic"',
      'Current Architecture: "mips"',
      'Current Revision: "r24012-d8dd03c46f"',
      "Default Packages: base-files busybox dnsmasq dropbear",
      "Available Profiles:",
      "",
      "tplink_archer-c7-v5:",
      "    TP-Link Archer C7 v5",
      "    Packages: kmod-ath10k-ct ath10k-firmware-qca988x-ct",
      "    hasImageMetadata: 1",
      "    SupportedDevices: tplink,archer-c7-v5",
      "8dev_carambola2:",
      "    8devices Carambola2",
      "    Packages: ",
      "    hasImageMetadata: 1",
    ].join("\n");
    expect(parseMakeInfo(text)).toEqual({
      target: "ath79/generic",
      revision: "r24012-d8dd03c46f",
      defaultPackages: ["base-files", "busybox", "dnsmasq", "dropbear"],
      profilePackages: {
        "tplink_archer-c7-v5": ["kmod-ath10k-ct", "ath10k-firmware-qca988x-ct"],
        "8dev_carambola2": [],
      },
    });
  });
});

describe("parseManifest", () => {
  it("reads opkg `name - version` and apk `name version` lines", () => {
    expect(parseManifest("base-files - 1565-r24012\nlibubox - 2024.03.29~eb9bcb64-r1\n")).toEqual({
      "base-files": "1565-r24012",
      libubox: "2024.03.29~eb9bcb64-r1",
    });
    expect(parseManifest("base-files 1667-r30000\nbusybox 1.37.0-r5\n\n")).toEqual({
      "base-files": "1667-r30000",
      busybox: "1.37.0-r5",
    });
  });
});

describe("parsePackageErrors", () => {
  it("finds a missing package in opkg's text", () => {
    const text = "Collected errors:\n * opkg_install_cmd: Cannot install package foo.\n";
    const problems = parsePackageErrors(text);
    expect(problems).toEqual({ missing: ["foo"], conflicts: [] });
    expect(impossibleSelectionDetail(problems)).toBe("Error: Impossible package selection: missing (foo)");
  });

  it("finds conflicts in opkg's text without calling the conflicting package missing", () => {
    const text = [
      "Collected errors:",
      " * check_conflicts_for: The following packages conflict with dnsmasq-full:",
      " * check_conflicts_for: \tdnsmasq *",
      " * opkg_install_cmd: Cannot install package dnsmasq-full.",
    ].join("\n");
    expect(impossibleSelectionDetail(parsePackageErrors(text))).toBe(
      "Error: Impossible package selection: conflicts (dnsmasq, dnsmasq-full)",
    );
  });

  it("finds missing and conflicting packages in apk's text", () => {
    const text = [
      "ERROR: unable to select packages:",
      "  foo (no such package):",
      "    required by: world[foo]",
      "  dnsmasq-full-2.90-r3:",
      "    conflicts: dnsmasq-2.90-r3[dnsmasq=2.90-r3]",
      "    satisfies: world[dnsmasq-full]",
      "  dnsmasq-2.90-r3:",
      "    conflicts: dnsmasq-full-2.90-r3[dnsmasq=2.90-r3]",
      "    satisfies: world[dnsmasq]",
    ].join("\n");
    expect(impossibleSelectionDetail(parsePackageErrors(text))).toBe(
      "Error: Impossible package selection: missing (foo) conflicts (dnsmasq, dnsmasq-full)",
    );
  });
});

describe("exceedsStorage", () => {
  it("recognises OpenWrt's check-size and ext4 messages", () => {
    expect(exceedsStorage("WARNING: Image file /x/y-sysupgrade.bin is too big: 8388608 > 7995392")).toBe(
      true,
    );
    expect(exceedsStorage("make_ext4fs: ... (out of space?)")).toBe(true);
    expect(exceedsStorage("all fine")).toBe(false);
  });
});
