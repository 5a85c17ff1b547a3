import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import {
  FAKE_FIRMWARE,
  FAKE_IMAGE,
  FAKE_MAKE_INFO,
  FAKE_PROFILE,
  FakeImageBuilders,
  FakeRunner,
  FakeStore,
  fakeJob,
  fakeRunner,
  type FakeStep,
} from "../../test/support/pipeline-fakes.js";
import { loadConfig, type AsuConfig } from "../config/config.js";
import {
  ImageBuilderUnavailableError,
  ImageBuilderVerificationError,
} from "../imagebuilder/imagebuilder-errors.js";
import type { BuildStage } from "../queue/build-job.js";
import { AsuError, BuildError, isRetryable, isUserFault } from "../shared/errors.js";
import { branchFor, diffPackages, runBuildPipeline, type PipelineDeps } from "./build-pipeline.js";
import { MakeInfoCache, treeKey } from "./make-info-cache.js";

/**
 * The middle tier (issue #15, item 7): runBuildPipeline with a fake runner, ImageBuilder
 * cache and store, one test per branch. No sandbox, no mirror, no Redis.
 */

const HASH = "b".repeat(64);
let tmp: string;
let config: AsuConfig;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "asu-pipeline-"));
  await mkdir(path.join(tmp, "ib"));
  config = { ...loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} }), job_timeout: 60 };
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

afterEach(() => {
  vi.useRealTimers();
});

function setup(
  script: ConstructorParameters<typeof FakeRunner>[1] = {},
  ib: ConstructorParameters<typeof FakeImageBuilders>[1] = {},
) {
  const runner = new FakeRunner(tmp, script);
  const imagebuilders = new FakeImageBuilders(path.join(tmp, "ib"), ib);
  const store = new FakeStore();
  const stages: BuildStage[] = [];
  const deps: PipelineDeps = { config, runner, imagebuilders, storeFiles: store.storeFiles };
  const run = (conf: AsuConfig = config, job = fakeJob({ profile: FAKE_PROFILE })) =>
    runBuildPipeline(HASH, job, { ...deps, config: conf }, async (s) => {
      stages.push(s);
    });
  return { runner, imagebuilders, store, stages, run };
}

async function failure(promise: Promise<unknown>): Promise<AsuError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AsuError);
  return err as AsuError;
}

describe("runBuildPipeline", () => {
  it("builds, stores the image and its manifest, reports LuCI's stages and leaves the cleanup to its caller", async () => {
    const t = setup();
    const result = await t.run();
    expect(result.body).toMatchObject({
      status: 200,
      detail: "done",
      imagebuilder_status: "done",
      id: FAKE_PROFILE,
      request_hash: HASH,
      bin_dir: HASH,
      manifest: { "base-files": "1", busybox: "2" },
      images: [{ name: FAKE_IMAGE, type: "sysupgrade" }],
    });
    expect(t.stages).toEqual([
      "init",
      "validate_revision",
      "validate_manifest",
      "calculate_packages_hash",
      "building_image",
    ]);
    const stored = t.store.builds.get(HASH);
    expect(stored?.get(FAKE_IMAGE)).toEqual(FAKE_FIRMWARE);
    expect(stored?.get("openwrt-24.10.4-ath79-generic-test_device.manifest")?.toString()).toBe(
      "base-files - 1\nbusybox - 2\n",
    );
    expect(t.runner.calls.map((args) => args[1])).toEqual(["info", "manifest", "image"]);
    // The caller cleans up once it has stored the result (issue #13).
    expect(t.runner.workspaces.map((w) => w.disposed)).toEqual([false]);
    expect([t.imagebuilders.acquired, t.imagebuilders.released]).toEqual([1, 0]);
    await result.cleanup();
    expect(t.runner.workspaces.map((w) => w.disposed)).toEqual([true]);
    expect([t.imagebuilders.acquired, t.imagebuilders.released]).toEqual([1, 1]);
  });

  // Each failure: the detail a client reads, and whether it is the user's fault and retried.
  const failures: [
    string,
    Partial<Record<"info" | "manifest" | "image", FakeStep>>,
    RegExp,
    boolean,
    boolean,
  ][] = [
    ["make info fails", { info: { code: 2 } }, /could not list its profiles/, false, true],
    [
      "impossible package selection",
      {
        manifest: {
          code: 1,
          stderr: "Collected errors:\n * opkg_install_cmd: Cannot install package nope.\n",
        },
      },
      /^Error: Impossible package selection: missing \(nope\)/,
      true,
      false,
    ],
    [
      "unrecognised package manager failure",
      { manifest: { code: 1, stderr: "something odd\n" } },
      /does not recognise/,
      false,
      false,
    ],
    ["empty manifest", { manifest: { stdout: "" } }, /empty manifest/, false, false],
    [
      "image too big",
      { image: { code: 1, stderr: "Image file squashfs-sysupgrade.bin is too big\n" } },
      /exceed device storage/,
      true,
      false,
    ],
    [
      "make image fails",
      { image: { code: 2, stderr: "make: *** Error 2\n" } },
      /image build failed/,
      false,
      true,
    ],
    ["no profiles.json", { image: {} }, /wrote no profiles.json/, false, false],
    // Killed from outside (shutdown's killAll): not the user's doing, another attempt may succeed.
    [
      "build killed (cancelled)",
      { image: { code: null, signal: "SIGKILL" } },
      /image build failed/,
      false,
      true,
    ],
  ];
  it.each(failures)("%s", async (_name, script, detail, userFault, retryable) => {
    const t = setup(script);
    const err = await failure(t.run());
    expect(err).toBeInstanceOf(BuildError);
    expect(err.detail).toMatch(detail);
    expect({ userFault: isUserFault(err), retryable: isRetryable(err) }).toEqual({ userFault, retryable });
    expect(t.store.builds.size).toBe(0);
    expect(t.runner.workspaces.every((w) => w.disposed)).toBe(true);
    expect(t.imagebuilders.released).toBe(t.imagebuilders.acquired);
  });

  it("refuses a wrong revision as the user's fault", async () => {
    const t = setup();
    const err = await failure(t.run(config, fakeJob({ profile: FAKE_PROFILE, version_code: "r1-other" })));
    expect(err.detail).toBe("Error: Received incorrect version r28427-6df0e3d02a (requested r1-other)");
    expect(isUserFault(err)).toBe(true);
  });

  it("refuses defaults the server does not accept, before getting an ImageBuilder", async () => {
    const t = setup();
    const err = await failure(t.run(config, fakeJob({ profile: FAKE_PROFILE, defaults: "echo hi" })));
    expect(err.detail).toMatch(/does not accept `defaults`/);
    expect(t.imagebuilders.acquired).toBe(0);
  });

  it.each([
    ["a download that may work later", new ImageBuilderUnavailableError("mirror down"), true],
    ["a tampered archive", new ImageBuilderVerificationError("bad signature"), false],
  ])("passes on an ImageBuilder failure: %s", async (_name, error, retryable) => {
    const t = setup({}, { fail: error });
    const err = await failure(t.run());
    expect(err).toBe(error);
    expect(isRetryable(err)).toBe(retryable);
    expect(t.runner.calls).toEqual([]);
  });

  it("kills a build that hangs at job_timeout, and releases its workspace and ImageBuilder", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const t = setup({ image: "hang" });
    const outcome = failure(t.run({ ...config, job_timeout: 600 }));
    await t.runner.started("image");
    expect(t.runner.killed).toBe(0);
    await vi.advanceTimersByTimeAsync(600_000);
    const err = await outcome;
    expect(err.detail).toBe("Error: Build timed out after 600 s and was stopped.");
    expect({ userFault: isUserFault(err), retryable: isRetryable(err) }).toEqual({
      userFault: false,
      retryable: false,
    });
    // The hanging make saw the abort (the native runner kills its process group on it).
    await vi.waitFor(() => expect(t.runner.killed).toBe(1));
    await vi.waitFor(() => expect(t.runner.workspaces.map((w) => w.disposed)).toEqual([true]));
    await vi.waitFor(() => expect(t.imagebuilders.released).toBe(1));
    expect(t.store.builds.size).toBe(0);
  });

  it("removes the workspace of a build whose last step finished after job_timeout", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    const t = setup();
    let storing: () => void = () => undefined;
    const stored = new Promise<void>((resolve) => {
      storing = resolve;
    });
    let finishStore: () => void = () => undefined;
    // A store that does not heed the abort: the steps end with a result nobody takes.
    const slowStore = async (): Promise<void> => {
      storing();
      await new Promise<void>((resolve) => {
        finishStore = resolve;
      });
    };
    const outcome = failure(
      runBuildPipeline(
        HASH,
        fakeJob({ profile: FAKE_PROFILE }),
        {
          config: { ...config, job_timeout: 600 },
          runner: t.runner,
          imagebuilders: t.imagebuilders,
          storeFiles: slowStore,
        },
        async () => undefined,
      ),
    );
    await stored;
    await vi.advanceTimersByTimeAsync(600_000);
    expect((await outcome).detail).toBe("Error: Build timed out after 600 s and was stopped.");
    expect(t.runner.workspaces.map((w) => w.disposed)).toEqual([false]);
    finishStore();
    await vi.waitFor(() => expect(t.runner.workspaces.map((w) => w.disposed)).toEqual([true]));
    await vi.waitFor(() => expect(t.imagebuilders.released).toBe(1));
  });

  it("does not wait for stage updates to reach Redis, but reports them in order before it ends", async () => {
    const t = setup();
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const reported: BuildStage[] = [];
    let finished = false;
    const outcome = runBuildPipeline(
      HASH,
      fakeJob({ profile: FAKE_PROFILE }),
      { config, runner: t.runner, imagebuilders: t.imagebuilders, storeFiles: t.store.storeFiles },
      async (s) => {
        await gate;
        reported.push(s);
      },
    ).then((r) => {
      finished = true;
      return r;
    });
    // The first update is still on its way, and make image has started all the same.
    await t.runner.started("image");
    expect(reported).toEqual([]);
    expect(finished).toBe(false);
    open();
    await (await outcome).cleanup();
    expect(reported).toEqual([
      "init",
      "validate_revision",
      "validate_manifest",
      "calculate_packages_hash",
      "building_image",
    ]);
  });

  it("fails the build when a stage update fails, and cleans up", async () => {
    const t = setup();
    const err = await runBuildPipeline(
      HASH,
      fakeJob({ profile: FAKE_PROFILE }),
      { config, runner: t.runner, imagebuilders: t.imagebuilders, storeFiles: t.store.storeFiles },
      async (s) => {
        if (s === "validate_manifest") throw new Error("Redis went away");
      },
    ).catch((e: unknown) => e);
    expect((err as Error).message).toBe("Redis went away");
    expect(t.runner.workspaces.map((w) => w.disposed)).toEqual([true]);
    expect(t.imagebuilders.released).toBe(1);
  });

  it("fails a store that cannot take the files as the server's fault", async () => {
    const t = setup();
    t.store.fail = Object.assign(new Error("EIO: i/o error, write"), { code: "EIO" });
    await expect(t.run()).rejects.toThrow(/EIO/);
    expect(t.runner.workspaces.map((w) => w.disposed)).toEqual([true]);
  });
});

describe("runBuildPipeline with a make info cache", () => {
  function cached(runner: FakeRunner, cache: MakeInfoCache, root = path.join(tmp, "ib")) {
    const store = new FakeStore();
    const imagebuilders = new FakeImageBuilders(root);
    return (job = fakeJob({ profile: FAKE_PROFILE })) =>
      runBuildPipeline(
        HASH,
        job,
        { config, runner, imagebuilders, storeFiles: store.storeFiles, makeInfoCache: cache },
        async () => undefined,
      );
  }
  const targets = (runner: FakeRunner) => runner.calls.map((args) => args[1]);

  it("runs make info once per ImageBuilder tree", async () => {
    const runner = new FakeRunner(tmp);
    const cache = new MakeInfoCache();
    const build = cached(runner, cache);
    await (await build()).cleanup();
    await (await build(fakeJob({ profile: FAKE_PROFILE, packages: ["tcpdump"] }))).cleanup();
    expect(targets(runner)).toEqual(["info", "manifest", "image", "manifest", "image"]);
  });

  it("still checks each request's revision against the cached one", async () => {
    const runner = new FakeRunner(tmp);
    const build = cached(runner, new MakeInfoCache());
    await (await build()).cleanup();
    const err = await failure(build(fakeJob({ profile: FAKE_PROFILE, version_code: "r1-other" })));
    expect(err.detail).toBe("Error: Received incorrect version r28427-6df0e3d02a (requested r1-other)");
    expect(targets(runner)).toEqual(["info", "manifest", "image"]);
  });

  it("runs it again for another tree, and for a tree unpacked anew at the same path", async () => {
    const runner = new FakeRunner(tmp);
    const cache = new MakeInfoCache();
    const other = await mkdtemp(path.join(tmp, "other-ib-"));
    await (await cached(runner, cache)()).cleanup();
    await (await cached(runner, cache, other)()).cleanup();
    await rm(other, { recursive: true });
    await mkdir(other);
    await (await cached(runner, cache, other)()).cleanup();
    expect(targets(runner).filter((t) => t === "info")).toHaveLength(3);
  });

  it("keeps nothing from a build with custom repositories, whose feed list the request changed", async () => {
    const runner = new FakeRunner(tmp);
    const cache = new MakeInfoCache();
    const root = await mkdtemp(path.join(tmp, "custom-ib-"));
    await writeFile(path.join(root, "repositories.conf"), "src/gz base https://downloads.example/base\n");
    const custom = fakeJob({
      profile: FAKE_PROFILE,
      repositories: { extra: "https://repo.example/feed" },
    });
    await (await cached(runner, cache, root)(custom)).cleanup();
    expect(cache.size).toBe(0);
    await (await cached(runner, cache, root)()).cleanup();
    expect(cache.size).toBe(1);
  });

  it("keeps make info's output without host paths", async () => {
    const runner = new FakeRunner(tmp, {
      info: { stdout: `${FAKE_MAKE_INFO}\nmake: Entering directory '${path.join(tmp, "ib")}'\n` },
    });
    const cache = new MakeInfoCache();
    await (await cached(runner, cache)()).cleanup();
    const entry = cache.get(await treeKey(path.join(tmp, "ib")));
    expect(entry?.stdout).toContain("Entering directory '/builder/ib'");
    expect(entry?.stdout).not.toContain(tmp);
  });
});

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
    const parent = await mkdtemp(path.join(os.tmpdir(), "asu-pipeline-lines-"));
    try {
      const ibRoot = path.join(parent, "imagebuilder");
      const lines: [string, string][] = [];
      const deps: PipelineDeps = {
        config: loadConfig({ cwd: parent, env: {} }),
        imagebuilders: { acquire: async () => ({ root: ibRoot, release: async () => undefined }) },
        runner: fakeRunner(parent, async (ws, opts) => {
          opts.onLine?.("stdout", `make[1]: Entering directory '${ws.dir}'`);
          opts.onLine?.("stderr", `cp: cannot stat '${ibRoot}/files/x': No such file or directory`);
          return { code: 2 };
        }),
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
