import { describe, expect, it } from "vitest";
import { damerauLevenshtein, PackageNameIndex, partOverlap, suggestPackage } from "./package-suggestions.js";

const known = [
  "luci-proto-wireguard",
  "luci-app-wol",
  "luci-app-firewall",
  "luci-app-opkg",
  "luci-app-package-manager",
  "wireguard-tools",
  "kmod-wireguard",
  "tcpdump",
  "tcpdump-mini",
  "vim-full",
  "vim",
  "kmod-usb-storage",
  "kmod-usb-storage-extras",
  "luci-i18n-base-de",
];

describe("damerauLevenshtein", () => {
  it("counts insertions, deletions, substitutions and swaps", () => {
    expect(damerauLevenshtein("tcpdump", "tcpdump")).toBe(0);
    expect(damerauLevenshtein("tcpdum", "tcpdump")).toBe(1);
    expect(damerauLevenshtein("tcpdmup", "tcpdump")).toBe(1);
    expect(damerauLevenshtein("kitten", "sitting")).toBe(3);
    expect(damerauLevenshtein("", "abc")).toBe(3);
  });

  it("stops early past the limit", () => {
    expect(damerauLevenshtein("abcdefgh", "zzzzzzzz", 2)).toBe(3);
    expect(damerauLevenshtein("a", "abcdef", 2)).toBe(3);
  });
});

describe("partOverlap", () => {
  it("weights parts by length and notices distinctive ones", () => {
    expect(partOverlap("luci-app-wireguard", "luci-proto-wireguard").distinctiveShared).toBe(true);
    expect(partOverlap("luci-app-nonsense", "luci-app-wol").distinctiveShared).toBe(false);
  });
});

describe("suggestPackage", () => {
  it("suggests the family member for a wrong prefix", () => {
    expect(suggestPackage("luci-app-wireguard", known)).toBe("luci-proto-wireguard");
  });

  it("suggests fixes for typos", () => {
    expect(suggestPackage("tcpdum", known)).toBe("tcpdump");
    expect(suggestPackage("vim-fulll", known)).toBe("vim-full");
    expect(suggestPackage("kmod-usb-storage-extra", known)).toBe("kmod-usb-storage-extras");
    expect(["kmod-wireguard", "wireguard-tools"]).toContain(suggestPackage("wireguard", known));
  });

  it("stays quiet when nothing is close", () => {
    expect(suggestPackage("luci-app-nonsense", known)).toBeUndefined();
    expect(suggestPackage("passwall", known)).toBeUndefined();
    expect(suggestPackage("xyz", known)).toBeUndefined();
  });

  it("never suggests the name itself", () => {
    expect(new PackageNameIndex(["vim"]).suggest("vim")).toBeUndefined();
  });

  it("answers quickly on an index of realistic size", () => {
    const names = Array.from({ length: 12_000 }, (_, i) => `pkg-${(i * 7919).toString(36)}-${i % 97}`);
    const index = new PackageNameIndex([...names, ...known]);
    const started = performance.now();
    for (let i = 0; i < 20; i++) index.suggest(`luci-app-wireguard${i}`);
    // Generous bound: this guards against an accidental O(n^2) scan, not for speed.
    expect(performance.now() - started).toBeLessThan(5000);
  });
});
