import { describe, expect, it } from "vitest";
import { SchemaError } from "../shared/errors.js";
import type { BuildRequestBody } from "./build-request-schema.js";
import { normalizeRequest } from "./normalize-request.js";
import { requestHash } from "./request-hash.js";

const minimal: BuildRequestBody = {
  version: "24.10.4",
  target: "ath79/generic",
  profile: "tplink_archer-c7-v5",
};

describe("normalizeRequest", () => {
  it("fills every field, with null for unset defaults, rootfs size and filesystem", () => {
    expect(normalizeRequest(minimal)).toEqual({
      distro: "openwrt",
      version: "24.10.4",
      version_code: "",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: [],
      packages_versions: {},
      diff_packages: false,
      defaults: null,
      rootfs_size_mb: null,
      filesystem: null,
      repositories: {},
      repositories_mode: "replace",
      repository_keys: [],
      client: null,
    });
  });

  it("turns a board_name profile into the profile form (LuCI sends the comma)", () => {
    expect(normalizeRequest({ ...minimal, profile: "tplink,archer-c7-v5" }).profile).toBe(
      "tplink_archer-c7-v5",
    );
    expect(normalizeRequest({ ...minimal, profile: "a,b,c" }).profile).toBe("a_b_c");
  });

  it("strips +, keeps -removals, drops kernel and libc, dedupes keeping the first, then adds packages_versions keys", () => {
    const req = normalizeRequest({
      ...minimal,
      packages: ["luci", "+tcpdump", "kernel", "libc", "-ppp", "tcpdump", "luci", "-kernel", "+libc"],
      packages_versions: { curl: "8.7.1-1", luci: "25.0", kernel: "6.6.86-1-abc" },
    });
    expect(req.packages).toEqual(["luci", "tcpdump", "-ppp", "curl"]);
    // The versions stay as the user pinned them; the worker checks them against the manifest.
    expect(req.packages_versions).toEqual({ curl: "8.7.1-1", luci: "25.0", kernel: "6.6.86-1-abc" });
  });

  it("reads rootfs_size_mb from LuCI's string and owut's number", () => {
    expect(normalizeRequest({ ...minimal, rootfs_size_mb: "512" }).rootfs_size_mb).toBe(512);
    expect(normalizeRequest({ ...minimal, rootfs_size_mb: 256 }).rootfs_size_mb).toBe(256);
    expect(normalizeRequest({ ...minimal, rootfs_size_mb: "" }).rootfs_size_mb).toBeNull();
    expect(normalizeRequest({ ...minimal, rootfs_size_mb: null }).rootfs_size_mb).toBeNull();
    expect(() => normalizeRequest({ ...minimal, rootfs_size_mb: "12abc" })).toThrow(SchemaError);
  });

  it("treats an empty defaults string as none (OFS sends it)", () => {
    expect(normalizeRequest({ ...minimal, defaults: "" }).defaults).toBeNull();
    expect(normalizeRequest({ ...minimal, defaults: null }).defaults).toBeNull();
    expect(normalizeRequest({ ...minimal, defaults: "uci set x=y\n" }).defaults).toBe("uci set x=y\n");
  });

  it("trims version, target and profile and defaults the distro", () => {
    const req = normalizeRequest({ ...minimal, version: " 24.10.4 ", target: "ath79/generic ", distro: "" });
    expect([req.version, req.target, req.distro]).toEqual(["24.10.4", "ath79/generic", "openwrt"]);
  });

  it("defaults repositories_mode to replace as upstream, and keeps append when asked for", () => {
    expect(normalizeRequest(minimal).repositories_mode).toBe("replace");
    expect(normalizeRequest({ ...minimal, repositories_mode: "" }).repositories_mode).toBe("replace");
    expect(normalizeRequest({ ...minimal, repositories_mode: "append" }).repositories_mode).toBe("append");
    expect(normalizeRequest({ ...minimal, repositories_mode: "replace" }).repositories_mode).toBe("replace");
  });

  it("echoes the client in the request, without changing the hash", () => {
    const req = normalizeRequest({ ...minimal, client: "luci/1.0" });
    expect(req.client).toBe("luci/1.0");
    expect(requestHash(req)).toBe(
      requestHash(normalizeRequest({ ...minimal, client: "owut/2024.07.01~r1" })),
    );
    expect(requestHash(req)).toBe(requestHash(normalizeRequest(minimal)));
  });

  it("does not share arrays or objects with the body", () => {
    const body = { ...minimal, repository_keys: ["k"], repositories: { a: "https://x/" } };
    const req = normalizeRequest(body);
    req.repository_keys.push("x");
    req.repositories.b = "https://y/";
    expect(body.repository_keys).toEqual(["k"]);
    expect(body.repositories).toEqual({ a: "https://x/" });
  });
});
