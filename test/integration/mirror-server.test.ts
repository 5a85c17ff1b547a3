import { request } from "node:http";
import { mkdir, mkdtemp, rm, symlink, writeFile, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMirrorServer, type MirrorServer } from "../../fixtures/mirror/mirror-server.js";

let work: string;
let server: MirrorServer;

interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A request with the path sent as written (fetch would normalise "..", node:http does not). */
function raw(pathname: string, method = "GET", headers: Record<string, string> = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: server.port, path: pathname, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "asu-mirror-server-"));
  const dir = path.join(work, "root");
  await mkdir(path.join(dir, "releases/23.05.4"), { recursive: true });
  await writeFile(path.join(dir, ".versions.json"), '{"stable_version":"24.10.4"}');
  await writeFile(path.join(dir, "releases/23.05.4/sha256sums"), "abc *file\n");
  await utimes(path.join(dir, "releases/23.05.4/sha256sums"), 1721081658, 1721081658);
  await writeFile(path.join(work, "secret.txt"), "outside the mirror\n");
  await symlink(path.join(work, "secret.txt"), path.join(dir, "escape"));
  server = await startMirrorServer({ dir });
});

afterAll(async () => {
  await server?.close();
  if (work) await rm(work, { recursive: true, force: true });
});

describe("mirror server", () => {
  it("listens on a random loopback port", () => {
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
    expect(server.port).toBeGreaterThan(0);
  });

  it("serves files with Content-Length, ETag and Last-Modified, and records the paths", async () => {
    server.requests.length = 0;
    const res = await fetch(`${server.url}/.versions.json?x=1`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("content-length")).toBe("28");
    expect(await res.text()).toBe('{"stable_version":"24.10.4"}');
    const sums = await fetch(`${server.url}/releases/23.05.4/sha256sums`);
    expect(sums.headers.get("last-modified")).toBe("Mon, 15 Jul 2024 22:14:18 GMT");
    expect(sums.headers.get("etag")).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);
    expect(server.requests).toEqual(["/.versions.json", "/releases/23.05.4/sha256sums"]);
  });

  it("answers 304 to a matching If-None-Match or If-Modified-Since", async () => {
    const first = await fetch(`${server.url}/releases/23.05.4/sha256sums`);
    const etag = first.headers.get("etag")!;
    const byEtag = await raw("/releases/23.05.4/sha256sums", "GET", { "If-None-Match": etag });
    expect(byEtag.status).toBe(304);
    expect(byEtag.body).toBe("");
    const byDate = await raw("/releases/23.05.4/sha256sums", "GET", {
      "If-Modified-Since": "Mon, 15 Jul 2024 22:14:18 GMT",
    });
    expect(byDate.status).toBe(304);
    const older = await raw("/releases/23.05.4/sha256sums", "GET", {
      "If-Modified-Since": "Mon, 15 Jul 2024 22:14:17 GMT",
    });
    expect(older.status).toBe(200);
    expect(older.body).toBe("abc *file\n");
  });

  it("answers HEAD with the headers and no body", async () => {
    const res = await raw("/releases/23.05.4/sha256sums", "HEAD");
    expect(res.status).toBe(200);
    expect(res.headers["content-length"]).toBe("10");
    expect(res.body).toBe("");
  });

  it("refuses paths outside the mirror: '..', encoded dots and symlinks", async () => {
    // the URL parser folds "/../" and "%2e%2e" to the mirror root...
    expect((await raw("/../secret.txt")).status).toBe(404);
    expect((await raw("/%2e%2e/secret.txt")).status).toBe(404);
    // ...an encoded slash survives it and is refused
    expect((await raw("/releases/..%2f..%2fsecret.txt")).status).toBe(400);
    expect((await raw("/releases/..%5c..%5csecret.txt")).status).toBe(400);
    const link = await raw("/escape");
    expect(link.status).toBe(404);
    expect(link.body).toBe("not found\n");
  });

  it("answers 404 for missing files and folders, 405 for other methods", async () => {
    const missing = await raw("/releases/23.05.4/nothing");
    expect(missing.status).toBe(404);
    expect(missing.headers["content-type"]).toBe("text/plain; charset=utf-8");
    expect((await raw("/releases/")).status).toBe(404);
    expect((await raw("/.versions.json", "POST")).status).toBe(405);
  });
});
