import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ProcessRunner, type RunResult } from "../imagebuilder/process-runner.js";
import { verifyMessage } from "../shared/usign.js";
import { ImageSigningError, UsignImageSigner } from "./image-signer.js";

/**
 * The signer with OpenWrt's real usign, ucert and fwtool (compiled by the vitest global setup):
 * keys and a certificate chain made here, images with real fwtool metadata, and every result
 * checked the way a router checks it.
 */

const hostDir = inject("realToolsDir");
const bin = (name: string): string => path.join(hostDir, "bin", name);
const tools = { usign: bin("usign"), ucert: bin("ucert"), fwtool: bin("fwtool") };
const runner = new ProcessRunner();
let work: string;

const sha256 = (data: Buffer): string => createHash("sha256").update(data).digest("hex");

function run(argv: string[]): Promise<RunResult> {
  return runner.run({
    argv,
    cwd: work,
    env: { PATH: `${path.join(hostDir, "bin")}:/usr/bin:/bin`, LC_ALL: "C" },
    timeoutMs: 30_000,
    maxOutputBytes: 256 * 1024,
  });
}

async function ok(argv: string[]): Promise<RunResult> {
  const result = await run(argv);
  expect(result.code, `${argv.join(" ")}: ${result.stderr}`).toBe(0);
  return result;
}

/** A root key, a build key and the build key's certificate issued by the root (ucert -I). */
async function makeChain(name: string): Promise<{ key: string; pub: string; cert: string; trusted: string }> {
  const f = (s: string): string => path.join(work, `${name}-${s}`);
  await ok([bin("usign"), "-G", "-s", f("root.sec"), "-p", f("root.pub"), "-c", `${name} root`]);
  await ok([bin("usign"), "-G", "-s", f("key-build"), "-p", f("key-build.pub"), "-c", `${name} build`]);
  await ok([bin("ucert"), "-I", "-c", f("key-build.ucert"), "-p", f("key-build.pub"), "-s", f("root.sec")]);
  // A router trusts the keys in /etc/opkg/keys, each named by its fingerprint.
  const trusted = f("keys");
  await mkdir(trusted);
  const fingerprint = (await ok([bin("usign"), "-F", "-p", f("root.pub")])).stdout.trim();
  await copyFile(f("root.pub"), path.join(trusted, fingerprint));
  return { key: f("key-build"), pub: f("key-build.pub"), cert: f("key-build.ucert"), trusted };
}

let counter = 0;
/** An image with real fwtool metadata, as ImageBuilder's append-metadata makes it. */
async function imageWithMetadata(): Promise<Buffer> {
  const file = path.join(work, `meta-${++counter}.bin`);
  await writeFile(file, Buffer.alloc(64 * 1024, counter));
  await writeFile(
    `${file}.json`,
    JSON.stringify({ supported_devices: ["tplink,archer-c7-v5"], version: { dist: "OpenWrt" } }),
  );
  await ok([bin("fwtool"), "-I", `${file}.json`, file]);
  return readFile(file);
}

/** What sysupgrade does: extract the certificate, check the rest of the image against it. */
async function routerCheck(
  image: Buffer,
  trusted: string,
): Promise<{ code: number | null; stripped: Buffer }> {
  const file = path.join(work, `served-${++counter}.bin`);
  await writeFile(file, image);
  const sigOut = `${file}.ucert`;
  const extract = await run([bin("fwtool"), "-s", sigOut, "-t", file]);
  if (extract.code !== 0) return { code: extract.code, stripped: await readFile(file) };
  const verify = await run([bin("ucert"), "-V", "-m", file, "-c", sigOut, "-P", trusted]);
  return { code: verify.code, stripped: await readFile(file) };
}

let chain: Awaited<ReturnType<typeof makeChain>>;
let privateDir: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "asu-image-signer-"));
  chain = await makeChain("asu");
  privateDir = path.join(work, "private");
  await mkdir(privateDir);
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function signer(cert = chain.cert): UsignImageSigner {
  return new UsignImageSigner(chain.key, { certFile: cert, tools, processRunner: runner });
}

describe("UsignImageSigner with a certificate", () => {
  it("embeds a usign+ucert signature that fwtool extracts and ucert verifies against the root key", async () => {
    const original = await imageWithMetadata();
    const signed = await signer().sign(original, { workDir: privateDir });

    expect(signed.embedded).toBe(true);
    expect(signed.image.length).toBeGreaterThan(original.length);
    expect(signed.sha256).toBe(sha256(signed.image));
    expect(signed.sha256Unsigned).toBe(sha256(original));

    const { code, stripped } = await routerCheck(signed.image, chain.trusted);
    expect(code).toBe(0);
    expect(stripped.equals(original)).toBe(true);
    // The metadata is still there for sysupgrade's compatibility check.
    const file = path.join(work, "metadata-check.bin");
    await writeFile(file, signed.image);
    await ok([bin("fwtool"), "-i", `${file}.json`, file]);
    expect(JSON.parse(await readFile(`${file}.json`, "utf8"))).toMatchObject({
      supported_devices: ["tplink,archer-c7-v5"],
    });

    // The detached .sig is over the bytes served, and usign -V accepts it with the key.
    expect(verifyMessage(signed.image, signed.detachedSignature, await readFile(chain.pub, "utf8"))).toEqual({
      ok: true,
    });
    await writeFile(path.join(work, "served.bin"), signed.image);
    await writeFile(path.join(work, "served.bin.sig"), signed.detachedSignature);
    await ok([bin("usign"), "-V", "-m", path.join(work, "served.bin"), "-p", chain.pub]);

    // Nothing is left in the private folder.
    expect(await readdir(privateDir)).toEqual([]);
  });

  it("a tampered signed image fails the router's check", async () => {
    const signed = await signer().sign(await imageWithMetadata(), { workDir: privateDir });
    const tampered = Buffer.from(signed.image);
    tampered[100] = (tampered[100] as number) ^ 0xff;
    expect((await routerCheck(tampered, chain.trusted)).code).not.toBe(0);
  });

  it("replaces the signature the ImageBuilder appended with its own throw-away key", async () => {
    const ib = await makeChain("ib");
    const unsigned = await imageWithMetadata();
    // What the ImageBuilder's append-metadata does with its local key-build.
    const file = path.join(work, "ib-signed.bin");
    await writeFile(file, unsigned);
    await copyFile(ib.cert, `${file}.ucert`);
    await ok([bin("usign"), "-S", "-m", file, "-s", ib.key, "-x", `${file}.sig`]);
    await run([bin("ucert"), "-A", "-c", `${file}.ucert`, "-x", `${file}.sig`]);
    await ok([bin("fwtool"), "-S", `${file}.ucert`, file]);
    const ibSigned = await readFile(file);
    expect((await routerCheck(ibSigned, ib.trusted)).code).toBe(0);

    const signed = await signer().sign(ibSigned, { workDir: privateDir });
    expect(signed.embedded).toBe(true);
    // sha256_unsigned keeps OpenWrt's meaning: the image before any fwtool signature.
    expect(signed.sha256Unsigned).toBe(sha256(unsigned));
    expect(signed.sha256).toBe(sha256(signed.image));
    expect((await routerCheck(signed.image, chain.trusted)).code).toBe(0);
    expect((await routerCheck(signed.image, ib.trusted)).code).not.toBe(0);
  });

  it("re-signs an image that has the ImageBuilder's signature but no metadata (x86 combined)", async () => {
    const ib = await makeChain("x86");
    const unsigned = Buffer.alloc(40 * 1024, 0x77);
    const file = path.join(work, "combined.img.gz");
    await writeFile(file, unsigned);
    await copyFile(ib.cert, `${file}.ucert`);
    await ok([bin("usign"), "-S", "-m", file, "-s", ib.key, "-x", `${file}.sig`]);
    await run([bin("ucert"), "-A", "-c", `${file}.ucert`, "-x", `${file}.sig`]);
    await ok([bin("fwtool"), "-S", `${file}.ucert`, file]);
    expect((await run([bin("fwtool"), "-q", "-i", "/dev/null", file])).code).not.toBe(0);

    const signed = await signer().sign(await readFile(file), { workDir: privateDir });
    expect(signed.embedded).toBe(true);
    expect(signed.sha256Unsigned).toBe(sha256(unsigned));
    const { code, stripped } = await routerCheck(signed.image, chain.trusted);
    expect(code).toBe(0);
    expect(stripped.equals(unsigned)).toBe(true);
  });

  it("gives an image without any fwtool trailer only the detached signature", async () => {
    // Neither metadata nor a signature: a format that was never meant to carry a trailer.
    const plain = Buffer.alloc(32 * 1024, 0x42);
    const signed = await signer().sign(plain, { workDir: privateDir });
    expect(signed.embedded).toBe(false);
    expect(signed.image.equals(plain)).toBe(true);
    expect(signed.sha256).toBe(sha256(plain));
    expect(signed.sha256Unsigned).toBe(sha256(plain));
    expect(verifyMessage(plain, signed.detachedSignature, await readFile(chain.pub, "utf8"))).toEqual({
      ok: true,
    });
    expect(await readdir(privateDir)).toEqual([]);
  });

  it("fails with the step and the tool's words, without host paths, when the certificate is broken", async () => {
    const broken = path.join(work, "broken.ucert");
    await writeFile(broken, "not a certificate\n");
    const err = await signer(broken)
      .sign(await imageWithMetadata(), { workDir: privateDir })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageSigningError);
    const message = (err as Error).message;
    expect(message).toMatch(
      /^ucert -D \(reading the certificate signing_cert\) exited with 1: .*cannot parse cert/,
    );
    expect(message).not.toContain(work);
    expect(await readdir(privateDir)).toEqual([]);
  });

  it("refuses a certificate issued for another key", async () => {
    const other = await makeChain("other");
    const err = await signer(other.cert)
      .sign(await imageWithMetadata(), { workDir: privateDir })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageSigningError);
    expect((err as Error).message).toBe("the certificate signing_cert does not certify the key signing_key");
  });

  it("fails when a tool is missing, and stops when the build is aborted", async () => {
    const missing = new UsignImageSigner(chain.key, {
      certFile: chain.cert,
      tools: { ...tools, fwtool: path.join(work, "no-such-fwtool") },
      processRunner: runner,
    });
    await expect(missing.sign(await imageWithMetadata(), { workDir: privateDir })).rejects.toThrow(
      /^fwtool -i: the tool could not be started$/,
    );
    const controller = new AbortController();
    controller.abort();
    await expect(
      signer().sign(await imageWithMetadata(), { workDir: privateDir, signal: controller.signal }),
    ).rejects.toThrow();
    expect(await readdir(privateDir)).toEqual([]);
  });
});

describe("UsignImageSigner without a certificate", () => {
  it("keeps the bytes as built and signs them detached, with no tool at all", async () => {
    const image = await imageWithMetadata();
    const signed = await new UsignImageSigner(chain.key).sign(image, { workDir: privateDir });
    expect(signed).toMatchObject({ embedded: false, sha256: sha256(image), sha256Unsigned: sha256(image) });
    expect(signed.image.equals(image)).toBe(true);
    expect(verifyMessage(image, signed.detachedSignature, await readFile(chain.pub, "utf8"))).toEqual({
      ok: true,
    });
  });
});
