import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { SigningTools } from "../config/config.js";
import type { RunOptions, RunResult } from "../imagebuilder/process-runner.js";
import { readRegularFile, writeNewFile } from "../shared/safe-fs.js";
import { parseSecretKey, signMessage } from "../shared/usign.js";
import type { ImageSigner, SignedImage, SignImageContext } from "./build-pipeline.js";

/** What the signer needs from src/imagebuilder/process-runner.ts (a fake in unit tests). */
export interface SigningProcessRunner {
  run(opts: RunOptions): Promise<RunResult>;
}

export interface EmbeddedSigning {
  /** The ucert certificate of the signing key (upstream's key-build.ucert). */
  certFile: string;
  tools: SigningTools;
  processRunner: SigningProcessRunner;
  /** Per tool run; the pipeline's AbortSignal ends a run earlier. Default 5 min. */
  timeoutMs?: number;
}

/** A signing step failed; the message names the step and never a host path. */
export class ImageSigningError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ImageSigningError";
  }
}

const TOOL_OUTPUT_BYTES = 64 * 1024;
const DEFAULT_TOOL_TIMEOUT_MS = 5 * 60_000;
// Names inside the signer's own folder: fixed, so nothing a build chose reaches an argv.
const IMAGE = "image";
const CERT = "image.ucert";
const SIG = "image.sig";

const sha256 = (bytes: Buffer): string => createHash("sha256").update(bytes).digest("hex");

/**
 * Signs images outside the build sandbox with the server's usign key, the way upstream ASU
 * does (docs/decisions/002):
 * - with a certificate, an image that carries a fwtool trailer gets its signature embedded:
 *   `fwtool -t -s /dev/null` (drop the ImageBuilder's own signature), `usign -S`, `ucert -A`,
 *   `fwtool -S`. The router's sysupgrade checks that trailer against /etc/opkg/keys;
 * - every signed image also gets a detached `<image>.sig` over the bytes served.
 *
 * The pipeline hands over bytes it read through a checked descriptor; the tools only ever see
 * a copy in a fresh folder under the workspace's privateDir, which no build can reach, so
 * nothing here opens a path the build chose (issue #9).
 */
export class UsignImageSigner implements ImageSigner {
  constructor(
    private readonly secretKeyFile: string,
    private readonly embedded?: EmbeddedSigning,
  ) {}

  async sign(image: Buffer, ctx: SignImageContext): Promise<SignedImage> {
    const keyText = await readFile(this.secretKeyFile, "utf8");
    const built = sha256(image);
    let served = image;
    let unsigned = built;
    let embedded = false;
    if (this.embedded) {
      const result = await this.embed(this.embedded, image, keyText, ctx);
      if (result) {
        served = result.image;
        unsigned = result.unsignedSha256;
        embedded = true;
      }
    }
    return {
      image: served,
      embedded,
      sha256: embedded ? sha256(served) : built,
      sha256Unsigned: unsigned,
      detachedSignature: signMessage(served, keyText),
    };
  }

  /** Returns undefined when the image has no fwtool trailer (neither metadata nor a signature). */
  private async embed(
    setup: EmbeddedSigning,
    image: Buffer,
    keyText: string,
    ctx: SignImageContext,
  ): Promise<{ image: Buffer; unsignedSha256: string } | undefined> {
    const dir = await mkdtemp(path.join(ctx.workDir, "sign-"));
    try {
      const file = (name: string): string => path.join(dir, name);
      // Exclusive create: the folder is new and ours, so nothing already sits there.
      await writeNewFile(dir, IMAGE, image, 0o600);
      const run = async (step: string, argv: string[]): Promise<RunResult> => {
        ctx.signal?.throwIfAborted();
        let result: RunResult;
        try {
          result = await setup.processRunner.run({
            argv,
            cwd: dir,
            // ucert runs `usign` from PATH.
            env: { PATH: [...new Set(Object.values(setup.tools).map((t) => path.dirname(t)))].join(":") },
            timeoutMs: setup.timeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS,
            maxOutputBytes: TOOL_OUTPUT_BYTES,
            ...(ctx.signal ? { signal: ctx.signal } : {}),
          });
        } catch {
          ctx.signal?.throwIfAborted();
          throw new ImageSigningError(`${step}: the tool could not be started`);
        }
        ctx.signal?.throwIfAborted();
        if (result.timedOut || result.signal !== null || result.code === null) {
          throw new ImageSigningError(
            `${step} did not finish (${result.timedOut ? "timed out" : `killed by ${result.signal ?? "a signal"}`})`,
          );
        }
        return result;
      };
      const fail = (step: string, result: RunResult): ImageSigningError =>
        new ImageSigningError(`${step} exited with ${result.code}${this.describeOutput(result, setup, dir)}`);

      // Only an image the ImageBuilder gave a fwtool trailer takes one: metadata (most
      // sysupgrade images) or at least the ImageBuilder's own signature (x86 combined images
      // are signed without metadata, and a router rejects that throw-away key). Appending a
      // trailer to any other format could break it. Exit 1 is fwtool's "Data not found".
      const meta = await run("fwtool -i", [setup.tools.fwtool, "-q", "-i", "/dev/null", file(IMAGE)]);
      if (meta.code !== 0) {
        const sig = await run("fwtool -s", [setup.tools.fwtool, "-q", "-s", "/dev/null", file(IMAGE)]);
        if (sig.code !== 0) return undefined;
      }

      // The ImageBuilder signs with its own throw-away key-build; replace that signature. Exit 1
      // means there was none, and the file is then left as it was.
      const strip = await run("fwtool -t -s", [
        setup.tools.fwtool,
        "-q",
        "-t",
        "-s",
        "/dev/null",
        file(IMAGE),
      ]);
      if (strip.code !== 0 && strip.code !== 1)
        throw fail("fwtool -t -s (removing the old signature)", strip);
      const unsignedBytes = await readBack(dir, IMAGE, image.length);

      const cert = await readFile(setup.certFile);
      await writeNewFile(dir, CERT, cert, 0o600);
      const usign = await run("usign -S", [
        setup.tools.usign,
        "-S",
        "-m",
        file(IMAGE),
        "-s",
        this.secretKeyFile,
        "-x",
        file(SIG),
      ]);
      if (usign.code !== 0) throw fail("usign -S", usign);

      // ucert -A exits 1 even when it appended (its write_file() returns true); OpenWrt's
      // image-commands.mk ignores the status, so we check the result instead: the certificate
      // grew, still parses, and certifies our key (a router rejects any other chain).
      const append = await run("ucert -A", [setup.tools.ucert, "-A", "-c", file(CERT), "-x", file(SIG)]);
      if ((await stat(file(CERT))).size <= cert.length)
        throw fail("ucert -A (appending the signature)", append);
      const dump = await run("ucert -D", [setup.tools.ucert, "-D", "-c", file(CERT)]);
      if (dump.code !== 0) throw fail("ucert -D (reading the certificate signing_cert)", dump);
      if (!dump.stdout.includes(publicLine(keyText))) {
        throw new ImageSigningError("the certificate signing_cert does not certify the key signing_key");
      }

      const embed = await run("fwtool -S", [setup.tools.fwtool, "-S", file(CERT), file(IMAGE)]);
      if (embed.code !== 0) throw fail("fwtool -S", embed);

      const signed = await readBack(dir, IMAGE, unsignedBytes.length + 1024 * 1024);
      // fwtool appends a trailer and changes nothing before it.
      if (
        signed.length <= unsignedBytes.length ||
        !signed.subarray(0, unsignedBytes.length).equals(unsignedBytes)
      ) {
        throw new ImageSigningError("fwtool -S did not append a signature trailer to the image");
      }
      return { image: signed, unsignedSha256: sha256(unsignedBytes) };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** The tools' own words, without the host paths of the key, certificate and folder. */
  private describeOutput(result: RunResult, setup: EmbeddedSigning, dir: string): string {
    let text = `${result.stderr}\n${result.stdout}`.trim();
    for (const [from, to] of [
      [dir, "."],
      [this.secretKeyFile, "<signing_key>"],
      [setup.certFile, "<signing_cert>"],
    ] as const) {
      text = text.split(from).join(to);
    }
    text = text.replace(/\s+/g, " ").slice(0, 300);
    return text === "" ? "" : `: ${text}`;
  }
}

/** The base64 line of the key's .pub file, as `ucert -D` prints it in a certificate's payload. */
function publicLine(secretKeyText: string): string {
  const key = parseSecretKey(secretKeyText);
  return Buffer.concat([Buffer.from("Ed"), key.keyId, key.publicKey]).toString("base64");
}

async function readBack(dir: string, name: string, maxBytes: number): Promise<Buffer> {
  try {
    return await readRegularFile(dir, name, maxBytes);
  } catch (err) {
    throw new ImageSigningError(`reading the signed image back failed: ${(err as Error).message}`);
  }
}
