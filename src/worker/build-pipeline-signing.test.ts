import { createHash } from "node:crypto";
import { fakeJob, fakeRunner } from "../../test/support/pipeline-fakes.js";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { loadConfig, type AsuConfig } from "../config/config.js";
import { ProcessRunner, type RunResult } from "../imagebuilder/process-runner.js";
import type { BuildJobData } from "../queue/build-job.js";
import { BuildError } from "../shared/errors.js";
import { verifyMessage } from "../shared/usign.js";
import { LocalStore } from "../store/local-store.js";
import { runBuildPipeline, type PipelineDeps } from "./build-pipeline.js";
import { UsignImageSigner } from "./image-signer.js";

/**
 * The pipeline's signing stage with the real signer and OpenWrt's real tools, and a fake
 * `make` that leaves a sysupgrade image with fwtool metadata and a combined image without:
 * what is stored, what images[] says about it, and how a broken signing setup fails.
 */

const hostDir = inject("realToolsDir");
const bin = (name: string): string => path.join(hostDir, "bin", name);
const tools = { usign: bin("usign"), ucert: bin("ucert"), fwtool: bin("fwtool") };
const processRunner = new ProcessRunner();
const sha256 = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

const HASH = "b".repeat(64);
const PROFILE = "test_device";
const PREFIX = "openwrt-24.10.4-ath79-generic-test_device";
const SYSUPGRADE = `${PREFIX}-squashfs-sysupgrade.bin`;
const COMBINED = `${PREFIX}-ext4-combined.img.gz`;
const KERNEL = `${PREFIX}-kernel.bin`;

let tmp: string;
let config: AsuConfig;
let store: LocalStore;
let publicDir: string;
let sysupgrade: Buffer;
const combined = Buffer.alloc(16 * 1024, 0x33);
const kernel = Buffer.alloc(4 * 1024, 0x44);
let keyFile: string;
let pubFile: string;
let certFile: string;
let trusted: string;

async function ok(argv: string[]): Promise<RunResult> {
  const result = await processRunner.run({
    argv,
    cwd: tmp,
    env: { PATH: path.join(hostDir, "bin") },
    timeoutMs: 30_000,
    maxOutputBytes: 64 * 1024,
  });
  expect(result.code, `${argv.join(" ")}: ${result.stderr}`).toBe(0);
  return result;
}

const image = (name: string, type: string, bytes: Buffer) => ({
  name,
  type,
  filesystem: "squashfs",
  sha256: sha256(bytes),
  sha256_unsigned: sha256(bytes),
  size: bytes.length,
});

function deps(signer: UsignImageSigner): PipelineDeps {
  return {
    config,
    imagebuilders: { acquire: async () => ({ root: path.join(tmp, "ib"), release: async () => undefined }) },
    runner: fakeRunner(tmp, async (ws, opts) => {
      const stdout: Record<string, string> = {
        info: `Current Revision: "r1-abc"\nDefault Packages: base-files\nAvailable Profiles:\n\n${PROFILE}:\n    Test\n    Packages: \n`,
        manifest: "base-files - 1\n",
        image: "",
      };
      if (opts.args[1] === "image") {
        await writeFile(path.join(ws.binDir, SYSUPGRADE), sysupgrade);
        await writeFile(path.join(ws.binDir, COMBINED), combined);
        await writeFile(path.join(ws.binDir, KERNEL), kernel);
        await writeFile(
          path.join(ws.binDir, "profiles.json"),
          JSON.stringify({
            target: "ath79/generic",
            version_code: "r1-abc",
            profiles: {
              [PROFILE]: {
                image_prefix: PREFIX,
                images: [
                  image(SYSUPGRADE, "sysupgrade", sysupgrade),
                  image(COMBINED, "combined", combined),
                  image(KERNEL, "kernel", kernel),
                ],
              },
            },
          }),
        );
      }
      return { stdout: stdout[opts.args[1] as string] ?? "" };
    }),
    storeFiles: (hash, files) => store.put(hash, files),
    signer,
  };
}

const job: BuildJobData = fakeJob({ profile: PROFILE });

const stored = (name: string): Promise<Buffer> => readFile(path.join(publicDir, "store", HASH, name));

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), "asu-pipeline-signing-"));
  await mkdir(path.join(tmp, "ib"));
  await ok([bin("usign"), "-G", "-s", "root.sec", "-p", "root.pub"]);
  await ok([bin("usign"), "-G", "-s", "key-build", "-p", "key-build.pub"]);
  await ok([bin("ucert"), "-I", "-c", "key-build.ucert", "-p", "key-build.pub", "-s", "root.sec"]);
  keyFile = path.join(tmp, "key-build");
  pubFile = path.join(tmp, "key-build.pub");
  certFile = path.join(tmp, "key-build.ucert");
  trusted = path.join(tmp, "keys");
  await mkdir(trusted);
  const fingerprint = (await ok([bin("usign"), "-F", "-p", "root.pub"])).stdout.trim();
  await writeFile(path.join(trusted, fingerprint), await readFile(path.join(tmp, "root.pub")));

  const file = path.join(tmp, "sysupgrade.bin");
  await writeFile(file, Buffer.alloc(48 * 1024, 0x11));
  await writeFile(`${file}.json`, JSON.stringify({ supported_devices: ["test,device"] }));
  await ok([bin("fwtool"), "-I", `${file}.json`, file]);
  sysupgrade = await readFile(file);
  config = { ...loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} }), job_timeout: 60 };
});

beforeEach(async () => {
  publicDir = await mkdtemp(path.join(tmp, "public-"));
  store = new LocalStore(publicDir);
  await store.init();
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe("signing stage of the build pipeline", () => {
  it("serves the signed sysupgrade image, describes it in images[], and keeps detached .sig files", async () => {
    const signer = new UsignImageSigner(keyFile, { certFile, tools, processRunner });
    const stages: string[] = [];
    const result = await runBuildPipeline(HASH, job, deps(signer), async (s) => {
      stages.push(s);
    });
    expect(stages).toContain("signing_images");
    const images = result.body.images as ReturnType<typeof image>[];

    const served = await stored(SYSUPGRADE);
    const up = images.find((i) => i.name === SYSUPGRADE);
    expect(up).toMatchObject({
      sha256: sha256(served),
      sha256_unsigned: sha256(sysupgrade),
      size: served.length,
    });
    expect(served.length).toBeGreaterThan(sysupgrade.length);
    const file = path.join(tmp, "check.bin");
    await writeFile(file, served);
    await ok([bin("fwtool"), "-s", `${file}.ucert`, "-t", file]);
    await ok([bin("ucert"), "-V", "-m", file, "-c", `${file}.ucert`, "-P", trusted]);
    await rm(file);
    await rm(`${file}.ucert`);

    // No metadata: served as built, with only the detached signature.
    expect((await stored(COMBINED)).equals(combined)).toBe(true);
    expect(images.find((i) => i.name === COMBINED)).toEqual(image(COMBINED, "combined", combined));
    // A kernel is not flashed by itself: neither signed nor changed.
    expect(images.find((i) => i.name === KERNEL)).toEqual(image(KERNEL, "kernel", kernel));

    const pub = await readFile(pubFile, "utf8");
    for (const [name, bytes] of [
      [SYSUPGRADE, served],
      [COMBINED, combined],
    ] as const) {
      expect(verifyMessage(bytes, (await stored(`${name}.sig`)).toString("utf8"), pub)).toEqual({ ok: true });
    }
    expect((await readdir(path.join(publicDir, "store", HASH))).sort()).toEqual(
      [SYSUPGRADE, `${SYSUPGRADE}.sig`, COMBINED, `${COMBINED}.sig`, KERNEL, `${PREFIX}.manifest`].sort(),
    );
  });

  it("fails as the server's fault, telling the operator to check the signing setup, and stores nothing", async () => {
    const broken = path.join(tmp, "broken.ucert");
    await writeFile(broken, "not a certificate");
    const signer = new UsignImageSigner(keyFile, { certFile: broken, tools, processRunner });
    const err = await runBuildPipeline(HASH, job, deps(signer), async () => undefined).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BuildError);
    const buildError = err as BuildError;
    expect(buildError.userFault).toBe(false);
    expect(buildError.retryable).toBe(false);
    expect(buildError.detail).toMatch(
      new RegExp(
        `^Error: Signing ${SYSUPGRADE.replace(/[.]/g, "\\.")} failed: ucert -D \\(reading the certificate signing_cert\\).*The server operator must check the signing setup \\(signing_key, signing_cert, signing_tools_dir\\)\\.$`,
      ),
    );
    expect(buildError.detail).not.toContain(tmp);
    await expect(readdir(path.join(publicDir, "store", HASH))).rejects.toThrow();
  });
});
