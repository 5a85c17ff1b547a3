import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, realpath, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkArchiveEntries, parseTarListing } from "../../src/imagebuilder/archive-listing.js";

/**
 * Issue #9 finding 5: archives built by GNU tar whose links, followed through one another,
 * lead out of the ImageBuilder tree. The listing is read exactly as ImageBuilderManager reads
 * it (same tar flags), and each archive must be refused before anything is unpacked.
 */

let tmp: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "asu-archive-links-"));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function tar(args: string[]): string {
  return execFileSync("tar", args, { encoding: "utf8", env: { PATH: "/usr/bin:/bin", LC_ALL: "C" } });
}

/** Lists like ImageBuilderManager.checkArchive and runs the same check. */
function checkArchive(archive: string) {
  const listing = tar([
    "--zstd",
    "-tv",
    "--quoting-style=escape",
    "--numeric-owner",
    "--full-time",
    "-f",
    archive,
  ]);
  return checkArchiveEntries(parseTarListing(listing), 1 << 30);
}

async function ibTree(name: string): Promise<{ src: string; ib: string }> {
  const src = path.join(tmp, name);
  const ib = path.join(src, "openwrt-imagebuilder");
  await mkdir(path.join(ib, "staging_dir", "host", "bin"), { recursive: true });
  await writeFile(path.join(ib, "Makefile"), "image:\n\ttrue\n");
  await symlink("/usr/bin/python3", path.join(ib, "staging_dir", "host", "bin", "python3"));
  return { src, ib };
}

function pack(src: string, name: string, extra: string[][] = []): string {
  const archive = path.join(tmp, `${name}.tar`);
  tar(["-cf", archive, "-C", src, "openwrt-imagebuilder"]);
  for (const args of extra) tar(["-rf", archive, ...args]);
  execFileSync("zstd", ["-q", "-f", archive, "-o", `${archive}.zst`]);
  return `${archive}.zst`;
}

describe("archive links built by GNU tar (issue #9 finding 5)", () => {
  it("accepts an ordinary tree with a host-tool link", async () => {
    const { src } = await ibTree("plain");
    expect(checkArchive(pack(src, "plain"))).toEqual({
      ok: true,
      topDir: "openwrt-imagebuilder",
      totalBytes: "image:\n\ttrue\n".length,
    });
  });

  it("refuses chained `l1 -> ../` links that a link elsewhere climbs out through", async () => {
    const { src, ib } = await ibTree("chained");
    const dirs = Array.from({ length: 12 }, (_, i) => `d${i + 1}`);
    await mkdir(path.join(ib, ...dirs), { recursive: true });
    for (let i = 1; i <= dirs.length; i++) await symlink("../", path.join(ib, ...dirs.slice(0, i), "l1"));
    // By name: d1/.../d12/l1/.../l1/../../opt/x is deep inside the tree. Really: 12 x l1 climb
    // back to the top folder, and "../.." leaves it.
    const target = `${dirs.join("/")}/${dirs.map(() => "l1").join("/")}/../../opt/x`;
    await symlink(target, path.join(ib, "x"));

    // The attack is real: on disk the link leads to <tmp>/opt/x, out of the tree.
    await mkdir(path.join(tmp, "opt", "x"), { recursive: true });
    expect(await realpath(path.join(ib, "x"))).toBe(await realpath(path.join(tmp, "opt", "x")));

    expect(checkArchive(pack(src, "chained"))).toEqual({
      ok: false,
      reason: `symlink "openwrt-imagebuilder/x" points outside the ImageBuilder ("${target}")`,
    });
  });

  it("refuses a folder entry `link/.` that would change the folder a host-tool link points at", async () => {
    const { src } = await ibTree("dot");
    await symlink("/usr/", path.join(src, "openwrt-imagebuilder", "staging_dir", "host", "bin", "usr"));
    const archive = pack(src, "dot", [
      ["--no-recursion", "-C", src, "openwrt-imagebuilder/staging_dir/host/bin/usr/."],
    ]);
    expect(checkArchive(archive)).toEqual({
      ok: false,
      reason: '"." or an empty part in path "openwrt-imagebuilder/staging_dir/host/bin/usr/."',
    });
  });

  it("refuses a file written through a host-tool link", async () => {
    const { src } = await ibTree("through-host");
    await mkdir(path.join(tmp, "payload"), { recursive: true });
    await writeFile(path.join(tmp, "payload", "evil"), "pwned\n");
    const archive = pack(src, "through-host", [
      [
        "--transform",
        "s,^payload/evil$,openwrt-imagebuilder/staging_dir/host/bin/python3/evil,",
        "-C",
        tmp,
        "payload/evil",
      ],
    ]);
    expect(checkArchive(archive)).toEqual({
      ok: false,
      reason:
        '"openwrt-imagebuilder/staging_dir/host/bin/python3/evil" would be written through the symlink "openwrt-imagebuilder/staging_dir/host/bin/python3"',
    });
  });
});
