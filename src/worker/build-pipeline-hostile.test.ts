import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  symlink,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { loadConfig, type AsuConfig } from "../config/config.js";
import { fakeJob, fakeRunner, type fakeWorkspace } from "../../test/support/pipeline-fakes.js";
import type { BuildJobData } from "../queue/build-job.js";
import type { NormalizedRequest } from "../request/normalize-request.js";
import { BuildError } from "../shared/errors.js";
import { generateKeyPair, verifyMessage } from "../shared/usign.js";
import { LocalStore } from "../store/local-store.js";
import { runBuildPipeline, type PipelineDeps } from "./build-pipeline.js";
import { UsignImageSigner } from "./image-signer.js";

/**
 * Issue #9, findings 1, 4 and 8 (worker side): a build whose output is hostile. The fake
 * runner plays a build that ran unsandboxed or escaped: it leaves links to the server's
 * secrets, FIFOs, huge sparse files and odd names in BIN_DIR, and the worker must neither
 * follow, publish, block on nor overwrite any of it.
 */

const HASH = "a".repeat(64);
const PROFILE = "test_device";
const PREFIX = "openwrt-24.10.4-ath79-generic-test_device";
const IMAGE = `${PREFIX}-squashfs-sysupgrade.bin`;
const FIRMWARE = Buffer.from("firmware bytes\n");
const REVISION = "r28427-6df0e3d02a";

type Ws = Awaited<ReturnType<typeof fakeWorkspace>>;

type Step = (ws: Ws, args: string[]) => Promise<{ code?: number; stdout?: string; stderr?: string } | void>;

let tmp: string;
let secretFile: string;
let victimFile: string;
let keyFile: string;
const key = generateKeyPair("asu-ts hostile test");
let scenario: { info?: Step; manifest?: Step; image?: Step };
let store: LocalStore;
let publicDir: string;

function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

function profilesJson(images: { name: string; type?: string; sha256?: string }[], prefix = PREFIX): string {
  return JSON.stringify({
    target: "ath79/generic",
    version_code: REVISION,
    version_number: "24.10.4",
    metadata_version: 1,
    profiles: {
      [PROFILE]: {
        image_prefix: prefix,
        titles: [{ vendor: "Test", model: "Device" }],
        supported_devices: ["test,device"],
        images: images.map((i) => ({
          name: i.name,
          type: i.type ?? "sysupgrade",
          filesystem: "squashfs",
          sha256: i.sha256 ?? sha256(FIRMWARE),
          sha256_unsigned: i.sha256 ?? sha256(FIRMWARE),
        })),
      },
    },
  });
}

/** What an honest `make image` leaves: the image, its profiles.json and the IB's own manifest. */
async function honestImage(ws: Ws): Promise<void> {
  await writeFile(path.join(ws.binDir, IMAGE), FIRMWARE);
  await writeFile(path.join(ws.binDir, "profiles.json"), profilesJson([{ name: IMAGE }]));
  await writeFile(path.join(ws.binDir, `${PREFIX}.manifest`), "base-files - 1\nbusybox - 2\n");
}

function makeDeps(config: AsuConfig, withSigner = true): PipelineDeps {
  const ibRoot = path.join(tmp, "ib");
  return {
    config,
    imagebuilders: {
      acquire: async () => ({ root: ibRoot, release: async () => undefined }),
    },
    runner: fakeRunner(tmp, async (ws, opts) => {
      const target = opts.args[1] as "info" | "manifest" | "image";
      const step = scenario[target];
      const defaults: Record<string, string> = {
        info: [
          'Current Target: "ath79/generic"',
          `Current Revision: "${REVISION}"`,
          "Default Packages: base-files busybox",
          "Available Profiles:",
          "",
          `${PROFILE}:`,
          "    Test Device",
          "    Packages: ",
        ].join("\n"),
        manifest: "base-files - 1\nbusybox - 2\n",
        image: `Building images for ath79 in ${ws.dir}\n`,
      };
      const out = (await step?.(ws, opts.args)) ?? {};
      if (target === "image" && step === undefined) await honestImage(ws);
      return {
        code: out.code ?? 0,
        stdout: out.stdout ?? defaults[target] ?? "",
        stderr: out.stderr ?? "",
      };
    }),
    storeFiles: (hash, files) => store.put(hash, files),
    ...(withSigner ? { signer: new UsignImageSigner(keyFile) } : {}),
  };
}

function job(over: Partial<NormalizedRequest> = {}): BuildJobData {
  return fakeJob({ profile: PROFILE, ...over });
}

let config: AsuConfig;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "asu-hostile-"));
  await mkdir(path.join(tmp, "ib"));
  secretFile = path.join(tmp, "signing.key");
  await writeFile(secretFile, "untrusted comment: THE-SERVER-SECRET\nRWRTOPSECRET\n");
  keyFile = path.join(tmp, "asu.key");
  await writeFile(keyFile, key.secretFile);
  config = {
    ...loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} }),
    job_timeout: 5,
    allow_defaults: true,
  };
});

beforeEach(async () => {
  scenario = {};
  publicDir = await mkdtemp(path.join(tmp, "public-"));
  store = new LocalStore(publicDir);
  await store.init();
  victimFile = path.join(tmp, `victim-${Date.now()}`);
  await writeFile(victimFile, "host file, must stay\n");
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function storedNames(): Promise<string[]> {
  const dir = path.join(publicDir, "store", HASH);
  return existsSync(dir) ? (await readdir(dir)).sort() : [];
}

async function storedBytes(): Promise<string> {
  const names = await storedNames();
  const parts = await Promise.all(names.map((n) => readFile(path.join(publicDir, "store", HASH, n), "utf8")));
  return parts.join("\n");
}

/** The build must fail as the server's fault (never cached as the user's), publishing nothing. */
async function expectServerFault(promise: Promise<unknown>, detail: RegExp): Promise<BuildError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BuildError);
  const buildError = err as BuildError;
  expect(buildError.detail).toMatch(detail);
  expect(buildError.userFault).toBe(false);
  expect(await storedNames()).toEqual([]);
  return buildError;
}

describe("hostile build output (issue #9 finding 1)", () => {
  it("stores only the profile's images, one manifest the worker wrote, and their signatures", async () => {
    scenario.image = async (ws) => {
      await honestImage(ws);
      await writeFile(path.join(ws.binDir, "sha256sums"), "x\n");
      await writeFile(path.join(ws.binDir, "other-device-sysupgrade.bin"), "other\n");
      // a manifest the build wrote itself, pointing at a host file
      await symlink(secretFile, path.join(ws.binDir, "zz.manifest"));
    };
    const result = await runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined);
    expect(await storedNames()).toEqual([`${IMAGE}.sig`, IMAGE, `${PREFIX}.manifest`].sort());
    expect(await storedBytes()).not.toContain("THE-SERVER-SECRET");
    const manifest = await readFile(path.join(publicDir, "store", HASH, `${PREFIX}.manifest`), "utf8");
    expect(manifest).toBe("base-files - 1\nbusybox - 2\n");
    const image = await readFile(path.join(publicDir, "store", HASH, IMAGE));
    expect(sha256(image)).toBe((result.body.images as { sha256: string }[])[0]?.sha256);
    const sig = await readFile(path.join(publicDir, "store", HASH, `${IMAGE}.sig`), "utf8");
    expect(verifyMessage(image, sig, key.publicLine)).toEqual({ ok: true });
  });

  it("refuses an image that is a symlink to the server's signing key", async () => {
    scenario.image = async (ws) => {
      await symlink(secretFile, path.join(ws.binDir, IMAGE));
      await writeFile(
        path.join(ws.binDir, "profiles.json"),
        profilesJson([{ name: IMAGE, sha256: sha256(await readFile(secretFile)) }]),
      );
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config, false), async () => undefined),
      new RegExp(`${IMAGE.replace(/\./g, "\\.")}.*link`),
    );
  });

  it("refuses an image reached through a linked folder", async () => {
    scenario.image = async (ws) => {
      await mkdir(path.join(tmp, "outside"), { recursive: true });
      await writeFile(path.join(tmp, "outside", "img.bin"), FIRMWARE);
      await symlink(path.join(tmp, "outside"), path.join(ws.binDir, "sub"));
      await writeFile(path.join(ws.binDir, "profiles.json"), profilesJson([{ name: "sub/img.bin" }]));
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config, false), async () => undefined),
      /unsafe image name "sub\/img\.bin"/,
    );
  });

  it.each([["../../signing.key"], ["a\u0000b"], [".."], ["-rf"], ["x y"]])(
    "refuses the image name %j from profiles.json",
    async (name) => {
      scenario.image = async (ws) => {
        await writeFile(path.join(ws.binDir, "profiles.json"), profilesJson([{ name }]));
      };
      await expectServerFault(
        runBuildPipeline(HASH, job(), makeDeps(config, false), async () => undefined),
        /unsafe image name/,
      );
    },
  );

  it("refuses a profiles.json that is a symlink to a file outside the workspace", async () => {
    const planted = path.join(tmp, "planted-profiles.json");
    await writeFile(planted, profilesJson([{ name: IMAGE }]));
    scenario.image = async (ws) => {
      await writeFile(path.join(ws.binDir, IMAGE), FIRMWARE);
      await symlink(planted, path.join(ws.binDir, "profiles.json"));
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config, false), async () => undefined),
      /profiles\.json.*link/,
    );
  });

  it("never writes a signature through a planted `.sig` link", async () => {
    scenario.image = async (ws) => {
      await honestImage(ws);
      await symlink(victimFile, path.join(ws.binDir, `${IMAGE}.sig`));
    };
    await runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined);
    expect(await readFile(victimFile, "utf8")).toBe("host file, must stay\n");
    const sig = await readFile(path.join(publicDir, "store", HASH, `${IMAGE}.sig`), "utf8");
    expect(verifyMessage(FIRMWARE, sig, key.publicLine)).toEqual({ ok: true });
  });

  it("never writes the request's defaults through a link planted in FILES", async () => {
    const plant = async (ws: Ws): Promise<void> => {
      await mkdir(path.join(ws.filesDir, "etc", "uci-defaults"), { recursive: true });
      await unlink(path.join(ws.filesDir, "etc", "uci-defaults", "99-asu-defaults")).catch(() => undefined);
      await symlink(victimFile, path.join(ws.filesDir, "etc", "uci-defaults", "99-asu-defaults"));
    };
    scenario.info = plant;
    scenario.manifest = plant;
    await runBuildPipeline(
      HASH,
      job({ defaults: "echo pwned\n" }),
      makeDeps(config),
      async () => undefined,
    ).catch(() => undefined);
    expect(await readFile(victimFile, "utf8")).toBe("host file, must stay\n");
  });

  it("refuses an image whose bytes do not match the sha256 in profiles.json", async () => {
    scenario.image = async (ws) => {
      await writeFile(path.join(ws.binDir, IMAGE), FIRMWARE);
      await writeFile(
        path.join(ws.binDir, "profiles.json"),
        profilesJson([{ name: IMAGE, sha256: "b".repeat(64) }]),
      );
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config, false), async () => undefined),
      /sha256/,
    );
  });

  it.runIf(process.getuid?.() === 0)("refuses a device node as image", async () => {
    scenario.image = async (ws) => {
      execFileSync("mknod", [path.join(ws.binDir, IMAGE), "c", "1", "3"]);
      await writeFile(path.join(ws.binDir, "profiles.json"), profilesJson([{ name: IMAGE }]));
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config, false), async () => undefined),
      /not a regular file/,
    );
  });
});

describe("a build cannot stall the worker (issue #9 finding 4)", () => {
  it("fails at once on a profiles.json that is a FIFO", { timeout: 15_000 }, async () => {
    scenario.image = async (ws) => {
      await writeFile(path.join(ws.binDir, IMAGE), FIRMWARE);
      execFileSync("mkfifo", [path.join(ws.binDir, "profiles.json")]);
    };
    const started = Date.now();
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps({ ...config, job_timeout: 60 }), async () => undefined),
      /profiles\.json is not a regular file/,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("fails at once on a 100 GiB sparse profiles.json", { timeout: 15_000 }, async () => {
    scenario.image = async (ws) => {
      await writeFile(path.join(ws.binDir, IMAGE), FIRMWARE);
      await writeFile(path.join(ws.binDir, "profiles.json"), "");
      await truncate(path.join(ws.binDir, "profiles.json"), 100 * 1024 ** 3);
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined),
      /profiles\.json is \d+ bytes, more than the limit/,
    );
  });

  it("fails at once on a 100 GiB sparse image", { timeout: 15_000 }, async () => {
    scenario.image = async (ws) => {
      await writeFile(path.join(ws.binDir, IMAGE), "");
      await truncate(path.join(ws.binDir, IMAGE), 100 * 1024 ** 3);
      await writeFile(path.join(ws.binDir, "profiles.json"), profilesJson([{ name: IMAGE }]));
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined),
      /is \d+ bytes, more than the limit/,
    );
  });

  // On fake timers (issue #15, item 7): the timeout and the late lease fire when the test says.
  it("job_timeout bounds the whole job, the ImageBuilder download included", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      const deps = makeDeps({ ...config, job_timeout: 1 });
      let released = false;
      deps.imagebuilders = {
        // An ImageBuilder download that never finishes.
        acquire: () =>
          new Promise((resolve) =>
            setTimeout(
              () =>
                resolve({
                  root: path.join(tmp, "ib"),
                  release: async () => {
                    released = true;
                  },
                }),
              3_000,
            ),
          ),
      };
      const outcome = expectServerFault(
        runBuildPipeline(HASH, job(), deps, async () => undefined),
        /^Error: Build timed out after 1 s/,
      );
      await vi.advanceTimersByTimeAsync(1_000);
      await outcome;
      expect(released).toBe(false);
      // the lease that arrives late (after 3 s) is given back
      await vi.advanceTimersByTimeAsync(2_000);
      await vi.waitFor(() => expect(released).toBe(true));
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("results stay small and reveal no host paths (issue #9 finding 8)", () => {
  it("keeps a 64 KiB tail of stdout/stderr, says it was cut, and replaces the workspace path", async () => {
    let wsRoot = "";
    scenario.manifest = async (ws) => {
      wsRoot = ws.root;
      const lines = Array.from(
        { length: 1000 },
        (_, i) => ` * opkg_install_cmd: Cannot install package bogus-package-name-${i}.`,
      );
      const noise = `${ws.dir}/build_dir/target-mips_24kc_musl/root-ath79 ${"x".repeat(400)}\n`.repeat(1000);
      return { code: 1, stdout: noise, stderr: `Collected errors:\n${lines.join("\n")}\n${noise}` };
    };
    const err = (await runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined).catch(
      (e: unknown) => e,
    )) as BuildError;
    expect(err).toBeInstanceOf(BuildError);
    for (const stream of ["stdout", "stderr"] as const) {
      const text = err.extra[stream] as string;
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(64 * 1024 + 200);
      expect(text.split("\n")[0]).toMatch(/^\[asu: output cut: the first \d+ bytes? of \d+ were dropped\]$/);
      expect(text).not.toContain(wsRoot);
      expect(text).not.toContain(tmp);
      expect(text).toContain("/builder/ib/build_dir/target-mips_24kc_musl/root-ath79");
    }
    expect(err.detail.length).toBeLessThan(1_000);
    expect(err.detail).toMatch(
      /^Error: Impossible package selection: missing \(bogus-package-name-0, .* and 980 more\)$/,
    );
  });

  it("replaces the workspace path in a successful build's stdout and build_cmd", async () => {
    const result = await runBuildPipeline(
      HASH,
      job({ defaults: "true\n" }),
      makeDeps(config),
      async () => undefined,
    );
    const text = JSON.stringify(result.body);
    expect(text).not.toContain(tmp);
    expect(result.body.stdout).toBe("Building images for ath79 in /builder/ib\n");
    expect(result.body.build_cmd).toEqual(
      expect.arrayContaining(["BIN_DIR=/builder/bin", "FILES=/builder/files"]),
    );
  });
});

describe("build result facts (issue #11, item 9)", () => {
  it.each([1721081658, "1721081658"])(
    "takes build_at from the release's source_date_epoch (%j), as upstream, not from the clock",
    async (epoch) => {
      scenario.image = async (ws) => {
        await honestImage(ws);
        const doc = JSON.parse(profilesJson([{ name: IMAGE }])) as Record<string, unknown>;
        await writeFile(
          path.join(ws.binDir, "profiles.json"),
          JSON.stringify({ ...doc, source_date_epoch: epoch }),
        );
      };
      const result = await runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined);
      expect(result.body.build_at).toBe(new Date(1721081658 * 1000).toISOString());
    },
  );
});

describe("never done without an image", () => {
  it("an image too big for the flash: make exits 0, no image, no profiles.json", async () => {
    scenario.image = async () => ({
      code: 0,
      stdout: "WARNING: Image file /builder/bin/x-sysupgrade.bin is too big: 8388608 > 7995392\n",
    });
    const err = (await runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined).catch(
      (e: unknown) => e,
    )) as BuildError;
    expect(err).toBeInstanceOf(BuildError);
    expect(err.detail).toBe("Error: Selected packages exceed device storage");
    expect(err.userFault).toBe(true);
    expect(await storedNames()).toEqual([]);
  });

  it("make exits 0 and writes no profiles.json: a server fault", async () => {
    scenario.image = async () => ({ code: 0 });
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined),
      /wrote no profiles\.json/,
    );
  });

  it("profiles.json lists an image the build did not write: a server fault", async () => {
    scenario.image = async (ws) => {
      await writeFile(path.join(ws.binDir, "profiles.json"), profilesJson([{ name: IMAGE }]));
    };
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined),
      /did not write it/,
    );
  });

  it("make manifest exits 0 but lists nothing: a server fault, never an image of an empty manifest", async () => {
    // Seen when a build broke the ImageBuilder's list-installed: the empty manifest was
    // accepted and an image was published under the hash of nothing.
    scenario.manifest = async () => ({ code: 0, stdout: "" });
    await expectServerFault(
      runBuildPipeline(HASH, job(), makeDeps(config), async () => undefined),
      /printed an empty manifest/,
    );
  });
});
