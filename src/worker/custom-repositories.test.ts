import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { BuildError } from "../shared/errors.js";
import { applyCustomRepositories } from "./custom-repositories.js";

const UPSTREAM_FEED =
  "src/gz openwrt_base https://downloads.openwrt.org/releases/24.10.4/packages/mips_24kc/base";

function opkgWorkspace(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "asu-customrepo-"));
  writeFileSync(path.join(dir, "repositories.conf"), `${UPSTREAM_FEED}\nsrc imagebuilder file:packages\n`);
  return dir;
}

describe("applyCustomRepositories", () => {
  it("writes the server's serialisation of a repository URL into the feed list", async () => {
    const dir = opkgWorkspace();
    await applyCustomRepositories(dir, {
      repositories: { feed: "https://downloads.openwrt.org/releases/24.10.4/packages/x" },
      repository_keys: [],
      repositories_mode: "append",
    });
    const conf = readFileSync(path.join(dir, "repositories.conf"), "utf8");
    expect(conf.split("\n")[0]).toBe("src/gz feed https://downloads.openwrt.org/releases/24.10.4/packages/x");
    expect(conf).toContain(UPSTREAM_FEED);
  });

  it("never writes a URL that wget or opkg would read with another host (a job queued before the request check)", async () => {
    const dir = opkgWorkspace();
    const attack = "http://downloads.openwrt.org\\releases\\24.10.4\\packages\\x@evil.example/evil";
    const err = await applyCustomRepositories(dir, {
      repositories: { evil: attack },
      repository_keys: [],
      repositories_mode: "append",
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BuildError);
    expect((err as BuildError).userFault).toBe(true);
    const conf = readFileSync(path.join(dir, "repositories.conf"), "utf8");
    expect(conf).not.toContain("evil.example");
  });

  it("refuses a feed line with a line break in its URL or name", async () => {
    const dir = opkgWorkspace();
    for (const repositories of [
      { feed: "https://downloads.openwrt.org/x\nsrc/gz evil http://evil.example" },
      { "feed\nsrc/gz": "https://downloads.openwrt.org/x" },
    ] as Record<string, string>[]) {
      await expect(
        applyCustomRepositories(dir, { repositories, repository_keys: [], repositories_mode: "append" }),
      ).rejects.toBeInstanceOf(BuildError);
    }
    expect(readFileSync(path.join(dir, "repositories.conf"), "utf8")).not.toContain("evil");
  });
});
