import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { AsuHttp } from "./asu-http.js";
import { ClientError, ExitCode, ServerUnavailableError } from "./client-errors.js";

/** One entry of a build answer's `images[]`. */
export interface AnsweredImage {
  name: string;
  type: string;
  filesystem?: string;
  sha256: string;
}

/** A file name the server may give: no folders, no dot files, nothing a shell would mind. */
const IMAGE_NAME = /^[\w+,~-][\w.+,~-]*$/;
const SHA256 = /^[0-9a-f]{64}$/;

/** The images of a build answer that can be downloaded and checked (a name and a sha256). */
export function answeredImages(body: Record<string, unknown>): AnsweredImage[] {
  const images = Array.isArray(body.images) ? (body.images as unknown[]) : [];
  return images.filter((i): i is AnsweredImage => {
    if (typeof i !== "object" || i === null) return false;
    const { name, type, sha256 } = i as Record<string, unknown>;
    return (
      typeof name === "string" &&
      IMAGE_NAME.test(name) &&
      !name.includes("..") &&
      typeof type === "string" &&
      typeof sha256 === "string" &&
      SHA256.test(sha256)
    );
  });
}

/**
 * The images to fetch: those of the wanted types (`sysupgrade`, `factory` by default).
 * Targets without such images (x86's `combined`, boards with `sdcard`) get every image that
 * is not a kernel or initramfs, which profiles.json lists but the ImageBuilder does not build.
 */
export function chooseImages(images: AnsweredImage[], types: string[] | "all"): AnsweredImage[] {
  if (types === "all") return images;
  const wanted = images.filter((i) => types.includes(i.type));
  if (wanted.length > 0) return wanted;
  return images.filter((i) => !/kernel|initramfs/.test(i.type));
}

export interface DownloadHooks {
  signal: AbortSignal;
  onStart?: (image: AnsweredImage, totalBytes: number | undefined) => void;
  onData?: (name: string, receivedBytes: number) => void;
}

export interface DownloadedImage {
  image: AnsweredImage;
  file: string;
  bytes: number;
}

/**
 * Streams `/store/{bin_dir}/{name}` (redirects to S3 are followed) into `<outDir>/<name>.part`,
 * hashing as it goes, and renames it into place only when the sha256 is the one the build
 * answer gave. A mismatch leaves nothing behind.
 */
export async function downloadImage(
  http: AsuHttp,
  binDir: string,
  image: AnsweredImage,
  outDir: string,
  hooks: DownloadHooks,
): Promise<DownloadedImage> {
  const urlPath = `/store/${encodeURIComponent(binDir)}/${encodeURIComponent(image.name)}`;
  const { res, idle } = await http.stream(urlPath, { accept: "application/octet-stream" }, hooks.signal);
  const file = path.join(outDir, image.name);
  const part = `${file}.part`;
  try {
    if (res.status !== 200 || !res.body) {
      await res.body?.cancel().catch(() => undefined);
      if (res.status >= 500 || res.status === 429) {
        throw new ServerUnavailableError(
          `Downloading ${image.name} failed: HTTP ${res.status}. Try again later.`,
        );
      }
      throw new ClientError(
        `Downloading ${image.name} failed: HTTP ${res.status}. The build may have expired; run the same command again to rebuild it.`,
        ExitCode.downloadFailed,
      );
    }
    const length = Number.parseInt(res.headers.get("content-length") ?? "", 10);
    const total = Number.isFinite(length) && length >= 0 ? length : undefined;
    hooks.onStart?.(image, total);
    const hash = createHash("sha256");
    let received = 0;
    const count = new Transform({
      transform(chunk: Buffer, _enc, done) {
        idle.touch();
        hash.update(chunk);
        received += chunk.length;
        hooks.onData?.(image.name, received);
        done(null, chunk);
      },
    });
    try {
      await pipeline(
        Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>),
        count,
        createWriteStream(part, { mode: 0o644 }),
        { signal: hooks.signal },
      );
    } catch (err) {
      await rm(part, { force: true });
      if (hooks.signal.aborted) throw err;
      throw new ServerUnavailableError(
        `Downloading ${image.name} broke off after ${received} bytes (${err instanceof Error ? err.message : String(err)}). Try again.`,
      );
    }
    const sha256 = hash.digest("hex");
    if (sha256 !== image.sha256) {
      await rm(part, { force: true });
      throw new ClientError(
        `${image.name} does not match the sha256 the server announced (expected ${image.sha256}, got ${sha256}); it was not saved. Do not flash it; try again, and tell the server operator if this repeats.`,
        ExitCode.downloadFailed,
      );
    }
    await rename(part, file);
    return { image, file, bytes: received };
  } finally {
    idle.stop();
  }
}
