import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VERSION } from "../../src/shared/version.js";
import { request, type Mirror, type TestServer, startStack, stopStack } from "./harness.js";

/** Replays what owut (24.10 and later) sends and checks exactly what it reads (client-contract.md). */

const VERSION_2410 = "24.10.4";
const TARGET = "ath79/generic";
const PROFILE = "tplink_archer-c7-v5";
const REVISION = "r28959-29397011cc";

let mirror: Mirror;
let api: TestServer;

beforeAll(async () => {
  ({ mirror, api } = await startStack({ role: "all", overrides: { allow_defaults: true } }));
});

afterAll(() => stopStack({ mirror, api }));

const get = (path: string) => request(api.url, "GET", path, undefined, { "user-agent": "owut/2024.12.05" });

interface Branch {
  name: string;
  enabled: boolean;
  snapshot: boolean;
  path: string;
  path_packages: string;
  versions: string[];
  targets: Record<string, string>;
  package_changes: unknown[];
  branch_off_rev?: number;
}

describe("owut metadata", () => {
  it("reads server, branches and latest from overview.json", async () => {
    const res = await get("/json/v1/overview.json");
    expect(res.status).toBe(200);
    expect(res.body.upstream_url).toBe(mirror.url);
    const server = res.body.server as Record<string, unknown>;
    expect(server.version).toBe(VERSION);
    expect(server.allow_defaults).toBe(true);
    expect(server.repository_allow_list).toEqual([]);
    expect(typeof server.max_custom_rootfs_size_mb).toBe("number");
    expect(typeof server.max_defaults_length).toBe("number");
    expect(res.body.latest).toEqual(["24.10.4", "23.05.4"]);

    const branch = (res.body.branches as Record<string, Branch>)["24.10"] as Branch;
    expect(branch).toMatchObject({ name: "24.10", enabled: true, snapshot: false, branch_off_rev: 27990 });
    expect(branch.versions).toContain(VERSION_2410);
    expect(branch.targets[TARGET]).toBe("mips_24kc");
    expect(Array.isArray(branch.package_changes)).toBe(true);
    // owut fills in {version} itself
    expect(branch.path).toContain("{version}");
    expect(branch.path.replace("{version}", VERSION_2410)).toBe("releases/24.10.4");
    expect(branch.path_packages.replace("{version}", VERSION_2410)).toBe("releases/24.10.4/packages");
  });

  it("reads the target index and the packages index under the filled-in path", async () => {
    const overview = await get("/json/v1/overview.json");
    const branch = (overview.body.branches as Record<string, Branch>)["24.10"] as Branch;
    const path = branch.path.replace("{version}", VERSION_2410);
    const arch = branch.targets[TARGET] as string;

    const target = await get(`/json/v1/${path}/targets/${TARGET}/index.json`);
    expect(target.status).toBe(200);
    expect(target.body.architecture).toBe(arch);
    const own = target.body.packages as Record<string, string>;
    expect(own["base-files"]).toEqual(expect.any(String));
    expect(own["kmod-ath10k-ct"]).toEqual(expect.any(String));

    const feeds = await get(`/json/v1/${path}/packages/${arch}-index.json`);
    expect(feeds.status).toBe(200);
    expect(feeds.body.owut).toEqual(expect.any(String));
    expect(feeds.body.luci).toEqual(expect.any(String));
  });

  it("reads queue_length from /api/v1/stats", async () => {
    const res = await get("/api/v1/stats");
    expect(res.status).toBe(200);
    expect(typeof res.body.queue_length).toBe("number");
  });
});

describe("owut build", () => {
  it("polls with HEAD, reads the body status and finds every package at its version in the manifest", async () => {
    const path = "releases/24.10.4";
    const [profile, target, feeds] = await Promise.all([
      get(`/json/v1/${path}/targets/${TARGET}/${PROFILE}.json`),
      get(`/json/v1/${path}/targets/${TARGET}/index.json`),
      get(`/json/v1/${path}/packages/mips_24kc-index.json`),
    ]);
    const available = {
      ...(feeds.body as Record<string, string>),
      ...(target.body.packages as Record<string, string>),
    };
    const wanted = [
      ...(profile.body.default_packages as string[]),
      ...(profile.body.device_packages as string[]),
      "luci",
      "owut",
      "tcpdump",
    ];
    // owut pins what it knows a version of; the rest (virtual names such as nftables) goes in packages.
    const packagesVersions: Record<string, string> = {};
    const unversioned: string[] = [];
    for (const name of wanted) {
      const version = available[name];
      if (version === undefined) unversioned.push(name);
      else packagesVersions[name] = version;
    }
    expect(unversioned).toEqual(["nftables"]);
    for (const name of ["luci", "owut", "tcpdump", "kmod-ath10k-ct", "base-files"]) {
      expect(packagesVersions[name], name).toEqual(expect.any(String));
    }

    const body = {
      client: "owut/2024.12.05~0d1bd8d8-r1",
      version: VERSION_2410,
      version_code: REVISION,
      target: TARGET,
      profile: PROFILE,
      packages: [...Object.keys(packagesVersions), ...unversioned].sort(),
      packages_versions: packagesVersions,
      diff_packages: true,
      filesystem: "squashfs",
      rootfs_size_mb: 100,
      defaults: "uci set system.@system[0].hostname='owut-test'\nuci commit system\n",
    };
    const post = await request(api.url, "POST", "/api/v1/build", body);
    // owut decides from the body's status, not the HTTP code
    expect([200, 202]).toContain(post.body.status);
    expect(post.body.status).toBe(post.status);
    const hash = String(post.body.request_hash);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);

    const deadline = Date.now() + 90_000;
    let head = await fetch(`${api.url}/api/v1/build/${hash}`, { method: "HEAD" });
    const stages = new Set<string>();
    while (head.status === 202 && Date.now() < deadline) {
      expect(await head.text()).toBe("");
      stages.add(String(head.headers.get("x-imagebuilder-status")));
      await new Promise((r) => setTimeout(r, 50));
      head = await fetch(`${api.url}/api/v1/build/${hash}`, { method: "HEAD" });
    }
    expect(head.status).toBe(200);
    expect(await head.text()).toBe("");
    expect(head.headers.get("x-imagebuilder-status")).toBe("done");

    const result = await get(`/api/v1/build/${hash}`);
    expect(result.status).toBe(200);
    expect(result.body.status).toBe(200);
    expect(result.body.detail).toBe("done");
    const req = result.body.request as Record<string, unknown>;
    // owut aborts when any of these keys is missing
    expect(req).toHaveProperty("version_code", REVISION);
    expect(req).toHaveProperty("rootfs_size_mb", 100);
    expect(req).toHaveProperty("defaults", body.defaults);
    expect(result.body.version_code).toBe(REVISION);

    const manifest = result.body.manifest as Record<string, string>;
    for (const [name, version] of Object.entries(packagesVersions)) {
      expect(manifest[name], name).toBe(version);
    }

    const images = result.body.images as { name: string; type: string; filesystem: string; sha256: string }[];
    const image = images.find((i) => i.type === "sysupgrade" && i.filesystem === "squashfs");
    expect(image).toBeDefined();
    const res = await fetch(`${api.url}/store/${String(result.body.bin_dir)}/${String(image?.name)}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(image?.sha256);
  });

  it("gets a body status on errors too", async () => {
    const res = await request(api.url, "POST", "/api/v1/build", {
      client: "owut/2024.12.05",
      version: VERSION_2410,
      version_code: "",
      target: TARGET,
      profile: PROFILE,
      packages_versions: { "no-such-package-owut": "1.0-r1" },
      diff_packages: true,
    });
    expect(res.status).toBe(422);
    expect(res.body.status).toBe(422);
    expect(typeof res.body.detail).toBe("string");
    const unknown = await request(api.url, "HEAD", `/api/v1/build/${"f".repeat(64)}`);
    expect(unknown.status).toBe(404);
    expect(unknown.text).toBe("");
  });
});
