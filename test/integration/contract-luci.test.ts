import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request, type Mirror, type TestServer, startStack, stopStack } from "./harness.js";

/**
 * Replays what luci-app-attendedsysupgrade sends and checks exactly what it reads
 * (docs: ../shared/docs/client-contract.md). LuCI appends "?<milliseconds>" to every URL.
 */

// Spelled out from client-contract.md on purpose, not imported from src/queue/build-job.ts:
// a stage added to the code but unknown to LuCI must fail this test.
const KNOWN_STAGES = [
  "init",
  "container_setup",
  "validate_revision",
  "validate_manifest",
  "calculate_packages_hash",
  "building_image",
  "signing_images",
  "done",
  "failed",
  "download_imagebuilder",
  "unpack_imagebuilder",
];

let mirror: Mirror;
let api: TestServer;

beforeAll(async () => {
  ({ mirror, api } = await startStack({ role: "all" }));
});

afterAll(() => stopStack({ mirror, api }));

const ms = () => `?${Date.now()}`;

/** LuCI's fetch: cross-origin from the router's web UI, redirects followed. */
async function luciGet(
  path: string,
): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(`${api.url}${path}${ms()}`, { headers: { origin: "http://192.168.1.1" } });
  const body = (await res.json()) as Record<string, unknown>;
  return { status: res.status, body, headers: res.headers };
}

interface Poll {
  status: number;
  body: Record<string, unknown>;
}

/** LuCI's poll loop: GET /api/v1/build/<hash>?<ms> until not 202; throws on an unknown stage as LuCI does. */
async function luciPoll(hash: string): Promise<{ final: Poll; seen: Poll[] }> {
  const seen: Poll[] = [];
  const deadline = Date.now() + 90_000;
  for (;;) {
    const res = await request(api.url, "GET", `/api/v1/build/${hash}${ms()}`, undefined, {
      origin: "http://192.168.1.1",
    });
    const poll = { status: res.status, body: res.body };
    if (res.status !== 202) return { final: poll, seen };
    seen.push(poll);
    const stage = String(res.body.imagebuilder_status);
    if (res.headers.get("x-imagebuilder-status") === "queued") {
      // queued answers are recognised by the header and show queue_position
      expect(res.body).toMatchObject({ detail: "queued", imagebuilder_status: "queued" });
      expect(typeof res.body.queue_position).toBe("number");
    } else if (!KNOWN_STAGES.includes(stage)) {
      throw new Error(`LuCI throws on imagebuilder_status ${stage}`);
    }
    if (Date.now() > deadline) throw new Error("build did not finish");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** LuCI's image choice after a 200. */
function chooseImage(images: Record<string, string>[], filesystem: string, efi: boolean) {
  for (const image of images) {
    if (image.filesystem !== filesystem) continue;
    if (efi ? image.type === "combined-efi" : image.type === "sysupgrade" || image.type === "combined")
      return image;
  }
  return undefined;
}

async function download(binDir: string, name: string): Promise<Buffer> {
  const res = await fetch(`${api.url}/store/${binDir}/${name}`);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

describe("LuCI metadata calls", () => {
  it("follows /api/v1/overview?<ms> to overview.json and reads latest and package_changes", async () => {
    const redirect = await request(api.url, "GET", `/api/v1/overview${ms()}`, undefined, {
      origin: "http://192.168.1.1",
    });
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get("location")).toBe("/json/v1/overview.json");
    expect(redirect.headers.get("access-control-allow-origin")).toBe("*");

    const res = await luciGet("/api/v1/overview");
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.body.latest).toEqual(["24.10.4", "23.05.4"]);
    const branches = res.body.branches as Record<string, { package_changes: Record<string, unknown>[] }>;
    const changes = branches["23.05"]?.package_changes ?? [];
    expect(changes.length).toBeGreaterThan(0);
    for (const change of changes) {
      expect(typeof change.revision).toBe("number");
      for (const key of ["source", "target"]) {
        if (key in change) expect(typeof change[key]).toBe("string");
      }
      if ("mandatory" in change) expect(typeof change.mandatory).toBe("boolean");
    }
  });

  it("follows the old /api/overview (LuCI up to 23.05.3) and reads latest", async () => {
    const redirect = await request(api.url, "GET", `/api/overview${ms()}`);
    expect(redirect.status).toBe(301);
    expect(redirect.headers.get("access-control-allow-origin")).toBe("*");
    const res = await luciGet("/api/overview");
    expect(res.status).toBe(200);
    expect(res.body.latest).toEqual(["24.10.4", "23.05.4"]);
  });

  it("reads {revision} from /api/v1/revision/<version>/<target>", async () => {
    const res = await luciGet("/api/v1/revision/23.05.4/ath79/generic");
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ revision: "r24012-d8dd03c46f" });
    const snapshot = await luciGet("/api/v1/revision/SNAPSHOT/ath79/generic");
    expect(snapshot.body.revision).toMatch(/^r\d+-[0-9a-f]{10}$/);
  });
});

describe("LuCI builds", () => {
  it("builds a comma profile with kernel/libc in the list and picks the squashfs sysupgrade image", async () => {
    // LuCI sends the sorted installed package list, pseudo-packages included.
    const profile = await luciGet("/json/v1/releases/23.05.4/targets/ath79/generic/tplink,archer-c7-v5.json");
    const installed = [
      ...(profile.body.default_packages as string[]),
      ...(profile.body.device_packages as string[]),
      "luci",
      "kernel",
      "libc",
    ];
    const packages = [...new Set(installed)].sort();
    const post = await request(
      api.url,
      "POST",
      `/api/v1/build${ms()}`,
      {
        client: "luci/git-23.051.66410-a505bb1",
        version: "23.05.4",
        target: "ath79/generic",
        profile: "tplink,archer-c7-v5",
        packages,
        diff_packages: true,
        filesystem: "squashfs",
        rootfs_size_mb: null,
      },
      { origin: "http://192.168.1.1" },
    );
    expect([200, 202]).toContain(post.status);
    expect(post.body.status).toBe(post.status);
    expect(post.headers.get("access-control-allow-origin")).toBe("*");
    const hash = String(post.body.request_hash);

    const { final, seen } = await luciPoll(hash);
    for (const poll of seen) {
      // LuCI shows the queue position only when the key is present: only while queued.
      if ("queue_position" in poll.body) expect(poll.body.detail).toBe("queued");
      if (poll.body.detail === "started") expect(KNOWN_STAGES).toContain(poll.body.imagebuilder_status);
    }
    expect(final.status).toBe(200);
    expect(final.body).toMatchObject({ status: 200, imagebuilder_status: "done", id: "tplink_archer-c7-v5" });
    expect((final.body.request as Record<string, unknown>).profile).toBe("tplink_archer-c7-v5");

    const image = chooseImage(final.body.images as Record<string, string>[], "squashfs", false);
    expect(image?.type).toBe("sysupgrade");
    const bytes = await download(String(final.body.bin_dir), String(image?.name));
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(image?.sha256);
  });

  it("accepts rootfs_size_mb as a string and picks the ext4 combined-efi image on x86", async () => {
    const post = await request(api.url, "POST", `/api/v1/build${ms()}`, {
      client: "luci/git-24.0",
      version: "24.10.4",
      target: "x86/64",
      profile: "generic",
      packages: ["base-files", "busybox", "kernel", "libc", "luci"],
      diff_packages: false,
      filesystem: "ext4",
      rootfs_size_mb: "256",
    });
    expect([200, 202]).toContain(post.status);
    expect(post.body.status).toBe(post.status);
    const { final } = await luciPoll(String(post.body.request_hash));
    expect(final.status).toBe(200);
    expect((final.body.request as Record<string, unknown>).rootfs_size_mb).toBe(256);
    const images = final.body.images as Record<string, string>[];
    const image = chooseImage(images, "ext4", true);
    expect(image?.type).toBe("combined-efi");
    expect(chooseImage(images, "ext4", false)?.type).toBe("combined");
    const bytes = await download(String(final.body.bin_dir), String(image?.name));
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(image?.sha256);
  });

  it("gets string details on errors", async () => {
    const res = await request(api.url, "POST", `/api/v1/build${ms()}`, {
      client: "luci/git-24.0",
      version: "23.05.4",
      target: "ath79/generic",
      profile: "tplink,archer-c7-v5",
      packages: ["luci-app-wireguard"],
      rootfs_size_mb: "lots",
    });
    expect(res.status).toBe(422);
    expect(res.body.status).toBe(422);
    expect(typeof res.body.detail).toBe("string");
  });
});
