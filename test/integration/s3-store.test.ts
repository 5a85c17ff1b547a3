import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import Fastify from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerStoreRoutes } from "../../src/http/store-routes.js";
import { openRegularFile } from "../../src/shared/safe-fs.js";
import { S3Store } from "../../src/store/s3-store.js";
import { collectStoreGarbage } from "../../src/store/store-gc.js";
import { StoreIntegrityError, type StoreFile } from "../../src/store/store.js";
import { startS3, type TestS3 } from "../support/s3-server.js";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const hash = (c: string) => c.repeat(64);

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

let s3: TestS3;
let store: S3Store;
let work: string;

function newStore(extra: { publicUrl?: string } = {}): S3Store {
  return new S3Store({
    endpoint: s3.endpoint,
    region: "us-east-1",
    bucket: s3.bucket,
    accessKey: "S3RVER",
    secretKey: "S3RVER",
    partSize: 5 * 1024 * 1024,
    ...extra,
  });
}

/** An image as the worker hands it over: an opened descriptor plus the promised sha256. */
async function imageFile(name: string, bytes: Buffer, promised = sha256(bytes)): Promise<StoreFile> {
  await writeFile(path.join(work, name), bytes);
  const file = await openRegularFile(work, name, 64 * 1024 * 1024);
  return { name, file, sha256: promised, maxBytes: 64 * 1024 * 1024 };
}

async function put(h: string, files: StoreFile[]): Promise<void> {
  try {
    await store.put(h, files);
  } finally {
    for (const f of files) if ("file" in f) await f.file.handle.close();
  }
}

beforeAll(async () => {
  s3 = await startS3();
  work = await mkdtemp(path.join(tmpdir(), "asu-s3-files-"));
  store = newStore();
  await store.init();
});

afterAll(async () => {
  await store.close();
  await s3.close();
  await rm(work, { recursive: true, force: true });
});

describe("S3Store", () => {
  it("uploads a 16 MiB image in parts with its length and type, and returns the same bytes", async () => {
    const image = randomBytes(16 * 1024 * 1024 + 123);
    await put(hash("a"), [
      await imageFile("openwrt-sysupgrade.bin", image),
      { name: "openwrt.manifest", data: "base-files - 1\n" },
      { name: "profiles.json", data: "{}" },
    ]);
    const opened = await store.open(hash("a"), "openwrt-sysupgrade.bin");
    expect(opened?.size).toBe(image.length);
    expect(sha256(await readAll(opened!.stream))).toBe(sha256(image));

    const client = new S3Client({
      endpoint: s3.endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
    });
    const head = (key: string) => client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }));
    const img = await head(`store/${hash("a")}/openwrt-sysupgrade.bin`);
    expect(img.ContentType).toBe("application/octet-stream");
    expect(img.ContentLength).toBe(image.length);
    expect(img.Metadata?.sha256).toBe(sha256(image));
    expect((await head(`store/${hash("a")}/profiles.json`)).ContentType).toBe("application/json");
    client.destroy();

    const entry = (await store.list()).find((e) => e.hash === hash("a"));
    expect(entry?.bytes).toBe(image.length + "base-files - 1\n".length + 2);
    expect(await store.usage()).toBeGreaterThanOrEqual(entry!.bytes);
    await store.remove(hash("a"));
    expect((await store.list()).find((e) => e.hash === hash("a"))).toBeUndefined();
  });

  it("refuses an image whose bytes do not hash to the promised sha256 and leaves nothing behind", async () => {
    const image = randomBytes(4096);
    const err = await put(hash("b"), [
      { name: "openwrt.manifest", data: "x" },
      await imageFile("bad.bin", image, sha256(Buffer.from("something else"))),
    ]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreIntegrityError);
    expect((await store.list()).find((e) => e.hash === hash("b"))).toBeUndefined();
    expect(await store.open(hash("b"), "openwrt.manifest")).toBeUndefined();
  });

  it("replaces an earlier build of the same hash, dropping files it no longer has", async () => {
    await put(hash("c"), [
      { name: "old.bin", data: "old" },
      { name: "keep.bin", data: "v1" },
    ]);
    await put(hash("c"), [{ name: "keep.bin", data: "v2" }]);
    expect(await store.open(hash("c"), "old.bin")).toBeUndefined();
    expect((await readAll((await store.open(hash("c"), "keep.bin"))!.stream)).toString()).toBe("v2");
    await store.remove(hash("c"));
  });

  it("locates a file with one HEAD, refuses traversal without touching S3", async () => {
    await put(hash("d"), [{ name: "image.bin", data: "hello" }]);
    s3.requests.length = 0;
    expect(await store.locate(hash("d"), "../../etc/passwd")).toBeUndefined();
    expect(await store.locate("..", "image.bin")).toBeUndefined();
    expect(await store.locate(hash("d"), "a/b")).toBeUndefined();
    expect(s3.requests).toEqual([]);
    expect(await store.locate(hash("d"), "missing.bin")).toBeUndefined();
    expect(s3.requests).toEqual([`HEAD /${s3.bucket}/store/${hash("d")}/missing.bin`]);

    s3.requests.length = 0;
    const found = await store.locate(hash("d"), "image.bin");
    expect(s3.requests).toHaveLength(1);
    expect(found?.kind).toBe("redirect");
    const url = found?.kind === "redirect" ? found.url : "";
    expect(url).toContain("X-Amz-Expires=300");
    const answer = await fetch(url);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("content-length")).toBe("5");
    expect(await answer.text()).toBe("hello");

    const publicStore = newStore({ publicUrl: "https://downloads.example.org/asu/" });
    expect(await publicStore.locate(hash("d"), "image.bin")).toEqual({
      kind: "redirect",
      url: `https://downloads.example.org/asu/store/${hash("d")}/image.bin`,
    });
    await publicStore.close();
    await store.remove(hash("d"));
  });
});

describe("/store routes on the S3 store", () => {
  it("answer GET and HEAD with a 302 to bytes that have the image's sha256 and length, else 404", async () => {
    const image = randomBytes(300_000);
    await put(hash("e"), [await imageFile("sysupgrade.bin", image)]);
    const app = Fastify();
    registerStoreRoutes(app, store);
    await app.ready();
    try {
      for (const method of ["GET", "HEAD"] as const) {
        const res = await app.inject({ method, url: `/store/${hash("e")}/sysupgrade.bin?1696506154265` });
        expect(res.statusCode).toBe(302);
        expect(res.headers["cache-control"]).toBe("no-store");
        const location = String(res.headers.location);
        expect(location.startsWith(`${s3.endpoint}/${s3.bucket}/store/${hash("e")}/sysupgrade.bin?`)).toBe(
          true,
        );
        const followed = await fetch(location, { method });
        expect(followed.status).toBe(200);
        expect(followed.headers.get("content-length")).toBe(String(image.length));
        if (method === "GET") expect(sha256(Buffer.from(await followed.arrayBuffer()))).toBe(sha256(image));
      }
      s3.requests.length = 0;
      const missing = await app.inject({ url: `/store/${hash("e")}/nothing.bin` });
      expect(missing.statusCode).toBe(404);
      expect(missing.json()).toMatchObject({ status: 404 });
      const traversal = await app.inject({ url: `/store/${hash("e")}/..%2F..%2Fetc%2Fpasswd` });
      expect(traversal.statusCode).toBe(404);
      expect(s3.requests).toHaveLength(1);
    } finally {
      await app.close();
      await store.remove(hash("e"));
    }
  });
});

describe("garbage collection on the S3 store", () => {
  it("deletes expired builds' objects and, over the byte budget, the oldest live ones", async () => {
    for (const c of ["1", "2", "3", "4"])
      await put(hash(c), [{ name: "image.bin", data: Buffer.alloc(100) }]);
    const forgotten: string[] = [];
    // Objects cannot be back-dated on S3: the collector runs "an hour later" instead.
    const report = await collectStoreGarbage({
      store,
      liveHashes: async () => new Set([hash("2"), hash("3"), hash("4")]),
      forget: async (h) => void forgotten.push(h),
      maxBytes: 150,
      now: () => Date.now() + 3600_000,
    });
    expect(report.removedExpired).toBe(1);
    expect(report.removedForSpace).toBe(2);
    expect(report.keptBytes).toBe(100);
    expect(forgotten).toHaveLength(2);
    const left = (await store.list()).map((e) => e.hash);
    expect(left).toHaveLength(1);
    expect([hash("2"), hash("3"), hash("4")]).toContain(left[0]);
    expect(await store.usage()).toBe(100);
    await store.remove(left[0]!);
  });
});
