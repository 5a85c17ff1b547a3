import { describe, expect, it } from "vitest";
import type { PackageChangesData } from "../config/package-changes.js";
import { applyPackageChanges, globToRegExp, versionMatches } from "./package-changes.js";

// These use the real data/openwrt-package-changes.json.
const ath79 = (version: string, profile = "tplink_archer-c7-v5") => ({
  version,
  target: "ath79/generic",
  profile,
});

describe("applyPackageChanges with OpenWrt's rules", () => {
  it("adds the switch driver a 23.05 ath79 device needs, once", () => {
    expect(applyPackageChanges(["luci"], ath79("23.05.4", "netgear_wndr3700"))).toEqual([
      "luci",
      "kmod-switch-rtl8366s",
    ]);
    expect(
      applyPackageChanges(["kmod-switch-rtl8366s", "luci"], ath79("23.05.4", "netgear_wndr3700")),
    ).toEqual(["kmod-switch-rtl8366s", "luci"]);
    expect(applyPackageChanges([], ath79("23.05.4", "buffalo_wzr-hp-g300nh-rb"))).toEqual([
      "kmod-switch-rtl8366rb",
    ]);
    // Other devices, targets and releases are untouched.
    expect(applyPackageChanges(["luci"], ath79("23.05.4"))).toEqual(["luci"]);
    expect(applyPackageChanges(["luci"], ath79("24.10.4", "netgear_wndr3700"))).toEqual(["luci"]);
  });

  it("a device's required package replaces a request to remove it", () => {
    expect(applyPackageChanges(["-kmod-switch-rtl8366s"], ath79("23.05.4", "netgear_wndr3700"))).toEqual([
      "kmod-switch-rtl8366s",
    ]);
  });

  it("adds target-wide packages (mediatek 23.05 and 24.10, any 23.05 point release or branch snapshot)", () => {
    const mt7622 = (version: string) => ({ version, target: "mediatek/mt7622", profile: "linksys_e8450" });
    expect(applyPackageChanges([], mt7622("23.05.0"))).toEqual(["kmod-mt7622-firmware"]);
    expect(applyPackageChanges([], mt7622("23.05-SNAPSHOT"))).toEqual(["kmod-mt7622-firmware"]);
    expect(applyPackageChanges([], mt7622("24.10.4"))).toEqual(["fitblk"]);
    expect(applyPackageChanges([], mt7622("SNAPSHOT"))).toEqual([]);
  });

  it("matches '*' targets with a profile list", () => {
    expect(
      applyPackageChanges([], {
        version: "24.10.1",
        target: "ath79/generic",
        profile: "tplink_archer-c6-v2",
      }),
    ).toEqual(["ipq-wifi-tplink_archer-c6-v2"]);
  });

  it("replaces auc with owut from 24.10 on, keeping the position, also in removals", () => {
    expect(applyPackageChanges(["luci", "auc", "tcpdump"], ath79("24.10.4"))).toEqual([
      "luci",
      "owut",
      "tcpdump",
    ]);
    expect(applyPackageChanges(["-auc"], ath79("24.10-SNAPSHOT"))).toEqual(["-owut"]);
    expect(applyPackageChanges(["auc"], ath79("23.05.4"))).toEqual(["auc"]);
    expect(applyPackageChanges(["auc", "owut"], ath79("24.10.0"))).toEqual(["owut"]);
  });

  it("renames opkg language packs from 24.10 on, snapshots included", () => {
    const packs = ["luci-i18n-opkg-de", "luci-i18n-base-de", "-luci-i18n-opkg-fr"];
    expect(applyPackageChanges(packs, ath79("24.10.0"))).toEqual([
      "luci-i18n-package-manager-de",
      "luci-i18n-base-de",
      "-luci-i18n-package-manager-fr",
    ]);
    expect(applyPackageChanges(["luci-i18n-opkg-de"], ath79("SNAPSHOT"))[0]).toBe(
      "luci-i18n-package-manager-de",
    );
    expect(applyPackageChanges(["luci-i18n-opkg-de"], ath79("25.12.0-rc1"))[0]).toBe(
      "luci-i18n-package-manager-de",
    );
    expect(applyPackageChanges(["luci-i18n-opkg-de"], ath79("23.05.4"))).toEqual(["luci-i18n-opkg-de"]);
  });

  it("removes packages that are gone in snapshots, also as removals", () => {
    const x86 = { version: "SNAPSHOT", target: "x86/64", profile: "generic" };
    expect(applyPackageChanges(["kmod-nf-conntrack6", "luci", "-kmod-lib-crc32c"], x86)).toEqual(["luci"]);
    expect(applyPackageChanges(["kmod-nf-conntrack6"], { ...x86, version: "24.10-SNAPSHOT" })).toEqual([
      "kmod-nf-conntrack6",
    ]);
  });

  it("drops English language packs", () => {
    expect(
      applyPackageChanges(
        ["luci-i18n-base-en", "luci-i18n-base-de", "luci-i18n-firewall-en"],
        ath79("23.05.4"),
      ),
    ).toEqual(["luci-i18n-base-de"]);
  });

  it("never returns duplicates", () => {
    expect(
      applyPackageChanges(
        ["luci-i18n-opkg-de", "luci-i18n-package-manager-de", "luci", "+luci"],
        ath79("24.10.4"),
      ),
    ).toEqual(["luci-i18n-package-manager-de", "luci"]);
  });
});

describe("applyPackageChanges with injected rules", () => {
  const data: PackageChangesData = {
    renames: [],
    add_rules: [{ version: "1.0", target: "*", add: ["a", "b"] }],
    replace_rules: [{ version: "1.0", replace: { old: "new" } }],
    remove_rules: [{ version: "1.0", remove: ["gone"] }],
    language_pack_prefix_renames: [],
    drop: [{ pattern: "x-?-y" }],
    branches: {},
  };
  it("applies them in order", () => {
    expect(
      applyPackageChanges(
        ["old", "gone", "x-1-y", "x-12-y", "b"],
        { version: "1.0.1", target: "t/s", profile: "p" },
        data,
      ),
    ).toEqual(["new", "x-12-y", "b", "a"]);
  });
});

describe("versionMatches", () => {
  it("matches at a boundary only", () => {
    expect(versionMatches("23.05.4", "23.05")).toBe(true);
    expect(versionMatches("23.05-SNAPSHOT", "23.05")).toBe(true);
    expect(versionMatches("23.05", "23.05")).toBe(true);
    expect(versionMatches("24.10.0", "24.1")).toBe(false);
    expect(versionMatches("SNAPSHOT", "SNAPSHOT")).toBe(true);
    expect(versionMatches("24.10-SNAPSHOT", "SNAPSHOT")).toBe(false);
  });
});

describe("globToRegExp", () => {
  it("treats only * and ? as special", () => {
    expect(globToRegExp("luci-i18n-*-en").test("luci-i18n-base-en")).toBe(true);
    expect(globToRegExp("luci-i18n-*-en").test("luci-i18n-base-eng")).toBe(false);
    expect(globToRegExp("a.b").test("axb")).toBe(false);
    expect(globToRegExp("a+").test("a+")).toBe(true);
  });
});

describe("applyPackageChanges with names that are JavaScript object properties", () => {
  it("leaves toString, constructor, __proto__ and friends as plain names", () => {
    const names = ["toString", "constructor", "valueOf", "hasOwnProperty", "__proto__", "__defineGetter__"];
    for (const version of ["24.10.4", "23.05.4", "SNAPSHOT"]) {
      expect(applyPackageChanges(names, ath79(version))).toEqual(names);
      expect(
        applyPackageChanges(
          names.map((n) => `-${n}`),
          ath79(version),
        ),
      ).toEqual(names.map((n) => `-${n}`));
    }
  });
});
