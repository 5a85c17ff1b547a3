import { describe, expect, it } from "vitest";
import { opkgArchitecture, parseOpkgPackages, parseOpkgStanzas, stripAbiVersion } from "./opkg-index.js";

// Shaped like a real 23.05 Packages file: ABI-versioned library names, multi-line
// descriptions, fields the parser does not need, CRLF line endings in one stanza.
const PACKAGES = `Package: libubox20230523
Version: 2023-05-23-75a3b870-1
Depends: libc
License: ISC
Section: libs
CPE-ID: cpe:/a:openwrt:libubox
ABIVersion: 20230523
Architecture: mips_24kc
Installed-Size: 29466
Filename: libubox20230523_2023-05-23-75a3b870-1_mips_24kc.ipk
Size: 30251
SHA256sum: 0e8e1c6ef1d2bfb0ed2d3c9bb2c0b1a8d3b1fb9f7b5e8d2d0f0e4e5b1c2d3e4f
Description:  Basic utility library
 with a second line
 and a third.

Package: kmod-ath9k
Version: 5.15.162+6.1.97-1
Depends: kernel (= 5.15.162-1-5a35b6c5c4a1a2d9e9d3b3c5e2c1c4a0), kmod-ath9k-common
Architecture: mips_24kc
Description:  This module adds support for wireless adapters based on
 Atheros IEEE 802.11n AR5008 and AR9001 family of chipsets.

Package: libjson-c5\r
Version: 0.16-3\r
ABIVersion: 5\r
Architecture: mips_24kc\r
\r
Package: base-files
Version: 1560-r24012-d8dd03c46f
Architecture: mips_24kc

Package: no-version-here
Architecture: all

Package: base-files
Version: 9999-should-not-win
`;

describe("parseOpkgStanzas", () => {
  it("splits stanzas and joins continuation lines", () => {
    const stanzas = parseOpkgStanzas(PACKAGES);
    expect(stanzas).toHaveLength(6);
    expect(stanzas[0]?.Description).toBe("Basic utility library\nwith a second line\nand a third.");
    expect(stanzas[1]?.Depends).toBe(
      "kernel (= 5.15.162-1-5a35b6c5c4a1a2d9e9d3b3c5e2c1c4a0), kmod-ath9k-common",
    );
    expect(stanzas[2]).toEqual({
      Package: "libjson-c5",
      Version: "0.16-3",
      ABIVersion: "5",
      Architecture: "mips_24kc",
    });
  });

  it("returns nothing for an empty file", () => {
    expect(parseOpkgStanzas("")).toEqual([]);
    expect(parseOpkgStanzas("\n\n")).toEqual([]);
  });
});

describe("parseOpkgPackages", () => {
  it("maps names to versions, strips ABI suffixes, skips stanzas without a version", () => {
    expect({ ...parseOpkgPackages(PACKAGES) }).toEqual({
      libubox: "2023-05-23-75a3b870-1",
      "kmod-ath9k": "5.15.162+6.1.97-1",
      "libjson-c": "0.16-3",
      "base-files": "1560-r24012-d8dd03c46f",
    });
  });

  it("keeps names like constructor and __proto__ as plain keys", () => {
    const index = parseOpkgPackages("Package: constructor\nVersion: 1\n\nPackage: __proto__\nVersion: 2\n");
    expect(index.constructor).toBe("1");
    expect(Object.keys(index)).toEqual(["constructor", "__proto__"]);
  });
});

describe("stripAbiVersion", () => {
  it("strips only a real suffix", () => {
    expect(stripAbiVersion("libubox20240329", "20240329")).toBe("libubox");
    expect(stripAbiVersion("libopenssl3", "3")).toBe("libopenssl");
    expect(stripAbiVersion("libfoo", "3")).toBe("libfoo");
    expect(stripAbiVersion("3", "3")).toBe("3");
    expect(stripAbiVersion("libfoo", undefined)).toBe("libfoo");
  });
});

describe("opkgArchitecture", () => {
  it("returns the first architecture that is not all", () => {
    expect(
      opkgArchitecture(
        "Package: a\nVersion: 1\nArchitecture: all\n\nPackage: b\nVersion: 1\nArchitecture: x86_64\n",
      ),
    ).toBe("x86_64");
    expect(opkgArchitecture("Package: a\nVersion: 1\nArchitecture: all\n")).toBeUndefined();
  });
});
