import { describe, expect, it } from "vitest";
import { findImageBuilderArchive } from "./sha256sums.js";

const A = "a".repeat(64);
const B = "B".repeat(64);

describe("findImageBuilderArchive", () => {
  it("finds a release ImageBuilder among the other files", () => {
    const sums = [
      `${A} *openwrt-23.05.5-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin`,
      `${B} *openwrt-imagebuilder-23.05.5-ath79-generic.Linux-x86_64.tar.xz`,
      `${A} *openwrt-sdk-23.05.5-ath79-generic_gcc-12.3.0_musl.Linux-x86_64.tar.xz`,
    ].join("\n");
    expect(findImageBuilderArchive(sums)).toEqual({
      name: "openwrt-imagebuilder-23.05.5-ath79-generic.Linux-x86_64.tar.xz",
      sha256: "b".repeat(64),
      compression: "xz",
      line: `${"b".repeat(64)} *openwrt-imagebuilder-23.05.5-ath79-generic.Linux-x86_64.tar.xz`,
    });
  });

  it("prefers .tar.zst and accepts text-mode lines", () => {
    const sums = [
      `${A} *openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.xz`,
      `${B}  openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.zst`,
    ].join("\r\n");
    expect(findImageBuilderArchive(sums)?.name).toBe(
      "openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.zst",
    );
  });

  it("ignores names that would change the download path", () => {
    expect(
      findImageBuilderArchive(`${A} *openwrt-imagebuilder-x/../../evil.Linux-x86_64.tar.zst\n`),
    ).toBeUndefined();
    expect(findImageBuilderArchive(`${A} *openwrt-imagebuilder-x.Linux-aarch64.tar.zst\n`)).toBeUndefined();
    expect(findImageBuilderArchive("")).toBeUndefined();
  });
});
