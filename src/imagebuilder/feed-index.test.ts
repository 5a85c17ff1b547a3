import { describe, expect, it } from "vitest";
import { dependencyName, packageClosure, parseApkDump, parseOpkgFeed } from "./feed-index.js";

const OPKG = `Package: foo-tool
Version: 1.0-r1
Depends: libc, libfoo20240101 (>= 1.4), busybox | toybox
Filename: foo-tool_1.0-r1_mips_24kc.ipk
Size: 1234
SHA256sum: ${"a".repeat(64)}

Package: libfoo20240101
Version: 1.4.2-r1
ABIVersion: 20240101
Provides: libfoo
Filename: libfoo20240101_1.4.2-r1_mips_24kc.ipk
SHA256sum: ${"b".repeat(64)}

Package: evil
Version: 1
Filename: ../../etc/passwd

Package: toString
Version: 1
Filename: toString_1_all.ipk
`;

describe("feed indexes", () => {
  it("reads opkg stanzas with alternatives, provides, sizes and hashes; refuses unsafe file names", () => {
    const pkgs = parseOpkgFeed(OPKG);
    expect(pkgs.map((p) => p.name)).toEqual(["foo-tool", "libfoo20240101", "toString"]);
    expect(pkgs[0]).toMatchObject({
      depends: [["libc"], ["libfoo20240101"], ["busybox", "toybox"]],
      size: 1234,
      sha256: "a".repeat(64),
    });
    expect(pkgs[1]?.provides).toEqual(["libfoo"]);
  });

  it("reads apk-tools 3's adbdump JSON; conflicts (!name) are not dependencies", () => {
    const pkgs = parseApkDump(
      JSON.stringify({
        packages: [
          {
            name: "dnsmasq-full",
            version: "2.91-r1",
            hashes: "c".repeat(64),
            "file-size": 99,
            depends: ["libc", "!dnsmasq", "so:libubox.so.20240329"],
            provides: ["dnsmasq=2.91-r1"],
          },
          { name: "luci-i18n-bar-de", version: "1-r1", "install-if": ["luci-app-bar", "luci-i18n-base-de"] },
          { name: "../x", version: "1" },
        ],
      }),
    );
    expect(pkgs).toEqual([
      {
        name: "dnsmasq-full",
        version: "2.91-r1",
        depends: [["libc"], ["so:libubox.so.20240329"]],
        provides: ["dnsmasq"],
        installIf: [],
        filename: "dnsmasq-full-2.91-r1.apk",
        size: 99,
        identity: "c".repeat(64),
      },
      {
        name: "luci-i18n-bar-de",
        version: "1-r1",
        depends: [],
        provides: [],
        installIf: ["luci-app-bar", "luci-i18n-base-de"],
        filename: "luci-i18n-bar-de-1-r1.apk",
      },
    ]);
    expect(() => parseApkDump("not json")).toThrow("apk adbdump did not print JSON");
  });

  it("takes names out of version constraints and nothing else", () => {
    expect(dependencyName("libc (>= 1.2)")).toBe("libc");
    expect(dependencyName("busybox>=1.36")).toBe("busybox");
    expect(dependencyName("so:libc.so")).toBe("so:libc.so");
    expect(dependencyName("$(rm -rf /)")).toBeUndefined();
  });

  it("selects what a package list may need through every alternative and provider, and nothing more", () => {
    const pkgs = parseOpkgFeed(OPKG).concat(
      parseOpkgFeed(`Package: busybox
Version: 1
Filename: busybox.ipk

Package: toybox
Version: 1
Filename: toybox.ipk

Package: unrelated
Version: 1
Filename: unrelated.ipk
`),
    );
    const names = packageClosure(pkgs, ["foo-tool", "-unrelated", "does-not-exist"], { maxPackages: 100 })
      .map((p) => p.name)
      .sort();
    expect(names).toEqual(["busybox", "foo-tool", "libfoo20240101", "toybox"]);
    // The ABI-less name a router asks for finds the library through Provides.
    expect(packageClosure(pkgs, ["libfoo"], { maxPackages: 100 }).map((p) => p.name)).toEqual([
      "libfoo20240101",
    ]);
    // A name that is an object property is only a name.
    expect(
      packageClosure(pkgs, ["constructor", "toString"], { maxPackages: 100 }).map((p) => p.name),
    ).toEqual(["toString"]);
  });

  it("adds apk install-if packages once their conditions are met", () => {
    const pkgs = parseApkDump(
      JSON.stringify({
        packages: [
          { name: "luci-app-bar", version: "1", depends: ["luci-base"] },
          { name: "luci-base", version: "1" },
          { name: "luci-i18n-base-de", version: "1" },
          { name: "luci-i18n-bar-de", version: "1", "install-if": ["luci-app-bar", "luci-i18n-base-de"] },
          { name: "luci-i18n-bar-fr", version: "1", "install-if": ["luci-app-bar", "luci-i18n-base-fr"] },
        ],
      }),
    );
    const names = packageClosure(pkgs, ["luci-app-bar", "luci-i18n-base-de"], { maxPackages: 100 })
      .map((p) => p.name)
      .sort();
    expect(names).toEqual(["luci-app-bar", "luci-base", "luci-i18n-bar-de", "luci-i18n-base-de"]);
  });

  it("stops a selection that grows past the cap", () => {
    const chain = Array.from(
      { length: 50 },
      (_, i) => `Package: p${i}\nVersion: 1\nDepends: p${i + 1}\nFilename: p${i}.ipk\n`,
    );
    expect(() => packageClosure(parseOpkgFeed(chain.join("\n")), ["p0"], { maxPackages: 10 })).toThrow(
      "more than 10 packages",
    );
  });
});
