import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandOutput,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { UnsafeFileError, type OpenedFile } from "../shared/safe-fs.js";
import {
  checkCopied,
  checkPut,
  HASH_RE,
  isStoreName,
  StoreIntegrityError,
  type Store,
  type StoreEntry,
  type StoreFile,
  type StoredFile,
  type StoreLocation,
} from "./store.js";

export interface S3StoreOptions {
  /** http(s) URL of an S3-compatible server; undefined means AWS itself. */
  endpoint?: string;
  region: string;
  bucket: string;
  /** Both or neither; neither means the SDK's usual credential chain (env, profile, role). */
  accessKey?: string;
  secretKey?: string;
  /** Public base URL of the bucket; downloads redirect to `<public_url>/store/<hash>/<file>`. */
  publicUrl?: string;
  /** Lifetime of presigned download URLs when there is no public URL. */
  presignSeconds?: number;
  /** Multipart part size; S3's minimum is 5 MiB. */
  partSize?: number;
}

const PREFIX = "store/";
const CHUNK = 1024 * 1024;

/** Content-Type by file name; images and signatures are opaque bytes. */
function contentType(name: string): string {
  if (name.endsWith(".json")) return "application/json";
  if (/\.(manifest|buildinfo|txt)$/.test(name)) return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === "NotFound" || e.name === "NoSuchKey" || e.$metadata?.httpStatusCode === 404;
}

/**
 * Finished build files as objects `store/<request_hash>/<file>` in one bucket (upstream ASU's
 * layout), so API servers on other machines than the worker can serve them: downloads are
 * redirects to the bucket, never proxied.
 */
export class S3Store implements Store {
  readonly kind = "s3";
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly publicUrl: string | undefined;
  private readonly presignSeconds: number;
  private readonly partSize: number;

  constructor(opts: S3StoreOptions) {
    this.bucket = opts.bucket;
    this.publicUrl = opts.publicUrl?.replace(/\/+$/, "");
    this.presignSeconds = opts.presignSeconds ?? 300;
    this.partSize = opts.partSize ?? 8 * 1024 * 1024;
    this.client = new S3Client({
      region: opts.region,
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      // MinIO, Ceph, Garage and s3rver answer on one host name: no bucket subdomains.
      forcePathStyle: true,
      // The SDK's default CRC32 trailers (aws-chunked bodies) are unknown to many
      // S3-compatible servers; the sha256 is checked by us instead (see put).
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000 },
      ...(opts.accessKey && opts.secretKey
        ? { credentials: { accessKeyId: opts.accessKey, secretAccessKey: opts.secretKey } }
        : {}),
    });
  }

  async init(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const reason = isNotFound(err) ? "does not exist" : `cannot be reached (${(err as Error).name})`;
      throw new Error(`s3_bucket: bucket "${this.bucket}" ${reason}`, { cause: err });
    }
  }

  private key(hash: string, name: string): string {
    return `${PREFIX}${hash}/${name}`;
  }

  /**
   * Uploads every file, then removes what an earlier build of the same hash left that is no
   * longer part of it. Each object is checked after upload: its stored length (HEAD) must be
   * the size at open and the sha256 of the bytes sent must be the promised one; on any
   * failure every object of this build is deleted, so no half build stays downloadable.
   */
  async put(hash: string, files: StoreFile[], signal?: AbortSignal): Promise<void> {
    checkPut(hash, files);
    const stale = new Set((await this.listKeys(`${PREFIX}${hash}/`)).map((o) => o.key));
    try {
      for (const file of files) {
        const key = this.key(hash, file.name);
        stale.delete(key);
        if ("data" in file) {
          const body = Buffer.from(file.data);
          await this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: key,
              Body: body,
              ContentLength: body.length,
              ContentType: contentType(file.name),
            }),
            { abortSignal: signal },
          );
          continue;
        }
        const sent = await this.upload(key, file.name, file.file, file.sha256, file.maxBytes, signal);
        checkCopied(file.name, { size: file.file.size, sha256: file.sha256 }, sent);
        const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
        if (head.ContentLength !== sent.size) {
          throw new StoreIntegrityError(
            `${file.name} was stored with ${head.ContentLength ?? "no"} bytes, ${sent.size} were sent`,
          );
        }
      }
    } catch (err) {
      await this.remove(hash).catch(() => undefined);
      throw err;
    }
    for (const key of stale)
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  /** Streams an opened file to `key` (multipart above partSize), hashing the bytes sent. */
  private async upload(
    key: string,
    name: string,
    file: OpenedFile,
    sha256: string,
    maxBytes: number,
    signal: AbortSignal | undefined,
  ): Promise<{ size: number; sha256: string }> {
    const hash = createHash("sha256");
    let total = 0;
    async function* chunks(): AsyncGenerator<Buffer> {
      for (;;) {
        if (signal?.aborted) throw new UnsafeFileError(name, "aborted", `reading ${name} was stopped`);
        const buf = Buffer.allocUnsafe(CHUNK);
        const { bytesRead } = await file.handle.read(buf, 0, buf.length, total);
        if (bytesRead === 0) return;
        total += bytesRead;
        if (total > maxBytes) {
          throw new UnsafeFileError(
            name,
            "too_large",
            `${name} is larger than the limit of ${maxBytes} bytes`,
          );
        }
        const chunk = buf.subarray(0, bytesRead);
        hash.update(chunk);
        yield chunk;
      }
    }
    const upload = new Upload({
      client: this.client,
      params: {
        Bucket: this.bucket,
        Key: key,
        Body: Readable.from(chunks()),
        ContentType: contentType(name),
        // What profiles.json promised, kept with the object for operators and audits.
        Metadata: { sha256 },
      },
      partSize: this.partSize,
      queueSize: 2,
      leavePartsOnError: false,
    });
    await upload.done();
    return { size: total, sha256: hash.digest("hex") };
  }

  /** One HEAD, then a redirect: to the public bucket URL, or a presigned one (made locally). */
  async locate(hash: string, name: string): Promise<StoreLocation | undefined> {
    if (!isStoreName(hash, name)) return undefined;
    const key = this.key(hash, name);
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    if (this.publicUrl) return { kind: "redirect", url: `${this.publicUrl}/${key}` };
    const url = await getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: key }), {
      expiresIn: this.presignSeconds,
    });
    return { kind: "redirect", url };
  }

  async open(hash: string, name: string): Promise<StoredFile | undefined> {
    if (!isStoreName(hash, name)) return undefined;
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.key(hash, name) }),
      );
      if (!(out.Body instanceof Readable)) throw new Error("S3 GetObject returned no Node stream");
      return { stream: out.Body, size: out.ContentLength ?? 0, mtime: out.LastModified ?? new Date(0) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  private async listKeys(prefix: string): Promise<{ key: string; size: number; mtimeMs: number }[]> {
    const keys: { key: string; size: number; mtimeMs: number }[] = [];
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          ...(token ? { ContinuationToken: token } : {}),
        }),
      );
      for (const obj of page.Contents ?? []) {
        if (obj.Key === undefined) continue;
        keys.push({ key: obj.Key, size: obj.Size ?? 0, mtimeMs: obj.LastModified?.getTime() ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  /** Lists the whole store prefix and sums per build; what we did not write is ignored. */
  async list(): Promise<StoreEntry[]> {
    const builds = new Map<string, StoreEntry>();
    for (const obj of await this.listKeys(PREFIX)) {
      const [hash, name, ...rest] = obj.key.slice(PREFIX.length).split("/");
      if (hash === undefined || name === undefined || rest.length > 0 || !isStoreName(hash, name)) continue;
      const entry = builds.get(hash) ?? { hash, bytes: 0, mtimeMs: 0 };
      entry.bytes += obj.size;
      entry.mtimeMs = Math.max(entry.mtimeMs, obj.mtimeMs);
      builds.set(hash, entry);
    }
    return [...builds.values()];
  }

  async remove(hash: string): Promise<void> {
    if (!HASH_RE.test(hash)) return;
    // One DeleteObject per file: a build has a handful, and DeleteObjects needs a checksum
    // header that not every S3-compatible server accepts.
    for (const obj of await this.listKeys(`${PREFIX}${hash}/`)) {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: obj.key }));
    }
  }

  async usage(): Promise<number> {
    return (await this.list()).reduce((sum, e) => sum + e.bytes, 0);
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
