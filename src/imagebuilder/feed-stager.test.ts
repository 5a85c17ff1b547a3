import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { BuildError } from "../shared/errors.js";
import { FeedStager, readFeedList } from "./feed-stager.js";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

describe("FeedStager", () => {
  let server: Server;
  let base: string;
  let tmp: string;
  const files = new Map<string, Buffer>();
  const requests: string[] = [];

  const hello = Buffer.from("hello package bytes");
  const lib = Buffer.from("library package bytes");
  function packagesIndex(helloSha = sha(hello)): string {
    return [
      `Package: hello\nVersion: 1.0\nDepends: libhello\nFilename: hello_1.0_all.ipk\nSize: ${hello.length}\nSHA256sum: ${helloSha}\n`,
      `Package: libhello\nVersion: 2.0\nFilename: libhello_2.0_all.ipk\nSize: ${lib.length}\nSHA256sum: ${sha(lib)}\n`,
      `Package: unrelated\nVersion: 1\nFilename: unrelated_1_all.ipk\nSize: 1\nSHA256sum: ${"0".repeat(64)}\n`,
    ].join("\n");
  }
  function publish(feed: string, index: string): void {
    files.set(`${feed}/Packages.gz`, gzipSync(index));
    files.set(`${feed}/Packages.sig`, Buffer.from("untrusted comment: sig\nRWQ=\n"));
  }

  beforeAll(async () => {
    server = createServer((req, res) => {
      const p = (req.url ?? "/").slice(1);
      requests.push(p);
      const body = files.get(p);
      if (body === undefined) return res.writeHead(404).end();
      const etag = `"${sha(body).slice(0, 16)}"`;
      if (req.headers["if-none-match"] === etag) return res.writeHead(304, { etag }).end();
      res.writeHead(200, { "content-length": body.length, etag }).end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    tmp = await mkdtemp(path.join(os.tmpdir(), "asu-feeds-"));
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await rm(tmp, { recursive: true, force: true });
  });
  beforeEach(() => {
    files.clear();
    requests.length = 0;
    files.set("base/hello_1.0_all.ipk", hello);
    files.set("base/libhello_2.0_all.ipk", lib);
  });

  async function workspace(conf: string): Promise<{ dir: string; feedsDir: string }> {
    const root = await mkdtemp(path.join(tmp, "ws-"));
    const ws = { dir: path.join(root, "ib"), feedsDir: path.join(root, "feeds") };
    await mkdir(ws.dir);
    await mkdir(ws.feedsDir);
    await writeFile(path.join(ws.dir, "repositories.conf"), conf);
    return ws;
  }
  const noApk = { dumpApkIndex: () => Promise.reject(new Error("not an apk build")) };

  it("stages the indexes as published and the files the selection needs, then points opkg at them", async () => {
    publish("base", packagesIndex());
    const conf = `src/gz openwrt_base ${base}/base\nsrc imagebuilder file:packages\noption check_signature\n`;
    const ws = await workspace(conf);
    const stager = new FeedStager({ cacheDir: path.join(tmp, "cache-1") });
    const list = await readFeedList(ws);
    const result = await stager.stage(ws, list, ["hello"], noApk);
    expect(result).toMatchObject({ feeds: 1, packages: 2, downloaded: 2 });
    const feed = path.join(ws.feedsDir, "0");
    expect((await readdir(feed)).sort()).toEqual([
      "Packages",
      "Packages.gz",
      "Packages.sig",
      "hello_1.0_all.ipk",
      "libhello_2.0_all.ipk",
    ]);
    expect(await readFile(path.join(feed, "hello_1.0_all.ipk"))).toEqual(hello);
    expect(await readFile(path.join(ws.dir, "repositories.conf"), "utf8")).toBe(
      `src/gz openwrt_base file://${feed}\nsrc imagebuilder file:packages\noption check_signature\n`,
    );
    expect(requests).not.toContain("base/unrelated_1_all.ipk");

    // A second build takes the files and, within indexTtlMs, the indexes from the cache.
    requests.length = 0;
    const ws2 = await workspace(conf);
    const again = await stager.stage(ws2, await readFeedList(ws2), ["hello"], noApk);
    expect(again).toMatchObject({ packages: 2, downloaded: 0 });
    expect(requests).toEqual([]);
    for (const name of ["Packages", "Packages.gz", "Packages.sig"]) {
      expect(await readFile(path.join(ws2.feedsDir, "0", name))).toEqual(
        await readFile(path.join(feed, name)),
      );
    }
    // Hardlinked from the cache, not copied.
    expect((await stat(path.join(ws2.feedsDir, "0", "hello_1.0_all.ipk"))).nlink).toBeGreaterThan(1);
  });

  it("revalidates a cached index for a new ImageBuilder tree, even within indexTtlMs (a new snapshot)", async () => {
    publish("base", packagesIndex());
    const conf = `src/gz openwrt_base ${base}/base\n`;
    const stager = new FeedStager({ cacheDir: path.join(tmp, "cache-tree"), indexTtlMs: 3_600_000 });
    const first = await workspace(conf);
    await stager.stage(first, await readFeedList(first), ["hello"], { ...noApk, imagebuilder: "/ib/r1" });

    // The same tree within the TTL: no request at all.
    requests.length = 0;
    const same = await workspace(conf);
    await stager.stage(same, await readFeedList(same), ["hello"], { ...noApk, imagebuilder: "/ib/r1" });
    expect(requests).toEqual([]);

    // A snapshot is published: new packages and a new ImageBuilder tree. Its first build
    // must see the new index, not the one cached for the old tree.
    const newer = `${packagesIndex()}\nPackage: extra\nVersion: 1\nFilename: extra_1_all.ipk\nSize: 1\nSHA256sum: ${sha("x")}\n`;
    publish("base", newer);
    files.set("base/extra_1_all.ipk", Buffer.from("x"));
    requests.length = 0;
    const next = await workspace(conf);
    const result = await stager.stage(next, await readFeedList(next), ["extra"], {
      ...noApk,
      imagebuilder: "/ib/r2",
    });
    expect(result).toMatchObject({ packages: 1, downloaded: 1 });
    expect(requests).toContain("base/Packages.gz");
    expect(await readFile(path.join(next.feedsDir, "0", "Packages"), "utf8")).toBe(newer);
  });

  it("revalidates an index older than indexTtlMs: unchanged (304) it is not fetched again, changed it is", async () => {
    publish("base", packagesIndex());
    const conf = `src/gz openwrt_base ${base}/base\n`;
    const stager = new FeedStager({ cacheDir: path.join(tmp, "cache-ttl"), indexTtlMs: 0 });
    const first = await workspace(conf);
    await stager.stage(first, await readFeedList(first), ["hello"], noApk);

    requests.length = 0;
    const second = await workspace(conf);
    await stager.stage(second, await readFeedList(second), ["hello"], noApk);
    // One conditional request, answered 304: neither the signature nor any package again.
    expect(requests).toEqual(["base/Packages.gz"]);
    expect(await readFile(path.join(second.feedsDir, "0", "Packages.sig"))).toEqual(
      files.get("base/Packages.sig"),
    );

    // Upstream publishes a new index: the next build stages it, with its signature.
    const newer = `${packagesIndex()}\nPackage: extra\nVersion: 1\nFilename: extra_1_all.ipk\nSize: 1\nSHA256sum: ${sha("x")}\n`;
    publish("base", newer);
    files.set("base/Packages.sig", Buffer.from("untrusted comment: new sig\nRWQ=\n"));
    files.set("base/extra_1_all.ipk", Buffer.from("x"));
    requests.length = 0;
    const third = await workspace(conf);
    const result = await stager.stage(third, await readFeedList(third), ["extra"], noApk);
    expect(result).toMatchObject({ packages: 1, downloaded: 1 });
    expect(requests.sort()).toEqual(["base/Packages.gz", "base/Packages.sig", "base/extra_1_all.ipk"]);
    expect(await readFile(path.join(third.feedsDir, "0", "Packages"), "utf8")).toBe(newer);
    expect(await readFile(path.join(third.feedsDir, "0", "Packages.sig"), "utf8")).toContain("new sig");
  });

  it("reads an index anew after one of its packages could not be fetched", async () => {
    publish("base", packagesIndex());
    files.delete("base/libhello_2.0_all.ipk");
    const conf = `src/gz openwrt_base ${base}/base\n`;
    const stager = new FeedStager({ cacheDir: path.join(tmp, "cache-gone") });
    const first = await workspace(conf);
    const err = await stager
      .stage(first, await readFeedList(first), ["hello"], noApk)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BuildError);
    requests.length = 0;
    files.set("base/libhello_2.0_all.ipk", lib);
    const second = await workspace(conf);
    await stager.stage(second, await readFeedList(second), ["hello"], noApk);
    expect(requests).toContain("base/Packages.gz");
  });

  it("refuses a package whose bytes do not match the index's sha256, and caches nothing", async () => {
    publish("base", packagesIndex(sha("something else")));
    const ws = await workspace(`src/gz openwrt_base ${base}/base\n`);
    const cacheDir = path.join(tmp, "cache-2");
    const stager = new FeedStager({ cacheDir });
    const err = await stager.stage(ws, await readFeedList(ws), ["hello"], noApk).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BuildError);
    expect((err as BuildError).detail).toContain(`hello_1.0_all.ipk from ${base}/base`);
    expect((err as BuildError).detail).toContain("the index says");
    expect((err as BuildError).userFault).toBe(false);
    const cached = await readdir(cacheDir, { recursive: true });
    expect(cached.filter((f) => f.endsWith(".ipk") && f.includes(sha(hello)))).toEqual([]);
    expect(cached.filter((f) => f.endsWith(".tmp"))).toEqual([]);
  });

  it("refuses a file larger than the index says without reading it all", async () => {
    publish("base", packagesIndex());
    files.set("base/libhello_2.0_all.ipk", Buffer.alloc(10 * 1024 * 1024, 1));
    const ws = await workspace(`src/gz openwrt_base ${base}/base\n`);
    const stager = new FeedStager({ cacheDir: path.join(tmp, "cache-3") });
    await expect(stager.stage(ws, await readFeedList(ws), ["hello"], noApk)).rejects.toThrow(
      "larger than the index says",
    );
  });

  it("blames the user for an unreachable custom repository and the server for an unreachable upstream feed", async () => {
    const ws = await workspace(`src/gz custom ${base}/nowhere\n`);
    const stager = new FeedStager({ cacheDir: path.join(tmp, "cache-4") });
    const list = await readFeedList(ws);
    const custom = (await stager
      .stage(ws, list, ["hello"], { ...noApk, customUrls: new Set([`${base}/nowhere`]) })
      .catch((e: unknown) => e)) as BuildError;
    expect(custom.userFault).toBe(true);
    expect(custom.detail).toBe(
      `Error: Could not fetch the package index of ${base}/nowhere: ${base}/nowhere/Packages.gz answered HTTP 404. Check the repository URL and that it is online.`,
    );
    const ws2 = await workspace(`src/gz openwrt_base ${base}/nowhere\n`);
    const upstream = (await stager
      .stage(ws2, await readFeedList(ws2), ["hello"], noApk)
      .catch((e: unknown) => e)) as BuildError;
    expect(upstream.userFault).toBe(false);
    expect(upstream.retryable).toBe(true);
  });

  it("reads apk feeds through the ImageBuilder's own apk and fetches <name>-<version>.apk beside the index", async () => {
    const pkg = Buffer.from("apk bytes");
    files.set("snap/x86_64/base/packages.adb", Buffer.from("ADB-binary"));
    files.set("snap/x86_64/base/hello-1.0-r1.apk", pkg);
    const root = await mkdtemp(path.join(tmp, "ws-"));
    const ws = { dir: path.join(root, "ib"), feedsDir: path.join(root, "feeds") };
    await mkdir(ws.dir);
    await mkdir(ws.feedsDir);
    await writeFile(path.join(ws.dir, "repositories"), `${base}/snap/x86_64/base/packages.adb\n`);
    const dumped: string[] = [];
    const stager = new FeedStager({ cacheDir: path.join(tmp, "cache-5") });
    const result = await stager.stage(ws, await readFeedList(ws), ["hello"], {
      dumpApkIndex: async (file) => {
        dumped.push(await readFile(file, "utf8"));
        return JSON.stringify({ packages: [{ name: "hello", version: "1.0-r1", "file-size": pkg.length }] });
      },
    });
    expect(dumped).toEqual(["ADB-binary"]);
    expect(result).toMatchObject({ packages: 1, downloaded: 1 });
    expect(await readFile(path.join(ws.feedsDir, "0", "hello-1.0-r1.apk"))).toEqual(pkg);
    expect(await readFile(path.join(ws.dir, "repositories"), "utf8")).toBe(
      `file://${path.join(ws.feedsDir, "0", "packages.adb")}\n`,
    );
  });

  it("does not write through a link planted where the feed list was", async () => {
    publish("base", packagesIndex());
    const ws = await workspace(`src/gz openwrt_base ${base}/base\n`);
    const list = await readFeedList(ws);
    const victim = path.join(tmp, "victim.txt");
    await writeFile(victim, "untouched\n");
    await rm(path.join(ws.dir, "repositories.conf"));
    await import("node:fs/promises").then((fs) => fs.symlink(victim, path.join(ws.dir, "repositories.conf")));
    await new FeedStager({ cacheDir: path.join(tmp, "cache-6") }).stage(ws, list, ["hello"], noApk);
    expect(await readFile(victim, "utf8")).toBe("untouched\n");
    expect(await readFile(path.join(ws.dir, "repositories.conf"), "utf8")).toContain("file://");
  });
});
