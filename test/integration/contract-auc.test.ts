import { createHash } from "node:crypto";
import { request as httpRequest } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request, type Mirror, type TestServer, startStack, stopStack } from "./harness.js";

/** Replays what auc (23.05 and older) sends and checks exactly what it reads (client-contract.md). */

const UA = { "user-agent": "auc/0.3.2-1" };
const VERSION_2305 = "23.05.4";
const TARGET = "ath79/generic";
const BOARD = "glinet,gl-ar300m16";
const PROFILE = "glinet_gl-ar300m16";

let mirror: Mirror;
let api: TestServer;
let storeUrl = "";
let storeSize = -1;

beforeAll(async () => {
  ({ mirror, api } = await startStack({ role: "all" }));
});

afterAll(() => stopStack({ mirror, api }));

const get = (path: string) => request(api.url, "GET", path, undefined, UA);

/** A raw download, to see the headers exactly as they went over the wire. */
function rawGet(url: string): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { headers: UA }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

interface Branch {
  name: string;
  path: string;
  path_packages: string;
  versions: string[];
  targets: Record<string, string>;
}

async function branch2305(): Promise<Branch> {
  const res = await get("/json/v1/branches.json");
  expect(res.status).toBe(200);
  const list = JSON.parse(res.text) as Branch[];
  expect(Array.isArray(list)).toBe(true);
  for (const b of list) expect(typeof b.path_packages).toBe("string");
  const branch = list.find((b) => b.name === "23.05");
  expect(branch).toBeDefined();
  return branch as Branch;
}

describe("auc metadata", () => {
  it("reads branches.json with path_packages", async () => {
    const branch = await branch2305();
    expect(branch.versions).toContain(VERSION_2305);
    expect(branch.path).toBe("releases/{version}");
    expect(branch.path_packages).toBe("releases/{version}/packages");
    expect(branch.targets[TARGET]).toBe("mips_24kc");
  });

  it("reads the profile document (board name with the comma made an underscore) and both indexes", async () => {
    const branch = await branch2305();
    const path = branch.path.replace("{version}", VERSION_2305);
    const profile = await get(`/json/v1/${path}/targets/${TARGET}/${BOARD.replace(",", "_")}.json`);
    expect(profile.status).toBe(200);
    expect(profile.body.metadata_version).toBe(1);
    expect(profile.body).toMatchObject({
      id: PROFILE,
      target: TARGET,
      version_number: VERSION_2305,
      version_code: "r24012-d8dd03c46f",
      build_at: new Date(1721081658 * 1000).toISOString(),
    });
    expect(Array.isArray(profile.body.images)).toBe(true);

    const index = await get(`/json/v1/${path}/targets/${TARGET}/index.json`);
    expect(index.status).toBe(200);
    expect(profile.body.arch_packages).toBe(index.body.architecture);

    const feeds = await get(`/json/v1/${path}/packages/${String(profile.body.arch_packages)}-index.json`);
    expect(feeds.status).toBe(200);
    expect(feeds.body.auc).toEqual(expect.any(String));
  });
});

describe("auc build", () => {
  it("builds without a client field and downloads images with Content-Length and matching sha256", async () => {
    const path = `releases/${VERSION_2305}`;
    const [profile, index, feeds] = await Promise.all([
      get(`/json/v1/${path}/targets/${TARGET}/${PROFILE}.json`),
      get(`/json/v1/${path}/targets/${TARGET}/index.json`),
      get(`/json/v1/${path}/packages/mips_24kc-index.json`),
    ]);
    const available = {
      ...(feeds.body as Record<string, string>),
      ...(index.body.packages as Record<string, string>),
    };
    const packagesVersions: Record<string, string> = {};
    for (const name of [
      ...(profile.body.default_packages as string[]),
      ...(profile.body.device_packages as string[]),
      "auc",
      "luci",
    ]) {
      const version = available[name];
      if (version !== undefined) packagesVersions[name] = version;
    }
    expect(packagesVersions.auc).toEqual(expect.any(String));

    const post = await request(
      api.url,
      "POST",
      "/api/v1/build",
      {
        version: VERSION_2305,
        version_code: String(profile.body.version_code),
        target: TARGET,
        profile: PROFILE,
        packages_versions: packagesVersions,
        diff_packages: true,
      },
      UA,
    );
    expect([200, 202]).toContain(post.status);
    const hash = String(post.body.request_hash);
    let result = post;
    const deadline = Date.now() + 90_000;
    while (result.status === 202 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      result = await get(`/api/v1/build/${hash}`);
    }
    expect(result.status).toBe(200);
    expect(result.body.status).toBe(200);

    const images = result.body.images as { name: string; sha256: string; type: string }[];
    expect(images.map((i) => i.type)).toContain("sysupgrade");
    for (const image of images) {
      const url = `${api.url}/store/${String(result.body.bin_dir)}/${image.name}`;
      const res = await rawGet(url);
      expect(res.status).toBe(200);
      expect(res.headers["transfer-encoding"]).toBeUndefined();
      expect(Number(res.headers["content-length"])).toBe(res.body.length);
      expect(createHash("sha256").update(res.body).digest("hex")).toBe(image.sha256);
    }
    storeUrl = `${api.url}/store/${String(result.body.bin_dir)}/${String(images[0]?.name)}`;
    storeSize = (await rawGet(storeUrl)).body.length;
  });

  it("answers HEAD /store/... with the file's Content-Length", async () => {
    const head = await fetch(storeUrl, { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("content-length")).toBe(String(storeSize));
  });

  it("prints X-Unknown-Package on 422", async () => {
    const res = await request(
      api.url,
      "POST",
      "/api/v1/build",
      {
        version: VERSION_2305,
        version_code: "r24012-d8dd03c46f",
        target: TARGET,
        profile: PROFILE,
        packages_versions: { "luci-app-wireguard": "1.0-1", luci: "git-24.0-1" },
        diff_packages: true,
      },
      UA,
    );
    expect(res.status).toBe(422);
    expect(res.body.status).toBe(422);
    expect(typeof res.body.detail).toBe("string");
    expect(res.headers.get("x-unknown-package")).toContain("luci-app-wireguard");
  });
});
