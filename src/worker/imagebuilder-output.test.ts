import { describe, expect, it } from "vitest";
import {
  describePackageFailure,
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
    expect(problems).toEqual({
      missing: ["foo"],
      conflicts: [],
      requiredBy: {},
      clashes: [],
      badSignature: false,
      failedScripts: [],
    });
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

// Issue #8: the verbatim texts opkg and apk print, and the detail a person can act on.
describe("describePackageFailure (issue #8)", () => {
  it("opkg: a missing dependency names the ABSENT package and who needs it", () => {
    const text = [
      "Collected errors:",
      " * pkg_hash_check_unresolved: cannot find dependency nonexistent-lib for broken-dep",
      " * pkg_hash_fetch_best_installation_candidate: Packages for broken-dep found, but incompatible with the architectures configured",
      " * opkg_install_cmd: Cannot install package broken-dep.",
    ].join("\n");
    expect(describePackageFailure(text)).toEqual({
      detail:
        "Error: Impossible package selection: missing (nonexistent-lib); nonexistent-lib is required by broken-dep",
      userFault: true,
    });
  });

  it("opkg: the older satisfy_dependencies_for wording names the absent package too", () => {
    const text = [
      "Collected errors:",
      " * satisfy_dependencies_for: Cannot satisfy the following dependencies for broken-dep:",
      " * \tnonexistent-lib",
      " * opkg_install_cmd: Cannot install package broken-dep.",
    ].join("\n");
    expect(describePackageFailure(text)?.detail).toBe(
      "Error: Impossible package selection: missing (nonexistent-lib); nonexistent-lib is required by broken-dep",
    );
  });

  it("opkg: a file clash names both packages and the file, without the host path", () => {
    for (const file of [
      "<TARGET_DIR>/etc/init.d/dnsmasq",
      "/builder/ib/build_dir/target-mips_24kc_musl/root-ath79/etc/init.d/dnsmasq",
    ]) {
      const text = [
        "Collected errors:",
        ` * check_data_file_clashes: Package dnsmasq wants to install file ${file}`,
        "\tBut that file is already provided by package  * dnsmasq-full",
        ` * check_data_file_clashes: Package dnsmasq wants to install file ${file.replace("init.d/dnsmasq", "config/dhcp")}`,
        "\tBut that file is already provided by package  * dnsmasq-full",
        " * opkg_install_cmd: Cannot install package dnsmasq.",
      ].join("\n");
      expect(describePackageFailure(text)).toEqual({
        detail:
          "Error: Impossible package selection: dnsmasq-full and dnsmasq both install /etc/init.d/dnsmasq; remove one (e.g. add -dnsmasq)",
        userFault: true,
      });
    }
  });

  it("apk: breaks is a conflict of both packages", () => {
    const text = [
      "ERROR: unable to select packages:",
      "  dnsmasq-2.91-r1:",
      "    breaks: dnsmasq-full-2.91-r1[!dnsmasq]",
      "    satisfies: world[dnsmasq]",
    ].join("\n");
    expect(describePackageFailure(text)).toEqual({
      detail: "Error: Impossible package selection: conflicts (dnsmasq, dnsmasq-full)",
      userFault: true,
    });
  });

  it("apk: a missing dependency names the absent package and who needs it", () => {
    const text = [
      "ERROR: unable to select packages:",
      "  nonexistent-lib (no such package):",
      "    required by: broken-dep-0.1-r1[nonexistent-lib]",
    ].join("\n");
    expect(describePackageFailure(text)?.detail).toBe(
      "Error: Impossible package selection: missing (nonexistent-lib); nonexistent-lib is required by broken-dep",
    );
  });

  it("apk: package names keep their digits and dashes (kmod-8021q)", () => {
    const text = [
      "ERROR: unable to select packages:",
      "  kmod-8021q-6.6.73-r1:",
      "    conflicts: kmod-macvlan-6.6.73-r1[kmod-8021q]",
      "    satisfies: world[kmod-8021q]",
      "  libfoo2 (no such package):",
      "    required by: kmod-8021q-6.6.73-r1[libfoo2]",
    ].join("\n");
    expect(parsePackageErrors(text)).toMatchObject({
      missing: ["libfoo2"],
      conflicts: ["kmod-8021q", "kmod-macvlan"],
      requiredBy: { libfoo2: ["kmod-8021q"] },
    });
  });

  it("apk: a file overwrite names both packages and the file", () => {
    const text =
      "ERROR: dnsmasq-full-2.91-r1: trying to overwrite etc/init.d/dnsmasq owned by dnsmasq-2.91-r1.";
    expect(describePackageFailure(text)).toEqual({
      detail:
        "Error: Impossible package selection: dnsmasq and dnsmasq-full both install /etc/init.d/dnsmasq; remove one (e.g. add -dnsmasq-full)",
      userFault: true,
    });
  });

  it.each([
    [
      "opkg",
      [
        "Downloading file:///builder/ib/packages/Packages.gz.",
        "Signature check failed.",
        "Remove wrong Signature file.",
        "Collected errors:",
        " * opkg_install_cmd: Cannot install package base-files.",
        " * opkg_install_cmd: Cannot install package luci.",
      ],
    ],
    [
      "opkg verify",
      ["Failed to verify the signature of /builder/ib/dl/openwrt_core.", "Cannot install package luci."],
    ],
    [
      "apk",
      [
        "WARNING: updating and opening https://downloads.openwrt.org/snapshots/packages/x86_64/base/packages.adb: UNTRUSTED signature",
        "ERROR: unable to select packages:",
        "  base-files (no such package):",
        "    required by: world[base-files]",
      ],
    ],
  ])("%s: a bad feed signature is the server's fault, not a missing package", (_kind, lines) => {
    const failure = describePackageFailure(lines.join("\n"));
    expect(failure?.userFault).toBe(false);
    expect(failure?.detail).not.toMatch(/missing|Impossible package selection/);
    expect(failure?.detail).toMatch(/^Error: The server could not verify the signature of a package feed/);
  });

  it("a bad signature with feeds of the request's own is the user's to fix: repository_keys", () => {
    const text = [
      "Signature check failed.",
      "Remove wrong Signature file.",
      "Cannot install package hello.",
    ].join("\n");
    const failure = describePackageFailure(text, { customRepositories: true });
    expect(failure).toEqual({
      detail:
        "Error: The signature of a package feed did not verify. Check that repository_keys holds the public key of every repository you added (the usign key line for opkg feeds, the PEM key for apk feeds).",
      userFault: true,
    });
    expect(describePackageFailure(text, { customRepositories: false })?.userFault).toBe(false);
  });

  it("a failing postinst names the package, for opkg and apk", () => {
    expect(
      describePackageFailure(
        ' * pkg_run_script: package "postinst-fail" postinst script returned status 1.\n * opkg_install_cmd: Cannot install package postinst-fail.',
      )?.detail,
    ).toMatch(/^Error: The install script of postinst-fail failed/);
    expect(
      describePackageFailure(
        "ERROR: postinst-fail-0.1-r1.post-install: post-install has failed with exit code 1",
      )?.detail,
    ).toMatch(/^Error: The install script of postinst-fail failed/);
    expect(
      describePackageFailure("ERROR: postinst-fail-0.1-r1.post-install: script exited with error 1")?.detail,
    ).toMatch(/^Error: The install script of postinst-fail failed/);
  });

  it("names at most 20 packages, so 1,000 bogus names do not make a 20 KB detail", () => {
    const text = Array.from(
      { length: 1000 },
      (_, i) => ` * opkg_install_cmd: Cannot install package bogus-${String(i).padStart(4, "0")}.`,
    ).join("\n");
    const detail = describePackageFailure(text)?.detail ?? "";
    expect(detail).toMatch(
      /^Error: Impossible package selection: missing \(bogus-0000, .*, bogus-0019 and 980 more\)$/,
    );
  });

  it("says nothing about output it does not recognise", () => {
    expect(describePackageFailure("make: *** [Makefile:1: manifest] Error 2")).toBeUndefined();
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
