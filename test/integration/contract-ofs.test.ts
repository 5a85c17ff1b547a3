import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  request,
  waitForBuild,
  type JsonResponse,
  type Mirror,
  type TestServer,
  startStack,
  stopStack,
} from "./harness.js";

/**
 * Replays what the OpenWrt Firmware Selector (a static page in a browser, cross-origin)
 * sends and checks exactly what it reads (client-contract.md). OFS calls detail.startsWith()
 * on every error and gets stuck on a non-JSON error body.
 */

const ORIGIN = "https://firmware-selector.openwrt.org";
const VERSION_2410 = "24.10.4";
const TARGET = "ath79/generic";
const PROFILE = "tplink_archer-c7-v5";

let mirror: Mirror;
let api: TestServer;

beforeAll(async () => {
  ({ mirror, api } = await startStack({ role: "all" }));
});

afterAll(() => stopStack({ mirror, api }));

function ofs(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
  return request(api.url, method, path, body, { origin: ORIGIN, ...headers });
}

/** What OFS needs from any error: JSON, CORS, integer status and a string detail. */
function expectOfsError(res: JsonResponse, status: number, what: string) {
  expect(res.status, what).toBe(status);
  expect(res.headers.get("content-type"), what).toMatch(/^application\/json/);
  expect(() => JSON.parse(res.text) as unknown, what).not.toThrow();
  expect(res.headers.get("access-control-allow-origin"), what).toBe("*");
  expect(typeof res.body.detail, what).toBe("string");
  expect(typeof (res.body.detail as string).startsWith, what).toBe("function");
  expect(res.body.status, what).toBe(status);
}

const base = { client: "ofs/4.3.2", version: VERSION_2410, target: TARGET, profile: PROFILE };

describe("CORS", () => {
  it("answers preflights for the build POST", async () => {
    for (const path of ["/api/v1/build", `/api/v1/build/${"a".repeat(64)}`, "/json/v1/overview.json"]) {
      const res = await ofs("OPTIONS", path, undefined, {
        "access-control-request-method": path === "/api/v1/build" ? "POST" : "GET",
        "access-control-request-headers": "content-type",
      });
      expect(res.status, path).toBeGreaterThanOrEqual(200);
      expect(res.status, path).toBeLessThan(300);
      expect(res.headers.get("access-control-allow-origin")).toBe("*");
      expect(res.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("content-type");
    }
  });

  it("sends the CORS headers on GET, on redirects and on errors", async () => {
    const overview = await ofs("GET", "/json/v1/overview.json");
    expect(overview.status).toBe(200);
    expect(overview.headers.get("access-control-allow-origin")).toBe("*");
    for (const path of ["/api/v1/overview", "/api/overview", "/api/v1/latest"]) {
      const redirect = await ofs("GET", path);
      expect(redirect.status).toBe(301);
      expect(redirect.headers.get("access-control-allow-origin")).toBe("*");
    }
    expectOfsError(await ofs("GET", `/api/v1/build/${"a".repeat(64)}`), 404, "unknown hash");
  });
});

describe("errors", () => {
  it("answers every schema violation with 422 and a string detail", async () => {
    const bodies: [string, unknown][] = [
      ["missing version", { ...base, version: undefined }],
      ["missing target", { ...base, target: undefined }],
      ["missing profile", { ...base, profile: undefined }],
      ["packages not a list", { ...base, packages: "luci" }],
      ["bad package name", { ...base, packages: ["luci;reboot"] }],
      ["bad target", { ...base, target: "ath79" }],
      ["rootfs too big", { ...base, rootfs_size_mb: 99999 }],
      ["rootfs not a number", { ...base, rootfs_size_mb: "lots" }],
      ["unknown filesystem", { ...base, filesystem: "ntfs" }],
      ["repositories not an object", { ...base, repositories: ["x"] }],
      ["repository_keys not a list", { ...base, repository_keys: "key" }],
      ["defaults not a string", { ...base, defaults: 5 }],
      ["body not an object", [1, 2, 3]],
    ];
    for (const [what, body] of bodies) {
      expectOfsError(await ofs("POST", "/api/v1/build", body), 422, what);
    }
  });

  it("answers malformed requests, unknown things and validation failures with JSON and a string detail", async () => {
    const notJson = await ofs("POST", "/api/v1/build", "{not json", { "content-type": "application/json" });
    expect(notJson.status).toBeGreaterThanOrEqual(400);
    expectOfsError(notJson, notJson.status, "invalid JSON");
    const textPlain = await ofs("POST", "/api/v1/build", "hello", { "content-type": "text/plain" });
    expectOfsError(textPlain, textPlain.status, "text/plain body");
    expect(textPlain.status).toBeGreaterThanOrEqual(400);

    expectOfsError(await ofs("POST", "/api/v1/build", { ...base, target: "foo/bar" }), 400, "unknown target");
    expectOfsError(
      await ofs("POST", "/api/v1/build", { ...base, version: "9.99.1" }),
      400,
      "unknown version",
    );
    expectOfsError(
      await ofs("POST", "/api/v1/build", { ...base, profile: "no_such" }),
      400,
      "unknown profile",
    );
    const unknownPackage = await ofs("POST", "/api/v1/build", { ...base, packages: ["luci-app-wireguard"] });
    expectOfsError(unknownPackage, 422, "unknown package");
    expect(String(unknownPackage.body.detail)).toContain("luci-app-wireguard");

    expectOfsError(await ofs("GET", "/api/v1/no-such-route"), 404, "unknown route");
    expectOfsError(
      await ofs("GET", "/json/v1/releases/24.10.4/targets/x86/65/index.json"),
      404,
      "unknown target",
    );
    expectOfsError(await ofs("GET", "/store/nothing/here.bin"), 404, "unknown store file");
  });
});

describe("builds", () => {
  it('builds with -pkg, defaults: "", repositories: {} and repository_keys: []', async () => {
    const profile = await ofs("GET", `/json/v1/releases/${VERSION_2410}/targets/${TARGET}/${PROFILE}.json`);
    const removed = ["ppp", "ppp-mod-pppoe"];
    const packages = [
      ...(profile.body.default_packages as string[]).filter((p) => !removed.includes(p)),
      ...(profile.body.device_packages as string[]),
      "luci",
      ...removed.map((p) => `-${p}`),
    ];
    const body = {
      ...base,
      packages,
      diff_packages: true,
      version_code: String(profile.body.version_code),
      defaults: "",
      repositories: {},
      repository_keys: [],
    };
    const post = await ofs("POST", "/api/v1/build", body);
    expect([200, 202]).toContain(post.status);
    expect(post.body.status).toBe(post.status);
    expect(post.headers.get("access-control-allow-origin")).toBe("*");
    const done = await waitForBuild(api.url, String(post.body.request_hash));
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ status: 200, detail: "done", imagebuilder_status: "done" });
    const manifest = done.body.manifest as Record<string, string>;
    for (const p of removed) expect(manifest[p], p).toBeUndefined();
    expect(manifest.luci).toEqual(expect.any(String));
    const images = done.body.images as { name: string; type: string }[];
    expect(images.some((i) => i.type === "sysupgrade")).toBe(true);
    const file = await fetch(`${api.url}/store/${String(done.body.bin_dir)}/${String(images[0]?.name)}`, {
      headers: { origin: ORIGIN },
    });
    expect(file.status).toBe(200);
    expect(file.headers.get("access-control-allow-origin")).toBe("*");

    // An empty defaults string means no defaults: the same request without it is a cache hit.
    const without = await ofs("POST", "/api/v1/build", {
      ...body,
      defaults: undefined,
      repositories: undefined,
      repository_keys: undefined,
    });
    expect(without.status).toBe(200);
    expect(without.body.request_hash).toBe(post.body.request_hash);
  });

  it("gets a 500 with a string detail, stdout and stderr for an impossible package selection", async () => {
    const post = await ofs("POST", "/api/v1/build", {
      ...base,
      packages: ["dnsmasq-full"],
      diff_packages: false,
    });
    expect([202, 500]).toContain(post.status);
    const done = post.status === 202 ? await waitForBuild(api.url, String(post.body.request_hash)) : post;
    expectOfsError(done, 500, "impossible selection");
    expect(String(done.body.detail)).toMatch(/^Error: Impossible package selection/);
    expect(done.body.imagebuilder_status).toBe("failed");
    expect(typeof done.body.stdout).toBe("string");
    expect(typeof done.body.stderr).toBe("string");
  });
});
