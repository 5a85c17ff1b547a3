import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { RealToolsMirrorInfo } from "../../fixtures/real-tools/generate-real-mirror.js";
import { ProcessRunner, type RunResult } from "../../src/imagebuilder/process-runner.js";
import {
  flushPrefix,
  request,
  startRealToolsMirror,
  startTestServer,
  waitForBuild,
  type JsonResponse,
  type Mirror,
  type TestServer,
} from "./harness.js";

/**
 * Image signatures end to end (issue #8, item 5; docs/decisions/002): the server with a usign
 * key and its ucert certificate builds with OpenWrt's real ImageBuilder flow, and the images
 * it serves are checked the way a router checks them before sysupgrade: fwtool extracts the
 * certificate chain, ucert verifies the rest of the image against the keys in /etc/opkg/keys.
 */

const hostDir = inject("realToolsDir");
const bin = (name: string): string => path.join(hostDir, "bin", name);
const runner = new ProcessRunner();
const sha256 = (data: Buffer): string => createHash("sha256").update(data).digest("hex");
const SIGNED_TYPES = new Set(["sysupgrade", "factory", "combined", "combined-efi", "sdcard"]);

interface Image {
  name: string;
  type: string;
  sha256: string;
  sha256_unsigned: string;
  size?: number;
}

describe("images signed by the server, checked as a router checks them", () => {
  let mirror: Mirror & { info: RealToolsMirrorInfo };
  let api: TestServer;
  let work: string;
  let trusted: string;
  let buildPub: string;
  const answers = new Map<string, Promise<JsonResponse>>();

  function run(argv: string[]): Promise<RunResult> {
    return runner.run({
      argv,
      cwd: work,
      env: { PATH: `${path.join(hostDir, "bin")}:/usr/bin:/bin`, LC_ALL: "C" },
      timeoutMs: 60_000,
      maxOutputBytes: 256 * 1024,
    });
  }

  async function ok(argv: string[]): Promise<RunResult> {
    const result = await run(argv);
    expect(result.code, `${argv.join(" ")}: ${result.stderr}`).toBe(0);
    return result;
  }

  let counter = 0;
  async function saved(bytes: Buffer): Promise<string> {
    const file = path.join(work, `download-${++counter}.bin`);
    await writeFile(file, bytes);
    return file;
  }

  async function download(done: JsonResponse, name: string): Promise<Buffer> {
    const res = await fetch(`${api.url}/store/${String(done.body.bin_dir)}/${name}`);
    expect(res.status, name).toBe(200);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(res.headers.get("content-length")).toBe(String(bytes.length));
    return bytes;
  }

  beforeAll(async () => {
    work = await mkdtemp(path.join(tmpdir(), "asu-image-signing-"));
    // The operator's keys: a root key the routers trust, and the build key it certified.
    await ok([bin("usign"), "-G", "-s", "root.sec", "-p", "root.pub", "-c", "asu test root"]);
    await ok([bin("usign"), "-G", "-s", "key-build", "-p", "key-build.pub", "-c", "asu test build"]);
    await ok([bin("ucert"), "-I", "-c", "key-build.ucert", "-p", "key-build.pub", "-s", "root.sec"]);
    buildPub = path.join(work, "key-build.pub");
    trusted = path.join(work, "etc-opkg-keys");
    await mkdir(trusted);
    const fingerprint = (await ok([bin("usign"), "-F", "-p", "root.pub"])).stdout.trim();
    await copyFile(path.join(work, "root.pub"), path.join(trusted, fingerprint));

    mirror = await startRealToolsMirror();
    api = await startTestServer(mirror, {
      overrides: {
        workers: 2,
        job_timeout: "10m",
        // signing_cert defaults to key-build.ucert beside the key, as in upstream ASU.
        signing_key: path.join(work, "key-build"),
        signing_tools_dir: path.join(hostDir, "bin"),
      },
    });
    expect(api.config.signing_cert).toBe(path.join(work, "key-build.ucert"));
    const builds = {
      ath79: {
        version: "24.10.4",
        target: "ath79/generic",
        profile: "tplink,archer-c7-v5",
        packages: ["hello"],
      },
      x86: { version: "23.05.4", target: "x86/64", profile: "generic", packages: [] },
    };
    for (const [name, body] of Object.entries(builds)) {
      const posted = await request(api.url, "POST", "/api/v1/build", body);
      if (posted.status !== 202) throw new Error(`${name}: POST answered ${posted.status}: ${posted.text}`);
      answers.set(name, waitForBuild(api.url, String(posted.body.request_hash), 30 * 60_000));
    }
  }, 45 * 60_000);

  afterAll(async () => {
    await api?.close();
    if (api) await flushPrefix(api.prefix);
    await mirror?.close();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("ath79: the sysupgrade image carries a signature that the router's fwtool and ucert accept", async () => {
    const done = await (answers.get("ath79") as Promise<JsonResponse>);
    expect(done.status, done.text).toBe(200);
    const images = done.body.images as Image[];
    const sysupgrade = images.find((i) => i.type === "sysupgrade");
    expect(sysupgrade).toBeDefined();
    const image = sysupgrade as Image;

    const served = await download(done, image.name);
    // LuCI, owut and auc check the download against images[].sha256.
    expect(sha256(served)).toBe(image.sha256);
    expect(image.size).toBe(served.length);
    expect(image.sha256_unsigned).not.toBe(image.sha256);

    // sysupgrade: fwtool -s extracts the certificate chain and strips it; ucert checks the rest.
    const file = await saved(served);
    await ok([bin("fwtool"), "-q", "-s", `${file}.ucert`, "-t", file]);
    const verify = await run([bin("ucert"), "-V", "-m", file, "-c", `${file}.ucert`, "-P", trusted]);
    expect(verify.code, verify.stderr).toBe(0);
    // sha256_unsigned is the image before its fwtool signature (json_add_image_info.py).
    expect(sha256(await readFile(file))).toBe(image.sha256_unsigned);
    // The image metadata that sysupgrade checks for compatibility is still there.
    await ok([bin("fwtool"), "-q", "-i", `${file}.json`, file]);
    const metadata = JSON.parse(await readFile(`${file}.json`, "utf8")) as { supported_devices: string[] };
    expect(metadata.supported_devices).toContain("tplink,archer-c7-v5");

    // A key the router does not trust (the ImageBuilder's own, say) is refused.
    const otherKeys = path.join(work, "other-keys");
    await mkdir(otherKeys, { recursive: true });
    const fingerprint = (await ok([bin("usign"), "-F", "-p", buildPub])).stdout.trim();
    await copyFile(buildPub, path.join(otherKeys, fingerprint));
    const untrusted = await run([bin("ucert"), "-V", "-m", file, "-c", `${file}.ucert`, "-P", otherKeys]);
    expect(untrusted.code).not.toBe(0);

    // The detached .sig is kept as an extra, over the bytes served.
    const sig = await download(done, `${image.name}.sig`);
    const detached = await saved(served);
    await writeFile(`${detached}.sig`, sig);
    await ok([bin("usign"), "-q", "-V", "-m", detached, "-p", buildPub]);
  });

  it("ath79: every signed image type verifies, embedded where it has metadata", async () => {
    const done = await (answers.get("ath79") as Promise<JsonResponse>);
    expect(done.status, done.text).toBe(200);
    for (const image of done.body.images as Image[]) {
      const served = await download(done, image.name);
      expect(sha256(served), image.name).toBe(image.sha256);
      if (!SIGNED_TYPES.has(image.type)) continue;
      const file = await saved(served);
      const hasMetadata = (await run([bin("fwtool"), "-q", "-i", "/dev/null", file])).code === 0;
      if (hasMetadata) {
        await ok([bin("fwtool"), "-q", "-s", `${file}.ucert`, "-t", file]);
        await ok([bin("ucert"), "-V", "-m", file, "-c", `${file}.ucert`, "-P", trusted]);
      }
      await writeFile(`${file}.sig`, await download(done, `${image.name}.sig`));
      if (!hasMetadata) await ok([bin("usign"), "-q", "-V", "-m", file, "-p", buildPub]);
    }
  });

  it("x86/64: the combined image (a signature but no metadata) gets ours instead of the ImageBuilder's", async () => {
    const done = await (answers.get("x86") as Promise<JsonResponse>);
    expect(done.status, done.text).toBe(200);
    const images = done.body.images as Image[];
    const combined = images.filter((i) => i.type === "combined" || i.type === "combined-efi");
    expect(combined.length).toBeGreaterThan(0);
    for (const image of combined) {
      const served = await download(done, image.name);
      expect(sha256(served)).toBe(image.sha256);
      const file = await saved(served);
      // x86 images carry no metadata; OpenWrt's append-metadata signs them all the same.
      expect((await run([bin("fwtool"), "-q", "-i", "/dev/null", file])).code).not.toBe(0);
      await writeFile(`${file}.sig`, await download(done, `${image.name}.sig`));
      await ok([bin("usign"), "-q", "-V", "-m", file, "-p", buildPub]);
      await ok([bin("fwtool"), "-q", "-s", `${file}.ucert`, "-t", file]);
      await ok([bin("ucert"), "-V", "-m", file, "-c", `${file}.ucert`, "-P", trusted]);
      expect(sha256(await readFile(file))).toBe(image.sha256_unsigned);
    }
  });
});
