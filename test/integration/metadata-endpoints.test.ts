import { cp, mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VERSION } from "../../src/shared/version.js";
import {
  flushPrefix,
  request,
  startTestServer,
  type Mirror,
  type TestServer,
  startStack,
  stopStack,
} from "./harness.js";

// Facts from docs/mirror.md.
const REV_2410 = "r28959-29397011cc";
const REV_2305 = "r24012-d8dd03c46f";
const REV_SNAPSHOT = "r30000-30b6181a89";
const EPOCH_2410 = 1759938541;

const BRANCH_KEYS = [
  "branch_off_rev",
  "enabled",
  "name",
  "package_changes",
  "path",
  "path_packages",
  "snapshot",
  "targets",
  "versions",
];

let mirror: Mirror;
let api: TestServer;

beforeAll(async () => {
  // Writable: one test publishes 24.10.5 into the mirror.
  ({ mirror, api } = await startStack({ role: "api" }, { writable: true }));
});

afterAll(() => stopStack({ mirror, api }));

const get = (urlPath: string, headers: Record<string, string> = {}) =>
  request(api.url, "GET", urlPath, undefined, headers);

async function upstreamJson(urlPath: string): Promise<Record<string, unknown>> {
  const res = await fetch(`${mirror.url}/${urlPath}`);
  return (await res.json()) as Record<string, unknown>;
}

function expectJsonError(
  res: { status: number; body: Record<string, unknown>; headers: Headers },
  status: number,
) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  expect(res.body.status).toBe(status);
  expect(typeof res.body.title).toBe("string");
  expect(typeof res.body.detail).toBe("string");
  expect(String(res.body.detail)).not.toMatch(/\n\s+at /);
}

describe("overview.json", () => {
  it("has upstream_url, the server limits, every enabled branch and latest", async () => {
    const res = await get("/json/v1/overview.json?1696506154265");
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    const body = res.body;
    expect(Object.keys(body).sort()).toEqual(["branches", "latest", "server", "upstream_url"]);
    expect(body.upstream_url).toBe(mirror.url);
    expect(body.server).toEqual({
      version: VERSION,
      allow_defaults: false,
      repository_allow_list: [],
      max_custom_rootfs_size_mb: 1024,
      max_defaults_length: 20480,
    });
    expect(body.latest).toEqual(["24.10.4", "23.05.4"]);

    const branches = body.branches as Record<string, Record<string, unknown>>;
    expect(Object.keys(branches)).toEqual(expect.arrayContaining(["SNAPSHOT", "24.10", "23.05"]));
    for (const [name, branch] of Object.entries(branches)) {
      expect(branch.name).toBe(name);
      const keys = Object.keys(branch).sort();
      expect(keys).toEqual(branch.snapshot ? BRANCH_KEYS.filter((k) => k !== "branch_off_rev") : BRANCH_KEYS);
      expect(Array.isArray(branch.versions)).toBe(true);
      for (const change of branch.package_changes as Record<string, unknown>[]) {
        expect(typeof change.revision).toBe("number");
      }
    }

    expect(branches["24.10"]).toMatchObject({
      name: "24.10",
      enabled: true,
      snapshot: false,
      path: "releases/{version}",
      path_packages: "releases/{version}/packages",
      versions: ["24.10.4", "24.10.3"],
      targets: { "ath79/generic": "mips_24kc", "x86/64": "x86_64" },
      branch_off_rev: 27990,
    });
    // 24.10 advertises renames up to its branch-off only (auc → owut is r26792).
    const changes2410 = branches["24.10"]?.package_changes as { source?: string; revision: number }[];
    expect(changes2410.some((c) => c.source === "auc")).toBe(true);
    expect(changes2410.every((c) => c.revision <= 27990)).toBe(true);

    expect(branches["23.05"]).toMatchObject({
      versions: ["23.05.4"],
      targets: { "ath79/generic": "mips_24kc", "x86/64": "x86_64", "ramips/mt7621": "mipsel_24kc" },
      branch_off_rev: 23069,
    });
    expect(branches.SNAPSHOT).toMatchObject({
      snapshot: true,
      path: "snapshots",
      path_packages: "snapshots/packages",
      versions: ["SNAPSHOT"],
      targets: { "ath79/generic": "mips_24kc", "x86/64": "x86_64" },
    });
    // owut fills the template in itself
    expect(String(branches["23.05"]?.path)).toContain("{version}");
  });

  it("lists the same branch objects in branches.json and the seed /api/branches", async () => {
    const overview = await get("/json/v1/overview.json");
    const list = await get("/json/v1/branches.json");
    expect(list.status).toBe(200);
    const branches = JSON.parse(list.text) as Record<string, unknown>[];
    expect(branches).toEqual(Object.values(overview.body.branches as object));
    for (const b of branches) expect(typeof b.path_packages).toBe("string");
    const seed = await get("/api/branches");
    expect(seed.status).toBe(200);
    expect(JSON.parse(seed.text)).toEqual(branches);
  });

  it("answers latest.json, /api/latest and /api/versions", async () => {
    const latest = await get("/json/v1/latest.json");
    expect(latest.status).toBe(200);
    expect(latest.body).toEqual({ latest: ["24.10.4", "23.05.4"] });
    expect((await get("/api/latest")).body).toEqual({ latest: ["24.10.4", "23.05.4"] });
    const versions = await get("/api/versions");
    expect(versions.status).toBe(200);
    expect(versions.body.versions).toEqual(["SNAPSHOT", "24.10.4", "24.10.3", "23.05.4"]);
    expect(versions.body.latest).toEqual(["24.10.4", "23.05.4"]);
    expect(Array.isArray(versions.body.branches)).toBe(true);
  });

  it("redirects the API paths with 301 and CORS headers", async () => {
    for (const [from, to] of [
      ["/api/v1/overview", "/json/v1/overview.json"],
      ["/api/overview", "/json/v1/overview.json"],
      ["/api/v1/latest", "/json/v1/latest.json"],
      ["/api/v1/overview?1696506154265", "/json/v1/overview.json"],
    ] as const) {
      const res = await get(from, { origin: "https://example.org" });
      expect(res.status, from).toBe(301);
      expect(res.headers.get("location")).toBe(to);
      expect(res.headers.get("access-control-allow-origin")).toBe("*");
      const followed = await fetch(`${api.url}${from}`);
      expect(followed.status).toBe(200);
      expect(followed.url).toBe(`${api.url}${to}`);
    }
  });
});

describe("revision", () => {
  it("answers the version_code of profiles.json", async () => {
    for (const [version, target, revision] of [
      ["24.10.4", "ath79/generic", REV_2410],
      ["23.05.4", "ramips/mt7621", REV_2305],
      ["SNAPSHOT", "x86/64", REV_SNAPSHOT],
    ] as const) {
      const res = await get(`/api/v1/revision/${version}/${target}?1696506154265`);
      expect(res.status).toBe(200);
      expect(res.body).toEqual({ revision });
    }
  });

  it("answers 400 for a bad version, as upstream ASU", async () => {
    for (const version of ["24.10.9", "9.99.1", "10.10.10", "not-a-version"]) {
      const res = await get(`/api/v1/revision/${version}/ath79/generic`);
      expectJsonError(res, 400);
      expect(res.body.detail).toContain(version);
    }
  });

  it("answers 404 for unknown targets, 4xx for bad characters", async () => {
    expectJsonError(await get("/api/v1/revision/24.10.4/ath79/nope"), 404);
    expectJsonError(await get("/api/v1/revision/23.05.4/ramips/mt7622"), 404);
    // listed in .versions.json, but only .targets.json is published
    expectJsonError(await get("/api/v1/revision/24.10.3/ath79/generic"), 404);
    const bad = await get("/api/v1/revision/24.10.4/ath79/gen%3Bic");
    expect(bad.status).toBeGreaterThanOrEqual(400);
    expect(bad.status).toBeLessThan(500);
    expect(typeof bad.body.detail).toBe("string");
  });
});

describe("per-version documents", () => {
  it("serves a profile merged with the target metadata", async () => {
    const res = await get("/json/v1/releases/24.10.4/targets/ath79/generic/tplink_archer-c7-v5.json?1");
    expect(res.status).toBe(200);
    const upstream = await upstreamJson("releases/24.10.4/targets/ath79/generic/profiles.json");
    const profile = (upstream.profiles as Record<string, Record<string, unknown>>)["tplink_archer-c7-v5"];
    expect(res.body).toMatchObject({
      metadata_version: 1,
      id: "tplink_archer-c7-v5",
      target: "ath79/generic",
      arch_packages: "mips_24kc",
      version_code: REV_2410,
      version_number: "24.10.4",
      source_date_epoch: EPOCH_2410,
      build_at: new Date(EPOCH_2410 * 1000).toISOString(),
      images: profile?.images,
      titles: profile?.titles,
      supported_devices: ["tplink,archer-c7-v5", "archer-c7-v5"],
      image_prefix: profile?.image_prefix,
      device_packages: profile?.device_packages,
      default_packages: upstream.default_packages,
      linux_kernel: upstream.linux_kernel,
    });
    const images = res.body.images as { name: string; type: string; sha256: string }[];
    expect(images.map((i) => i.type)).toEqual(expect.arrayContaining(["sysupgrade", "factory"]));
  });

  it("finds the profile by a supported_devices name, with a comma or as auc sends it", async () => {
    for (const [name, id] of [
      ["tplink,archer-c7-v5", "tplink_archer-c7-v5"],
      ["tplink_archer-c7-v5", "tplink_archer-c7-v5"],
      ["archer-c7", "tplink_archer-c7-v2"],
      ["xiaomi,mi-router-3g", "xiaomi_mi-router-3g"],
    ] as const) {
      const version = name.startsWith("xiaomi") ? "23.05.4" : "24.10.4";
      const target = name.startsWith("xiaomi") ? "ramips/mt7621" : "ath79/generic";
      const res = await get(`/json/v1/releases/${version}/targets/${target}/${name}.json`);
      expect(res.status, name).toBe(200);
      expect(res.body.id).toBe(id);
    }
    const snapshot = await get("/json/v1/snapshots/targets/x86/64/generic.json");
    expect(snapshot.status).toBe(200);
    expect(snapshot.body).toMatchObject({
      id: "generic",
      version_number: "SNAPSHOT",
      version_code: REV_SNAPSHOT,
      arch_packages: "x86_64",
      supported_devices: [],
    });
    // As for builds: a PC's board_name is listed nowhere, so x86's only profile answers for it.
    const pc = await get("/json/v1/snapshots/targets/x86/64/pc-engines-apu2.json");
    expect(pc.body.id).toBe("generic");
  });

  it("serves the target index with kmods merged in", async () => {
    const res = await get("/json/v1/releases/24.10.4/targets/ath79/generic/index.json?5");
    expect(res.status).toBe(200);
    expect(Object.keys(res.body).sort()).toEqual(["architecture", "packages"]);
    expect(res.body.architecture).toBe("mips_24kc");
    const packages = res.body.packages as Record<string, string>;
    expect(packages["base-files"]).toEqual(expect.any(String));
    // 24.10 splits kmods out into kmods/<kernel>-<release>-<vermagic>/
    expect(packages["kmod-ath10k-ct"]).toBe("6.6.110-r1");
    expect(packages.luci).toBeUndefined();

    const snapshot = await get("/json/v1/snapshots/targets/x86/64/index.json");
    expect(snapshot.body.architecture).toBe("x86_64");
    expect((snapshot.body.packages as Record<string, string>)["kmod-e1000e"]).toBe("6.18.5-r1");

    const old = await get("/json/v1/releases/23.05.4/targets/ath79/generic/index.json");
    expect((old.body.packages as Record<string, string>)["kmod-ath10k-ct"]).toBe("5.15.162-1");
  });

  it("serves the packages index of an architecture over every feed", async () => {
    const res = await get("/json/v1/releases/24.10.4/packages/mips_24kc-index.json");
    expect(res.status).toBe(200);
    const packages = res.body as Record<string, string>;
    expect(packages.busybox).toBe("1.36.1-r2");
    expect(packages.luci).toEqual(expect.any(String)); // luci feed
    expect(packages.owut).toEqual(expect.any(String)); // packages feed
    expect(packages.auc).toBeUndefined();
    expect(packages["luci-app-package-manager"]).toEqual(expect.any(String));
    for (const v of Object.values(packages)) expect(typeof v).toBe("string");

    const old = await get("/json/v1/releases/23.05.4/packages/mipsel_24kc-index.json");
    expect(old.status).toBe(200);
    expect((old.body as Record<string, string>).auc).toEqual(expect.any(String));
    expect((old.body as Record<string, string>).busybox).toBe("1.36.1-1");

    const snapshot = await get("/json/v1/snapshots/packages/x86_64-index.json");
    expect(snapshot.status).toBe(200);
    expect((snapshot.body as Record<string, string>).busybox).toBe("1.37.0-r5");
    expect((snapshot.body as Record<string, string>)["apk-mbedtls"]).toEqual(expect.any(String));
  });

  it("answers 404 with JSON for anything unknown or malformed", async () => {
    for (const p of [
      "/json/v1/releases/9.99.1/targets/x86/64/index.json",
      "/json/v1/releases/24.10.9/targets/x86/64/index.json",
      "/json/v1/releases/24.10.4/targets/x86/65/index.json",
      "/json/v1/releases/24.10.4/targets/ath79/generic/no_such_device.json",
      "/json/v1/releases/24.10.4/targets/ramips/mt7621/index.json",
      "/json/v1/releases/24.10.4/packages/mipsel_24kc-index.json",
      "/json/v1/releases/24.10.4/packages/mips_24kc.json",
      "/json/v1/releases/24.10.4/other/x86/64/index.json",
      "/json/v1/releases/24.10.4/targets/x86/64/index.txt",
      "/json/v1/releases/24.10.4/targets/x86/64/extra/index.json",
      "/json/v1/snapshots/targets/ath79/generic/tplink_archer-c7-v6.json",
      "/json/v1/SNAPSHOT/targets/x86/64/index.json",
      "/json/v1/foo.json",
      "/json/v1/releases/24.10.4/targets/x86/64/a%20b.json",
      "/json/v1/releases/24.10.4/targets/x86/../../etc/index.json",
      "/json/v1/releases/24.10.4/targets/x86/%2e%2e/index.json",
      "/json/v1/releases/24.10.4/targets/x86/64%2F..%2F..%2Findex.json",
      "/json/v1/releases/24.10.4/targets/x86/64/$(reboot).json",
    ]) {
      const res = await get(p);
      expect(res.status, p).toBe(404);
      expectJsonError(res, 404);
    }
  });
});

describe("stats and docs", () => {
  it("answers /api/v1/stats with queue_length", async () => {
    const res = await get("/api/v1/stats?1");
    expect(res.status).toBe(200);
    expect(res.body.queue_length).toBe(0);
  });

  it("documents every metadata route in the OpenAPI document", async () => {
    const res = await get("/openapi.json");
    const paths = res.body.paths as Record<string, Record<string, { tags?: string[]; summary?: string }>>;
    for (const p of [
      "/json/v1/overview.json",
      "/json/v1/branches.json",
      "/json/v1/latest.json",
      "/api/v1/overview",
      "/api/overview",
      "/api/v1/latest",
      "/api/latest",
      "/api/branches",
      "/api/versions",
      "/api/v1/revision/{version}/{target}/{subtarget}",
      "/json/v1/{*}",
      "/api/v1/stats",
      "/",
    ]) {
      const op = paths[p]?.get;
      expect(op, p).toBeDefined();
      expect(typeof op?.summary).toBe("string");
      expect(op?.tags?.length).toBeGreaterThan(0);
    }
  });
});

describe("upstream", () => {
  it("answers 502 with a string detail when the download server is unreachable", async () => {
    const dead = await startTestServer(mirror, {
      role: "api",
      overrides: { upstream_url: "http://127.0.0.1:1" },
    });
    try {
      for (const p of [
        "/json/v1/overview.json",
        "/json/v1/branches.json",
        "/json/v1/latest.json",
        "/api/versions",
        "/api/v1/revision/24.10.4/ath79/generic",
        "/json/v1/releases/24.10.4/targets/ath79/generic/index.json",
        "/json/v1/releases/24.10.4/packages/mips_24kc-index.json",
      ]) {
        const res = await request(dead.url, "GET", p);
        expect([502, 503, 504], p).toContain(res.status);
        expectJsonError(res, res.status);
        expect(String(res.body.detail)).toMatch(/upstream download server/);
      }
      // the HTML page still renders and says why the branches are missing
      const page = await fetch(`${dead.url}/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("Branch information is unavailable");
    } finally {
      await dead.close();
      await flushPrefix(dead.prefix);
    }
  });

  it("picks up a new release without a restart", async () => {
    // The server has cached .versions.json; publish 24.10.5 (the metadata documents only).
    const before = await get("/json/v1/latest.json");
    expect(before.body.latest).toEqual(["24.10.4", "23.05.4"]);
    const from = path.join(mirror.dir, "releases/24.10.4");
    const to = path.join(mirror.dir, "releases/24.10.5");
    await mkdir(path.join(to, "targets/ath79/generic"), { recursive: true });
    await cp(path.join(from, ".targets.json"), path.join(to, ".targets.json"));
    const profiles = await upstreamJson("releases/24.10.4/targets/ath79/generic/profiles.json");
    await writeFile(
      path.join(to, "targets/ath79/generic/profiles.json"),
      JSON.stringify({ ...profiles, version_number: "24.10.5", version_code: "r29100-0123456789" }),
    );
    await writeFile(
      path.join(mirror.dir, ".versions.json"),
      JSON.stringify({
        stable_version: "24.10.5",
        oldstable_version: "23.05.4",
        upcoming_version: null,
        versions_list: ["24.10.5", "24.10.4", "24.10.3", "23.05.4"],
      }),
    );
    // A miss forces one reload of .versions.json, rate-limited to one per 10 s per document.
    const deadline = Date.now() + 20_000;
    let res = await get("/api/v1/revision/24.10.5/ath79/generic");
    // 400 (unlisted version) until .versions.json is re-read, 404 until profiles.json is.
    while ((res.status === 400 || res.status === 404) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      res = await get("/api/v1/revision/24.10.5/ath79/generic");
    }
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ revision: "r29100-0123456789" });
    const profile = await get("/json/v1/releases/24.10.5/targets/ath79/generic/archer-c7-v5.json");
    expect(profile.body).toMatchObject({ id: "tplink_archer-c7-v5", version_number: "24.10.5" });
    const latest = await get("/json/v1/latest.json");
    expect(latest.body.latest).toEqual(["24.10.5", "23.05.4"]);
    const overview = await get("/json/v1/overview.json");
    expect((overview.body.branches as Record<string, { versions: string[] }>)["24.10"]?.versions).toEqual([
      "24.10.5",
      "24.10.4",
      "24.10.3",
    ]);
  }, 40_000);
});
