import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig, type AsuConfig } from "../../src/config/config.js";
import { ProcessRunner } from "../../src/imagebuilder/process-runner.js";
import { NativeRunner } from "../../src/imagebuilder/runners/native-runner.js";
import type { BuildJobData } from "../../src/queue/build-job.js";
import { BuildError } from "../../src/shared/errors.js";
import { generateKeyPair } from "../../src/shared/usign.js";
import { LocalStore } from "../../src/store/local-store.js";
import { runBuildPipeline, type PipelineDeps } from "../../src/worker/build-pipeline.js";
import { UsignImageSigner } from "../../src/worker/image-signer.js";

/**
 * Issue #9 findings 1 and 4 end to end: a real `make` under bubblewrap leaves links to the
 * server's key, a `.sig` link to a host file and a FIFO in BIN_DIR. The build cannot read
 * those files itself, but the worker, outside the sandbox, must not follow them either.
 */

const PROFILE = "test_device";
const IMAGE = "openwrt-test_device-squashfs-sysupgrade.bin";
const HASH = "d".repeat(64);

let tmp: string;
let secret: string;
let victim: string;
let config: AsuConfig;
const processRunner = new ProcessRunner({ killGraceMs: 500, closeGraceMs: 500 });

function makefile(image: string[]): string {
  return [
    ".SILENT:",
    "info:",
    `\techo 'Current Target: "ath79/generic"'`,
    `\techo 'Current Revision: "r1-abc"'`,
    "\techo 'Default Packages: base-files'",
    `\techo '${PROFILE}:'`,
    "\techo '    Packages: '",
    "manifest:",
    "\techo 'base-files - 1'",
    "image:",
    ...image.map((line) => `\t${line}`),
    "",
  ].join("\n");
}

async function imagebuilder(name: string, image: string[]): Promise<string> {
  const root = path.join(tmp, "cache", "imagebuilders", name, "openwrt-imagebuilder");
  await mkdir(root, { recursive: true });
  await writeFile(path.join(root, "Makefile"), makefile(image));
  return root;
}

async function build(root: string, publicDir: string): Promise<unknown> {
  const store = new LocalStore(publicDir);
  await store.init();
  const keyFile = path.join(tmp, "asu.key");
  await writeFile(keyFile, generateKeyPair().secretFile);
  const deps: PipelineDeps = {
    config,
    imagebuilders: {
      acquire: async () => ({
        root,
        release: async () => undefined,
      }),
    },
    runner: new NativeRunner({ processRunner, hiddenPaths: [path.join(tmp, "cache"), secret, victim] }),
    storeFiles: (hash, files) => store.put(hash, files),
    signer: new UsignImageSigner(keyFile),
  };
  const job: BuildJobData = {
    request: {
      distro: "openwrt",
      version: "24.10.4",
      version_code: "",
      target: "ath79/generic",
      profile: PROFILE,
      packages: [],
      packages_versions: {},
      diff_packages: false,
      defaults: null,
      rootfs_size_mb: null,
      filesystem: null,
      repositories: {},
      repositories_mode: "append",
      repository_keys: [],
      client: null,
    },
    profile: PROFILE,
    enqueued_at: Date.now(),
    result_ttl: 60,
  };
  return runBuildPipeline(HASH, job, deps, async () => undefined).then(
    () => undefined,
    (err: unknown) => err,
  );
}

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "asu-hostile-e2e-"));
  secret = path.join(tmp, "signing.key");
  victim = path.join(tmp, "victim.conf");
  await writeFile(secret, "untrusted comment: THE-SERVER-SECRET\n");
  config = { ...loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} }), job_timeout: 30 };
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("hostile output of a sandboxed build", () => {
  it("links to the signing key and a host file are neither published nor written", async () => {
    await writeFile(victim, "host file, must stay\n");
    const sha = createHash("sha256")
      .update(await readFile(secret))
      .digest("hex");
    const profiles = JSON.stringify({
      profiles: {
        [PROFILE]: { image_prefix: "p", images: [{ name: IMAGE, type: "sysupgrade", sha256: sha }] },
      },
    });
    const root = await imagebuilder("links", [
      `ln -s ${secret} $(BIN_DIR)/${IMAGE}`,
      `ln -s ${secret} $(BIN_DIR)/zz.manifest`,
      `ln -s ${victim} $(BIN_DIR)/${IMAGE}.sig`,
      `echo '${profiles}' > $(BIN_DIR)/profiles.json`,
    ]);
    const publicDir = path.join(tmp, "public-links");
    const err = (await build(root, publicDir)) as BuildError;
    expect(err).toBeInstanceOf(BuildError);
    expect(err.userFault).toBe(false);
    expect(err.detail).toMatch(/unusable image: .*link/);
    expect(await readFile(victim, "utf8")).toBe("host file, must stay\n");
    const stored = path.join(publicDir, "store", HASH);
    expect(existsSync(stored) ? await readdir(stored) : []).toEqual([]);
  });

  it("a FIFO as profiles.json fails the build at once", { timeout: 30_000 }, async () => {
    const root = await imagebuilder("fifo", [
      `echo firmware > $(BIN_DIR)/${IMAGE}`,
      "mkfifo $(BIN_DIR)/profiles.json",
    ]);
    const started = Date.now();
    const err = (await build(root, path.join(tmp, "public-fifo"))) as BuildError;
    expect(err).toBeInstanceOf(BuildError);
    expect(err.userFault).toBe(false);
    expect(err.detail).toMatch(/profiles\.json is not a regular file/);
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});
