import { describe, expect, it } from "vitest";
import { loadConfig } from "../config/config.js";
import { branchFor, diffPackages } from "./build-pipeline.js";

describe("diffPackages", () => {
  it("removes default packages the request does not list, keeping the user's order", () => {
    expect(
      diffPackages(["luci", "base-files", "tcpdump"], ["base-files", "dnsmasq", "dropbear", "base-files"]),
    ).toEqual(["luci", "base-files", "tcpdump", "-dnsmasq", "-dropbear"]);
  });

  it("does not repeat a removal the user asked for", () => {
    expect(diffPackages(["-dnsmasq", "dnsmasq-full"], ["dnsmasq", "dropbear"])).toEqual([
      "-dnsmasq",
      "dnsmasq-full",
      "-dropbear",
    ]);
  });

  it("does not prefix a device package that is already a removal (-swconfig → never --swconfig)", () => {
    const out = diffPackages(["luci"], ["swconfig", "-swconfig", "dnsmasq", "-wpad-basic"]);
    expect(out).toEqual(["luci", "-dnsmasq", "-swconfig"]);
    expect(out.some((p) => p.startsWith("--"))).toBe(false);
  });
});

describe("branchFor", () => {
  const config = loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} });
  it("maps versions to their branch", () => {
    expect(branchFor(config, "24.10.4").name).toBe("24.10");
    expect(branchFor(config, "24.10-SNAPSHOT").name).toBe("24.10");
    expect(branchFor(config, "SNAPSHOT").name).toBe("SNAPSHOT");
    expect(() => branchFor(config, "1.0")).toThrow("Unsupported branch for version 1.0");
  });
});
