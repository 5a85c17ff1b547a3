import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { appendFile, mkdtemp, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { publishSnapshot } from "../../fixtures/mirror/generate-mirror.js";
import { snapshotRevision } from "../../fixtures/mirror/mirror-catalog.js";
import { generateKeyPair, verifyMessage } from "../../src/shared/usign.js";
import {
  build,
  flushPrefix,
  request,
  startMirror,
  startTestServer,
  type JsonResponse,
  type Mirror,
  type TestServer,
} from "./harness.js";

let mirror: Mirror;
let server: TestServer;
const signingKey = generateKeyPair("asu-ts test");
const extraServers: TestServer[] = [];

beforeAll(async () => {
  mirror = await startMirror({ writable: true });
  const keyDir = await mkdtemp(path.join(tmpdir(), "asu-key-"));
  const keyFile = path.join(keyDir, "asu.key");
  await writeFile(keyFile, signingKey.secretFile);
  server = await startTestServer(mirror, {
    overrides: {
      allow_defaults: true,
      signing_key: keyFile,
      repository_allow_list: [mirror.url],
      workers: 2,
      imagebuilder_check_interval: "1s",
    },
  });
});

afterAll(async () => {
  for (const s of [server, ...extraServers]) {
    await s?.close();
    if (s) await flushPrefix(s.prefix);
  }
  await mirror?.close();
});

async function download(name: string, hash: string): Promise<{ bytes: Buffer; res: Response }> {
  const res = await fetch(`${server.url}/store/${hash}/${name}`);
  return { bytes: Buffer.from(await res.arrayBuffer()), res };
}

/** Reads one member of an image (a tar, gzip'd for .gz) with system tar. */
async function imageMember(image: Buffer, name: string, member: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "asu-image-"));
  const file = path.join(dir, name);
  await writeFile(file, image);
  const args = name.endsWith(".gz") ? ["-xzOf", file, member] : ["-xOf", file, member];
  return execFileSync("tar", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
}

type Image = { name: string; type: string; filesystem: string; sha256: string };

function imagesOf(res: JsonResponse): Image[] {
  return res.body.images as Image[];
}

function archiveFetches(): number {
  return mirror.requests.filter((p) => /openwrt-imagebuilder-.*\.tar\.(zst|xz)$/.test(p)).length;
}

describe("builds for each mirror version", () => {
  it("24.10.4 (opkg): 200 with the contract's fields; the image holds the requested packages and its sha256 matches", async () => {
    const res = await build(server.url, {
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink,archer-c7-v5",
      packages: ["luci", "tcpdump"],
      client: "owut/2025.01.01",
    });
    expect(res.status, res.text).toBe(200);
    expect(res.body).toMatchObject({
      status: 200,
      detail: "done",
      imagebuilder_status: "done",
      id: "tplink_archer-c7-v5",
      target: "ath79/generic",
      version_number: "24.10.4",
      version_code: mirror.info.versions["24.10.4"]?.revision,
      request: {
        version: "24.10.4",
        profile: "tplink_archer-c7-v5",
        version_code: "",
        defaults: null,
        rootfs_size_mb: null,
      },
    });
    expect(res.headers.get("x-imagebuilder-status")).toBe("done");
    expect(res.body.bin_dir).toBe(res.body.request_hash);
    expect(res.body.build_cmd).toEqual(
      expect.arrayContaining(["make", "image", "PROFILE=tplink_archer-c7-v5"]),
    );
    const manifest = res.body.manifest as Record<string, string>;
    expect(manifest.luci).toBeDefined();
    expect(manifest.tcpdump).toBeDefined();
    expect(manifest.libubox).toBeDefined(); // STRIP_ABI=1: no ABI suffix

    const sysupgrade = imagesOf(res).find((i) => i.type === "sysupgrade");
    expect(sysupgrade).toBeDefined();
    const { bytes, res: dl } = await download(sysupgrade!.name, String(res.body.request_hash));
    expect(dl.status).toBe(200);
    expect(dl.headers.get("content-length")).toBe(String(bytes.length));
    expect(dl.headers.get("content-type")).toBe("application/octet-stream");
    expect(dl.headers.get("x-content-type-options")).toBe("nosniff");
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(sysupgrade!.sha256);
    const status = await imageMember(bytes, sysupgrade!.name, "usr/lib/opkg/status");
    expect(status).toContain("Package: luci\n");
    expect(status).toContain("Package: tcpdump\n");

    // signed outside the sandbox with the server's key, as a detached .sig
    const sig = await download(`${sysupgrade!.name}.sig`, String(res.body.request_hash));
    expect(sig.res.status).toBe(200);
    expect(verifyMessage(bytes, sig.bytes.toString("utf8"), signingKey.publicLine)).toEqual({ ok: true });
  });

  it("23.05.4 (ABI-versioned opkg): defaults land in the image when the server allows them", async () => {
    const script = "uci set system.@system[0].hostname='asu-test'\nuci commit system\n";
    const res = await build(server.url, {
      version: "23.05.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["tcpdump"],
      defaults: script,
    });
    expect(res.status, res.text).toBe(200);
    expect((res.body.request as Record<string, unknown>).defaults).toBe(script);
    const image = imagesOf(res).find((i) => i.type === "sysupgrade")!;
    const { bytes } = await download(image.name, String(res.body.request_hash));
    expect(await imageMember(bytes, image.name, "etc/uci-defaults/99-asu-defaults")).toBe(script);
  });

  it("SNAPSHOT (apk): diff_packages removes defaults the request leaves out; filesystem selects ext4", async () => {
    const profiles = await request(mirror.url, "GET", "/snapshots/targets/x86/64/profiles.json");
    const defaults = profiles.body.default_packages as string[];
    expect(defaults).toContain("dnsmasq");
    const wanted = defaults.filter((p) => p !== "dnsmasq" && p !== "odhcpd-ipv6only").concat(["htop"]);
    const res = await build(server.url, {
      version: "SNAPSHOT",
      target: "x86/64",
      profile: "generic",
      packages: wanted,
      diff_packages: true,
      filesystem: "ext4",
    });
    expect(res.status, res.text).toBe(200);
    const manifest = res.body.manifest as Record<string, string>;
    expect(manifest.htop).toBeDefined();
    expect(manifest.dnsmasq).toBeUndefined();
    expect(manifest["odhcpd-ipv6only"]).toBeUndefined();
    const images = imagesOf(res);
    expect(images.length).toBeGreaterThan(0);
    expect(images.every((i) => i.filesystem === "ext4")).toBe(true);
    const image = images.find((i) => i.type === "combined")!;
    const { bytes } = await download(image.name, String(res.body.request_hash));
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(image.sha256);
    const installed = await imageMember(bytes, image.name, "lib/apk/db/installed");
    expect(installed).toContain("P:htop\n");
    expect(installed).not.toContain("P:dnsmasq\n");
  });
});

describe("ImageBuilder reuse and refresh", () => {
  it("a second profile of the same target reuses the unpacked ImageBuilder and fetches no archive", async () => {
    const first = await build(server.url, {
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["vim"],
    });
    expect(first.status, first.text).toBe(200);
    const fetched = archiveFetches();
    const second = await build(server.url, {
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c6-v2",
      packages: ["vim"],
    });
    expect(second.status, second.text).toBe(200);
    expect(archiveFetches()).toBe(fetched);
  });

  it("picks up a new snapshot revision", async () => {
    const before = await build(server.url, {
      version: "SNAPSHOT",
      target: "x86/64",
      profile: "generic",
      packages: ["vim"],
    });
    expect(before.status, before.text).toBe(200);
    expect(before.body.version_code).toBe(snapshotRevision(mirror.info.snapshotRevision));
    await publishSnapshot(mirror.info, 30042);
    await new Promise((r) => setTimeout(r, 1100)); // imagebuilder_check_interval = 1s
    const after = await build(server.url, {
      version: "SNAPSHOT",
      target: "x86/64",
      profile: "generic",
      packages: ["curl"],
    });
    expect(after.status, after.text).toBe(200);
    expect(after.body.version_code).toBe(snapshotRevision(30042));
  });
});

describe("build failures give the contract's detail", () => {
  async function failure(body: Record<string, unknown>, base = server.url): Promise<JsonResponse> {
    const res = await build(base, body);
    expect(res.status, res.text).toBe(500);
    expect(res.body.status).toBe(500);
    expect(res.body.imagebuilder_status).toBe("failed");
    expect(res.headers.get("x-imagebuilder-status")).toBe("failed");
    expect(typeof res.body.stderr).toBe("string");
    return res;
  }
  const archer = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };

  it("conflicting packages", async () => {
    const res = await failure({ ...archer, packages: ["dnsmasq-full", "dnsmasq"] });
    expect(res.body.detail).toBe("Error: Impossible package selection: conflicts (dnsmasq, dnsmasq-full)");
  });

  it("a missing package from a custom repository (no 422 check is possible there)", async () => {
    const res = await failure({
      ...archer,
      packages: ["no-such-package-at-all"],
      repositories: { extra: `${mirror.url}/releases/24.10.4/packages/mips_24kc/routing` },
      repositories_mode: "append",
    });
    expect(res.body.detail).toBe("Error: Impossible package selection: missing (no-such-package-at-all)");
  });

  it("packages that do not fit the flash", async () => {
    const res = await failure({
      version: "23.05.4",
      target: "ath79/generic",
      profile: "tplink_tl-wr842n-v3",
      packages: ["luci", "big-package-a"],
    });
    expect(res.body.detail).toBe("Error: Selected packages exceed device storage");
  });

  it("a revision other than the one requested", async () => {
    const res = await failure({ ...archer, packages: ["tcpdump"], version_code: "r1-0000000000" });
    expect(res.body.detail).toBe(
      `Error: Received incorrect version ${mirror.info.versions["24.10.4"]?.revision} (requested r1-0000000000)`,
    );
  });

  it("a sha256sums signed by another key", async () => {
    const wrong = await startTestServer(mirror, {
      overrides: { branches: { "24.10": { pubkey: generateKeyPair().publicLine } } },
    });
    extraServers.push(wrong);
    const res = await failure({ ...archer, packages: ["curl"] }, wrong.url);
    expect(String(res.body.detail)).toMatch(
      /^Error: Could not prepare the ImageBuilder: the signature .*sha256sums\.sig does not verify with branches\.24\.10\.pubkey/,
    );
    expect(String(res.body.detail)).toContain("refusing the ImageBuilder");
  });

  it("a tampered ImageBuilder archive", async () => {
    const dir = path.join(mirror.dir, "releases/23.05.4/targets/x86/64");
    const archive = (await readdir(dir)).find((f) => f.startsWith("openwrt-imagebuilder-"))!;
    await appendFile(path.join(dir, archive), "tampered");
    const res = await failure({
      version: "23.05.4",
      target: "x86/64",
      profile: "generic",
      packages: ["curl"],
    });
    expect(String(res.body.detail)).toMatch(
      new RegExp(
        `^Error: Could not prepare the ImageBuilder: sha256 mismatch for ${archive.replace(/\./g, "\\.")}`,
      ),
    );
  });

  it("job_timeout stops a build and leaves no process behind", async () => {
    const slow = await startTestServer(mirror, { overrides: { job_timeout: "1s" } });
    extraServers.push(slow);
    const res = await failure({ ...archer, packages: ["htop", "curl"] }, slow.url);
    expect(String(res.body.detail)).toMatch(/^Error: Build timed out after 1 s/);
    // Waits for the killed process group to be reaped, instead of sleeping a fixed time.
    await vi.waitFor(
      () => {
        const leftovers = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })
          .split("\n")
          .filter((line) => line.includes(slow.workDir));
        expect(leftovers).toEqual([]);
      },
      { timeout: 5_000, interval: 100 },
    );
  });
});

/** Entries of every workspaces folder under a server's ImageBuilder cache. */
async function workspaceEntries(cachePath: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (!entry.isDirectory()) continue;
      const sub = path.join(dir, entry.name);
      if (entry.name === "workspaces") found.push(...(await readdir(sub)).map((n) => path.join(sub, n)));
      else if (depth < 5) await walk(sub, depth + 1);
    }
  };
  await walk(path.join(cachePath, "imagebuilders"), 0);
  return found;
}

describe("workers", () => {
  it("a finished build's workspace is removed after its answer, and is gone once the server has shut down", async () => {
    const own = await startTestServer(mirror, { overrides: { workers: 1 } });
    extraServers.push(own);
    const res = await build(own.url, {
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["tcpdump"],
    });
    expect(res.status, res.text).toBe(200);
    // Shutdown waits for the removal that runs in the background (issue #13).
    await own.close();
    expect(await workspaceEntries(own.config.cache_path)).toEqual([]);
  });

  it("two builds at once on two worker slots do not interfere", async () => {
    const bodies = [
      { version: "24.10.4", target: "ath79/generic", profile: "netgear_wndr3700", packages: ["htop"] },
      { version: "24.10.4", target: "ath79/generic", profile: "glinet_gl-ar300m16", packages: ["curl"] },
    ];
    const results = await Promise.all(bodies.map((b) => build(server.url, b)));
    for (const [i, res] of results.entries()) {
      expect(res.status, res.text).toBe(200);
      expect(res.body.id).toBe(bodies[i]?.profile);
      const image = imagesOf(res).find((im) => im.type === "sysupgrade")!;
      const { bytes } = await download(image.name, String(res.body.request_hash));
      expect(createHash("sha256").update(bytes).digest("hex")).toBe(image.sha256);
      const status = await imageMember(bytes, image.name, "usr/lib/opkg/status");
      expect(status).toContain(`Package: ${bodies[i]?.packages[0]}\n`);
    }
  });
});
