import { describe, expect, it } from "vitest";
import { checkArchiveEntries, parseTarListing, type ArchiveEntry } from "./archive-listing.js";

const LIMIT = 1 << 30;

function listing(...names: string[]): string {
  return names.map((n) => `${n}\n`).join("");
}

const D = "drwxr-xr-x 0/0               0 2024-09-23 12:34:56 ";
const F = "-rw-r--r-- 0/0            1234 2024-09-23 12:34:56 ";
const L = "lrwxrwxrwx 0/0               0 2024-09-23 12:34:56 ";
const H = "hrw-r--r-- 0/0               0 2024-09-23 12:34:56 ";

function check(text: string) {
  return checkArchiveEntries(parseTarListing(text), LIMIT);
}

describe("parseTarListing", () => {
  it("reads GNU tar's verbose listing", () => {
    const entries = parseTarListing(
      listing(
        `${D}./ib/`,
        `${F}./ib/sub dir/f 1`,
        `${L}ib/rel -> ../ib`,
        `${H}ib/hard link to ib/sub dir/f 1`,
        "crw-r--r-- 0/0             1,3 2024-09-23 12:34:56 ib/null",
        "prw-r--r-- 0/0               0 2024-09-23 12:34 ib/fifo",
        `${F}ib/new\\nline`,
      ),
    );
    expect(entries).toEqual<ArchiveEntry[]>([
      { type: "dir", typeChar: "d", size: 0, name: "ib" },
      { type: "file", typeChar: "-", size: 1234, name: "ib/sub dir/f 1" },
      { type: "symlink", typeChar: "l", size: 0, name: "ib/rel", linkTarget: "../ib" },
      { type: "hardlink", typeChar: "h", size: 0, name: "ib/hard", linkTarget: "ib/sub dir/f 1" },
      { type: "special", typeChar: "c", size: 0, name: "ib/null" },
      { type: "special", typeChar: "p", size: 0, name: "ib/fifo" },
      { type: "file", typeChar: "-", size: 1234, name: "ib/new\\nline" },
    ]);
  });

  it("refuses lines it cannot read and ambiguous link names", () => {
    expect(() => parseTarListing("garbage\n")).toThrow('cannot read tar listing line: "garbage"');
    expect(() => parseTarListing(`${L}ib/a -> b -> /etc\n`)).toThrow(
      'ambiguous link in tar listing: "ib/a -> b -> /etc"',
    );
  });
});

describe("checkArchiveEntries", () => {
  it("accepts an ordinary ImageBuilder layout", () => {
    expect(
      check(
        listing(
          `${D}ib/`,
          `${F}ib/Makefile`,
          `${D}ib/staging_dir/host/bin/`,
          `${L}ib/staging_dir/host/bin/python3 -> /usr/bin/python3`,
          `${L}ib/staging_dir/host/usr/lib -> ../lib`,
          `${H}ib/copy link to ib/Makefile`,
        ),
      ),
    ).toEqual({ ok: true, topDir: "ib", totalBytes: 1234 });
  });

  it.each([
    [`${F}/etc/evil`, 'absolute path "/etc/evil"'],
    [`${F}../evil`, '".." in path "../evil"'],
    [`${F}ib/../../evil`, '".." in path "ib/../../evil"'],
    [`${L}ib/etc -> /etc`, 'symlink "ib/etc" points outside the ImageBuilder ("/etc")'],
    [`${L}ib/up -> ../..`, 'symlink "ib/up" points outside the ImageBuilder ("../..")'],
    [`${L}ib/a/b -> ../../x`, 'symlink "ib/a/b" points outside the ImageBuilder ("../../x")'],
    [
      `${L}ib/staging_dir/host/bin/sh -> /etc/../bin/sh`,
      'symlink "ib/staging_dir/host/bin/sh" points outside the ImageBuilder ("/etc/../bin/sh")',
    ],
    [
      `${L}ib/staging_dir/x -> /usr/bin/x`,
      'symlink "ib/staging_dir/x" points outside the ImageBuilder ("/usr/bin/x")',
    ],
    [`${H}ib/h link to /etc/passwd`, 'hardlink "ib/h" points outside the ImageBuilder ("/etc/passwd")'],
    [`${H}ib/h link to other/file`, 'hardlink "ib/h" points outside the ImageBuilder ("other/file")'],
    ["prw-r--r-- 0/0               0 2024-09-23 12:34 ib/fifo", 'special file "ib/fifo" (type "p")'],
    ["brw-r--r-- 0/0             8,0 2024-09-23 12:34 ib/sda", 'special file "ib/sda" (type "b")'],
    [`${F}other/file`, 'more than one top folder ("ib" and "other")'],
  ])("refuses %s", (line, reason) => {
    expect(check(listing(`${D}ib/`, `${F}ib/Makefile`, line))).toEqual({ ok: false, reason });
  });

  it("refuses members written through a symlink, in either order", () => {
    const reason = '"ib/link/passwd" would be written through the symlink "ib/link"';
    expect(check(listing(`${D}ib/`, `${L}ib/link -> sub`, `${F}ib/link/passwd`))).toEqual({
      ok: false,
      reason,
    });
    expect(check(listing(`${D}ib/`, `${F}ib/link/passwd`, `${L}ib/link -> sub`))).toEqual({
      ok: false,
      reason,
    });
    // The classic escape: a link to a shallower folder, then a relative link below it.
    expect(check(listing(`${D}ib/`, `${L}ib/x/y/s -> ../..`, `${L}ib/x/y/s/l -> ../z`))).toEqual({
      ok: false,
      reason: '"ib/x/y/s/l" would be written through the symlink "ib/x/y/s"',
    });
    expect(check(listing(`${D}ib/`, `${L}ib/s -> sub`, `${F}ib/sub/f`, `${H}ib/h link to ib/s/f`))).toEqual({
      ok: false,
      reason: 'hardlink "ib/h" points through the symlink "ib/s"',
    });
  });

  // Issue #9 finding 5: link targets were resolved by name only.
  it("resolves link targets through the links the archive creates (chained, in any order)", () => {
    const dirs = Array.from({ length: 12 }, (_, i) => `d${i + 1}`);
    const deep = dirs.join("/");
    const ups = dirs.map(() => "l1").join("/");
    // every d<i>/l1 -> ../ ; by name, d1/.../d12/l1/.../l1/../opt stays deep inside; really it
    // climbs to the top folder, and ".." leaves it. The links come after the link that uses them.
    const target = `${deep}/${ups}/../opt/x`;
    const chained = listing(
      `${D}ib/`,
      `${D}ib/${deep}/`,
      `${L}ib/x -> ${target}`,
      ...dirs.map((_, i) => `${L}ib/${dirs.slice(0, i + 1).join("/")}/l1 -> ../`),
    );
    expect(check(chained)).toEqual({
      ok: false,
      reason: `symlink "ib/x" points outside the ImageBuilder ("${target}")`,
    });
    // one link to a shallower folder, then ".." from there
    expect(
      check(listing(`${D}ib/`, `${L}ib/a/b/c/up -> ../..`, `${L}ib/x -> a/b/c/up/../../../../opt/x`)),
    ).toEqual({
      ok: false,
      reason: 'symlink "ib/x" points outside the ImageBuilder ("a/b/c/up/../../../../opt/x")',
    });
    // links to links: each hop looks harmless by name
    expect(
      check(
        listing(`${D}ib/`, `${L}ib/p -> q/..`, `${L}ib/q -> r/s`, `${L}ib/r/s -> ../..`, `${F}ib/Makefile`),
      ),
    ).toEqual({ ok: false, reason: 'symlink "ib/p" points outside the ImageBuilder ("q/..")' });
    // a loop is refused, not followed forever
    expect(check(listing(`${D}ib/`, `${L}ib/a -> b`, `${L}ib/b -> a`))).toEqual({
      ok: false,
      reason: 'symlink "ib/a" points outside the ImageBuilder ("b")',
    });
  });

  it("accepts chained links that stay inside", () => {
    expect(
      check(
        listing(
          `${D}ib/`,
          `${D}ib/a/b/`,
          `${L}ib/a/b/up -> ..`,
          `${L}ib/y -> a/b/up/b/up/../a`,
          `${L}ib/staging_dir/host/bin/python -> python3`,
          `${L}ib/staging_dir/host/bin/python3 -> /usr/bin/python3.11`,
        ),
      ),
    ).toEqual({ ok: true, topDir: "ib", totalBytes: 0 });
  });

  it.each([
    [`${D}ib/esc/.`, '"." or an empty part in path "ib/esc/."'],
    [`${F}ib/a/./b`, '"." or an empty part in path "ib/a/./b"'],
    [`${F}ib/a//b`, '"." or an empty part in path "ib/a//b"'],
    [
      `${L}ib/tool -> staging_dir/host/bin/python3`,
      'symlink "ib/tool" points outside the ImageBuilder ("staging_dir/host/bin/python3")',
    ],
    [
      `${L}ib/lib -> staging_dir/host/bin/usr/../lib`,
      'symlink "ib/lib" points outside the ImageBuilder ("staging_dir/host/bin/usr/../lib")',
    ],
    [
      `${F}ib/staging_dir/host/bin/python3`,
      '"ib/staging_dir/host/bin/python3" appears more than once in the archive',
    ],
    [
      `${F}ib/staging_dir/host/bin/python3/x`,
      '"ib/staging_dir/host/bin/python3/x" would be written through the symlink "ib/staging_dir/host/bin/python3"',
    ],
    [
      `${D}ib/staging_dir/host/bin/usr/`,
      '"ib/staging_dir/host/bin/usr" appears more than once in the archive',
    ],
    [`${H}ib/h link to ib/rel`, 'hardlink "ib/h" points to the symlink "ib/rel"'],
  ])("refuses %s (writes through or escapes via links)", (line, reason) => {
    expect(
      check(
        listing(
          `${D}ib/`,
          `${D}ib/staging_dir/host/bin/`,
          `${L}ib/staging_dir/host/bin/python3 -> /usr/bin/python3`,
          `${L}ib/staging_dir/host/bin/usr -> /usr/`,
          `${L}ib/staging_dir/rel -> ../Makefile`,
          `${L}ib/rel -> staging_dir/rel`,
          `${L}ib/esc -> staging_dir`,
          `${F}ib/Makefile`,
          line,
        ),
      ),
    ).toEqual({ ok: false, reason });
  });

  it("refuses empty archives and archives over the size limit", () => {
    expect(check("")).toEqual({ ok: false, reason: "the archive is empty" });
    expect(checkArchiveEntries(parseTarListing(listing(`${D}ib/`, `${F}ib/a`, `${F}ib/b`)), 2000)).toEqual({
      ok: false,
      reason: "it unpacks to 2468 bytes, more than the limit of 2000",
    });
  });
});
