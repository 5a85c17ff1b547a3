import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { fakeJob, fakeWorkspace } from "../../test/support/pipeline-fakes.js";
import { loadConfig } from "../config/config.js";
import { branchFor, diffPackages, runBuildPipeline, type PipelineDeps } from "./build-pipeline.js";

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

describe("live output lines (issue #14)", () => {
  it("hands make's output lines to onOutputLine as they come, with host paths replaced", async () => {
    const parent = await mkdtemp(path.join(tmpdir(), "asu-pipeline-lines-"));
    try {
      const ibRoot = path.join(parent, "imagebuilder");
      const lines: [string, string][] = [];
      const deps: PipelineDeps = {
        config: loadConfig({ cwd: parent, env: {} }),
        imagebuilders: { acquire: async () => ({ root: ibRoot, release: async () => undefined }) },
        runner: {
          createWorkspace: () => fakeWorkspace(parent),
          run: async (ws, opts) => {
            opts.onLine?.("stdout", `make[1]: Entering directory '${ws.dir}'`);
            opts.onLine?.("stderr", `cp: cannot stat '${ibRoot}/files/x': No such file or directory`);
            return { code: 2, stdout: "", stderr: "", timedOut: false, durationMs: 1 };
          },
        },
        storeFiles: async () => undefined,
        onOutputLine: (stream, line) => lines.push([stream, line]),
      };
      await expect(runBuildPipeline("h", fakeJob(), deps, async () => undefined)).rejects.toThrow(
        "make info failed",
      );
      expect(lines).toEqual([
        ["stdout", "make[1]: Entering directory '/builder/ib'"],
        ["stderr", "cp: cannot stat '/builder/ib/files/x': No such file or directory"],
      ]);
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});
