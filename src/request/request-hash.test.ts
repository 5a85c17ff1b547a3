import { describe, expect, it } from "vitest";
import type { BuildRequestBody } from "./build-request-schema.js";
import { normalizeRequest, type NormalizedRequest } from "./normalize-request.js";
import { canonicalRequest, requestHash } from "./request-hash.js";

const body: BuildRequestBody = {
  version: "24.10.4",
  target: "ath79/generic",
  profile: "tplink_archer-c7-v5",
  packages: ["luci", "tcpdump", "-ppp"],
};
const base = normalizeRequest(body);
const hashOf = (b: BuildRequestBody) => requestHash(normalizeRequest(b));

describe("requestHash", () => {
  it("is a full sha256 in hex", () => {
    expect(requestHash(base)).toMatch(/^[0-9a-f]{64}$/);
  });

  it("ignores package order, duplicates, '+', kernel/libc, the client and the profile's comma form", () => {
    const same = [
      { ...body, packages: ["-ppp", "tcpdump", "luci"] },
      { ...body, packages: ["luci", "luci", "+tcpdump", "-ppp", "tcpdump"] },
      { ...body, packages: ["kernel", "luci", "libc", "tcpdump", "-ppp"] },
      { ...body, client: "luci/git-24.086" },
      { ...body, profile: "tplink,archer-c7-v5" },
      { ...body, defaults: "" },
      { ...body, rootfs_size_mb: null },
      { ...body, distro: "openwrt", version_code: "", diff_packages: false },
      { ...body, repositories: {}, repositories_mode: "replace" as const },
      { ...body, repositories_mode: "" as const },
    ];
    for (const b of same) expect(hashOf(b)).toBe(requestHash(base));
  });

  it("ignores the order of packages_versions, repositories and keys", () => {
    const a: NormalizedRequest = {
      ...base,
      packages_versions: { a: "1", b: "2" },
      repositories: { x: "https://x/", y: "https://y/" },
      repository_keys: ["k1", "k2"],
    };
    const b: NormalizedRequest = {
      ...base,
      packages_versions: { b: "2", a: "1" },
      repositories: { y: "https://y/", x: "https://x/" },
      repository_keys: ["k2", "k1", "k2"],
    };
    expect(requestHash(a)).toBe(requestHash(b));
  });

  it("changes with every field that changes the image", () => {
    const withRepo: NormalizedRequest = { ...base, repositories: { x: "https://x/" } };
    const variants: [string, NormalizedRequest][] = [
      ["distro", { ...base, distro: "other" }],
      ["version", { ...base, version: "24.10.3" }],
      ["version_code", { ...base, version_code: "r28427-6df0e3d02a" }],
      ["target", { ...base, target: "ath79/nand" }],
      ["profile", { ...base, profile: "tplink_archer-c7-v4" }],
      ["packages", { ...base, packages: ["luci", "tcpdump"] }],
      ["a removal vs an addition", { ...base, packages: ["luci", "tcpdump", "ppp"] }],
      ["packages_versions", { ...base, packages_versions: { luci: "1" } }],
      ["a pinned version", { ...base, packages_versions: { luci: "2" } }],
      ["diff_packages", { ...base, diff_packages: true }],
      ["defaults", { ...base, defaults: "echo hi" }],
      ["rootfs_size_mb", { ...base, rootfs_size_mb: 512 }],
      ["filesystem", { ...base, filesystem: "ext4" }],
      ["repositories", withRepo],
      ["a repository URL", { ...base, repositories: { x: "https://y/" } }],
      [
        "repositories_mode",
        { ...withRepo, repositories_mode: withRepo.repositories_mode === "replace" ? "append" : "replace" },
      ],
      ["repository_keys", { ...base, repository_keys: ["RWabc"] }],
    ];
    const seen = new Map<string, string>([[requestHash(base), "base"]]);
    for (const [what, req] of variants) {
      const h = requestHash(req);
      expect(seen.get(h), `${what} collides with ${seen.get(h)}`).toBeUndefined();
      seen.set(h, what);
    }
  });

  it("cannot confuse a comma inside a name with two names, or a field boundary", () => {
    expect(requestHash({ ...base, packages: ["a,b"] })).not.toBe(
      requestHash({ ...base, packages: ["a", "b"] }),
    );
    expect(requestHash({ ...base, packages_versions: { "a,b": "c" } })).not.toBe(
      requestHash({ ...base, packages_versions: { a: "b,c" } }),
    );
    expect(requestHash({ ...base, version: "24.10.4", version_code: "" })).not.toBe(
      requestHash({ ...base, version: "24.10", version_code: ".4" }),
    );
    expect(requestHash({ ...base, defaults: null })).not.toBe(requestHash({ ...base, defaults: "null" }));
  });

  it("has a stable canonical form", () => {
    expect(canonicalRequest(base)).toBe(
      '["asu-ts/request/1","openwrt","24.10.4","","ath79/generic","tplink_archer-c7-v5",["-ppp","luci","tcpdump"],[],false,null,null,null,[],"append",[]]',
    );
  });
});
