import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  flushPrefix,
  request,
  startRealToolsMirror,
  startTestServer,
  waitForBuild,
  type JsonResponse,
  type Mirror,
  type TestServer,
} from "./harness.js";
import type { RealToolsMirrorInfo } from "../../fixtures/real-tools/generate-real-mirror.js";

/**
 * The whole server against OpenWrt's real ImageBuilder flow and real opkg, apk and usign
 * (issue #8): HTTP, Redis, the worker, the signed ImageBuilder download, the bubblewrap
 * sandbox without network, the worker-staged feeds, the store. Every failure is asserted
 * twice: the detail a user reads, and the package manager's own words in stderr.
 *
 * All requests are posted up front and built by two worker slots while the tests read them.
 */

type Body = Record<string, unknown>;

/** A file from the squashfs root filesystem inside a firmware image (unsquashfs reads it). */
async function readFromSquashfs(image: Buffer, file: string): Promise<string | undefined> {
  const dir = await mkdtemp(path.join(tmpdir(), "asu-squashfs-"));
  try {
    for (let at = image.indexOf("hsqs"); at !== -1; at = image.indexOf("hsqs", at + 1)) {
      const fs = path.join(dir, `rootfs-${at}`);
      await writeFile(fs, image.subarray(at));
      const out = spawnSync("unsquashfs", ["-cat", fs, file], { encoding: "utf8" });
      if (out.status === 0) return out.stdout;
    }
    return undefined;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");

const OPKG = { version: "24.10.4", target: "ath79/generic", profile: "tplink,archer-c7-v5" };
const ABI = { version: "23.05.4", target: "x86/64", profile: "generic" };
const APK = { version: "SNAPSHOT", target: "x86/64", profile: "generic" };

// Each test waits on its own build, which may queue behind the others on a loaded machine.
describe("builds with OpenWrt's real ImageBuilder flow and package tools", { timeout: 30 * 60_000 }, () => {
  let mirror: Mirror & { info: RealToolsMirrorInfo };
  let api: TestServer;
  const answers = new Map<string, Promise<JsonResponse>>();

  /**
   * A request's own repository. The "custom" feed comes with the key that signed it; the
   * "badsig" feed with a key that did not sign it, so its signature cannot verify.
   */
  function customRepo(kind: "custom" | "badsig", version: string, arch: string, apk: boolean) {
    const folder = mirror.info[kind].feeds[version]?.[arch];
    if (!folder) throw new Error(`the mirror has no ${kind} feed for ${version} ${arch}`);
    const key = mirror.info.custom;
    return {
      repositories: { [kind]: `${mirror.url}/${folder}${apk ? "/packages.adb" : ""}` },
      repository_keys: [apk ? key.apk.publicPem.trim() : key.usign.publicLine],
      // Upstream's default is "replace"; these builds also need the release feeds.
      repositories_mode: "append",
    };
  }

  const scenarios: Record<string, () => Body> = {
    opkgAdditionsRemovalsDefaults: () => ({
      ...OPKG,
      packages: ["hello", "luci-app-bar", "-ppp", "-ppp-mod-pppoe"],
      defaults: "uci set system.@system[0].hostname='asu-real'\n",
    }),
    opkgDiffPackages: () => ({ ...OPKG, packages: ["hello"], diff_packages: true }),
    opkgCustomRepository: () => ({
      ...OPKG,
      packages: ["custom-hello"],
      ...customRepo("custom", OPKG.version, "mips_24kc", false),
    }),
    opkgUnknownPackage: () => ({
      ...OPKG,
      packages: ["custom-hello", "does-not-exist"],
      ...customRepo("custom", OPKG.version, "mips_24kc", false),
    }),
    opkgMissingDependency: () => ({ ...OPKG, packages: ["broken-dep"] }),
    opkgConflict: () => ({ ...OPKG, packages: ["conflict-b", "conflict-a"] }),
    opkgFileClash: () => ({ ...OPKG, packages: ["dnsmasq-full"] }),
    opkgBadSignature: () => ({
      ...OPKG,
      packages: ["badsig-hello"],
      ...customRepo("badsig", OPKG.version, "mips_24kc", false),
    }),
    opkgPostinstFails: () => ({ ...OPKG, packages: ["postinst-fail"] }),
    opkgTooBig: () => ({ ...OPKG, profile: "ubnt,unifi", packages: ["bigpkg"] }),
    opkgWrongRevision: () => ({ ...OPKG, packages: ["hello"], version_code: "r1-0123456789" }),
    abiNames: () => ({ ...ABI, packages: ["foo-tool"], rootfs_size_mb: 16 }),
    apkAdditionsRootfsSize: () => ({
      ...APK,
      packages: ["hello", "luci-app-bar"],
      rootfs_size_mb: 16,
      filesystem: "ext4",
    }),
    apkUnknownPackage: () => ({
      ...APK,
      packages: ["custom-hello", "does-not-exist"],
      ...customRepo("custom", APK.version, "x86_64", true),
    }),
    apkMissingDependency: () => ({ ...APK, packages: ["broken-dep"] }),
    apkConflict: () => ({ ...APK, packages: ["dnsmasq-full"] }),
    apkPostinstFails: () => ({ ...APK, packages: ["postinst-fail"] }),
  };

  beforeAll(async () => {
    mirror = await startRealToolsMirror();
    api = await startTestServer(mirror, {
      overrides: {
        workers: 2,
        job_timeout: "10m",
        allow_defaults: true,
        repository_allow_list: [mirror.url],
      },
    });
    for (const [name, body] of Object.entries(scenarios)) {
      const posted = await request(api.url, "POST", "/api/v1/build", body());
      if (posted.status !== 202) throw new Error(`${name}: POST answered ${posted.status}: ${posted.text}`);
      answers.set(name, waitForBuild(api.url, String(posted.body.request_hash), 30 * 60_000));
    }
  }, 45 * 60_000);

  afterAll(async () => {
    await api?.close();
    if (api) await flushPrefix(api.prefix);
    await mirror?.close();
  });

  async function answer(name: keyof typeof scenarios): Promise<JsonResponse> {
    const res = answers.get(name);
    if (!res) throw new Error(`no request for ${name}`);
    return res;
  }

  /** Downloads every image and checks the bytes against images[].sha256 (LuCI, owut, auc do). */
  async function downloadImages(done: JsonResponse): Promise<Map<string, Buffer>> {
    const images = done.body.images as { name: string; type: string; sha256: string }[];
    expect(images.length).toBeGreaterThan(0);
    const out = new Map<string, Buffer>();
    for (const image of images) {
      const res = await fetch(`${api.url}/store/${String(done.body.bin_dir)}/${image.name}`);
      expect(res.status, image.name).toBe(200);
      const bytes = Buffer.from(await res.arrayBuffer());
      expect(res.headers.get("content-length")).toBe(String(bytes.length));
      expect(sha256(bytes), image.name).toBe(image.sha256);
      out.set(image.type, bytes);
    }
    return out;
  }

  function failed(res: JsonResponse, detail: string | RegExp, stderr: string | RegExp): void {
    expect(res.status, res.text).toBe(500);
    expect(res.body.imagebuilder_status).toBe("failed");
    if (typeof detail === "string") expect(res.body.detail).toBe(detail);
    else expect(res.body.detail).toMatch(detail);
    const text = `${String(res.body.stdout)}\n${String(res.body.stderr)}`;
    if (typeof stderr === "string") expect(text).toContain(stderr);
    else expect(text).toMatch(stderr);
    // Host paths of the worker never reach the client.
    expect(text).not.toContain(api.workDir);
  }

  it("opkg: installs additions, drops removed defaults and bakes the defaults script in", async () => {
    const done = await answer("opkgAdditionsRemovalsDefaults");
    expect(done.status, done.text).toBe(200);
    const manifest = done.body.manifest as Record<string, string>;
    expect(manifest).toMatchObject({ hello: expect.any(String), "luci-app-bar": expect.any(String) });
    expect(manifest["base-files"]).toBeDefined();
    expect(manifest.ppp).toBeUndefined();
    expect(manifest["ppp-mod-pppoe"]).toBeUndefined();
    expect(done.body.build_cmd).toContain("FILES=/builder/files");
    // The host check and the local keys were done once, when the ImageBuilder was installed.
    expect(String(done.body.stdout)).not.toContain("Checking 'true'");
    expect(String(done.body.stderr)).not.toContain("Generate local signing keys");
    const images = await downloadImages(done);
    expect([...images.keys()]).toContain("sysupgrade");
    // The request's defaults end up in the image's root filesystem, byte for byte.
    const script = await readFromSquashfs(
      images.get("sysupgrade") as Buffer,
      "etc/uci-defaults/99-asu-defaults",
    );
    expect(script).toBe("uci set system.@system[0].hostname='asu-real'\n");
  });

  it("opkg: diff_packages removes the defaults the request leaves out", async () => {
    const done = await answer("opkgDiffPackages");
    expect(done.status, done.text).toBe(200);
    const manifest = done.body.manifest as Record<string, string>;
    expect(manifest.hello).toBeDefined();
    expect(manifest.dnsmasq).toBeUndefined();
    expect(manifest.ppp).toBeUndefined();
    await downloadImages(done);
  });

  it("opkg: a custom repository with its own key", async () => {
    const done = await answer("opkgCustomRepository");
    expect(done.status, done.text).toBe(200);
    expect((done.body.manifest as Record<string, string>)["custom-hello"]).toBe("1.0-r1");
  });

  it("opkg: an unknown package", async () => {
    failed(
      await answer("opkgUnknownPackage"),
      /^Error: Impossible package selection: missing \(does-not-exist\)/,
      "opkg_install_cmd: Cannot install package does-not-exist.",
    );
  });

  it("opkg: a missing dependency names the package that is absent", async () => {
    failed(
      await answer("opkgMissingDependency"),
      /^Error: Impossible package selection: missing \(nonexistent-lib\)/,
      "pkg_hash_check_unresolved: cannot find dependency nonexistent-lib for broken-dep",
    );
  });

  it("opkg: conflicting packages", async () => {
    failed(
      await answer("opkgConflict"),
      /^Error: Impossible package selection: .*conflicts \(conflict-a, conflict-b\)/,
      /check_conflicts_for: The following packages conflict with conflict-[ab]:/,
    );
  });

  it("opkg: dnsmasq-full without -dnsmasq clashes on a file", async () => {
    failed(
      await answer("opkgFileClash"),
      /dnsmasq-full and dnsmasq both install \/etc\/init\.d\/dnsmasq/,
      "But that file is already provided by package  * dnsmasq-full",
    );
  });

  it("opkg: a repository whose signature does not verify with the request's keys", async () => {
    failed(
      await answer("opkgBadSignature"),
      /^Error: The signature of a package feed did not verify\. Check that repository_keys holds/,
      "Signature check failed.",
    );
  });

  it("opkg: a failing postinst names the package", async () => {
    failed(
      await answer("opkgPostinstFails"),
      /postinst-fail/,
      'pkg_run_script: package "postinst-fail" postinst script returned status 1.',
    );
  });

  it("opkg: an image too big for the flash (make exits 0 and writes no image)", async () => {
    failed(await answer("opkgTooBig"), "Error: Selected packages exceed device storage", "is too big");
  });

  it("opkg: a revision other than the one requested", async () => {
    const res = await answer("opkgWrongRevision");
    expect(res.status).toBe(500);
    expect(res.body.detail).toBe(
      `Error: Received incorrect version ${mirror.info.versions["24.10.4"]?.revision ?? "?"} (requested r1-0123456789)`,
    );
  });

  it("opkg with ABI-versioned names: the manifest names libraries without their ABI suffix; rootfs_size_mb sizes the disk", async () => {
    const done = await answer("abiNames");
    expect(done.status, done.text).toBe(200);
    const manifest = done.body.manifest as Record<string, string>;
    expect(manifest["foo-tool"]).toBeDefined();
    expect(manifest.libfoo).toBeDefined();
    expect(Object.keys(manifest).some((n) => /^libfoo\d+$/.test(n))).toBe(false);
    const images = await downloadImages(done);
    const combined = images.get("combined");
    expect(combined).toBeDefined();
    expect(gunzipSync(combined as Buffer).length).toBeGreaterThanOrEqual(16 * 1024 * 1024);
  });

  it("apk: installs additions; rootfs_size_mb sizes the disk; filesystem is ignored as upstream does", async () => {
    const done = await answer("apkAdditionsRootfsSize");
    expect(done.status, done.text).toBe(200);
    // OpenWrt's ImageBuilder has no ROOTFS_FILESYSTEM; it is passed only to those that do.
    expect((done.body.build_cmd as string[]).some((a) => a.startsWith("ROOTFS_FILESYSTEM"))).toBe(false);
    expect(done.body.build_cmd).toContain("ROOTFS_PARTSIZE=16");
    expect(String(done.body.stdout)).not.toContain("Checking 'true'");
    expect(String(done.body.stderr)).not.toContain("Generate local signing keys");
    const manifest = done.body.manifest as Record<string, string>;
    expect(manifest).toMatchObject({ hello: expect.any(String), "luci-app-bar": expect.any(String) });
    const images = await downloadImages(done);
    const combined = images.get("combined");
    expect(combined).toBeDefined();
    expect(gunzipSync(combined as Buffer).length).toBeGreaterThanOrEqual(16 * 1024 * 1024);
  });

  it("apk: an unknown package", async () => {
    failed(
      await answer("apkUnknownPackage"),
      /^Error: Impossible package selection: missing \(does-not-exist\)/,
      "does-not-exist (no such package):",
    );
  });

  it("apk: a missing dependency names the package that is absent", async () => {
    failed(
      await answer("apkMissingDependency"),
      /^Error: Impossible package selection: missing \(nonexistent-lib\)/,
      "nonexistent-lib (no such package):",
    );
  });

  it("apk: conflicting packages (breaks)", async () => {
    failed(
      await answer("apkConflict"),
      /^Error: Impossible package selection: .*conflicts \(dnsmasq, dnsmasq-full\)/,
      /breaks: dnsmasq-full-[^\s[]+\[!dnsmasq\]/,
    );
  });

  it("apk: a failing post-install script names the package", async () => {
    failed(await answer("apkPostinstFails"), /postinst-fail/, /post-install has failed with exit code 1/);
  });
});

describe("concurrent builds on one real opkg ImageBuilder (issue #8)", { timeout: 30 * 60_000 }, () => {
  let mirror: Mirror & { info: RealToolsMirrorInfo };
  let api: TestServer;

  beforeAll(async () => {
    mirror = await startRealToolsMirror();
    api = await startTestServer(mirror, { overrides: { workers: 2, job_timeout: "10m" } });
  }, 45 * 60_000);

  afterAll(async () => {
    await api?.close();
    if (api) await flushPrefix(api.prefix);
    await mirror?.close();
  });

  it("both succeed: each build has its own opkg lists and keys, not a shared dl/", async () => {
    // Before, every workspace shared one dl/, where opkg keeps its lists and signatures, and
    // two builds at once failed with "Signature check failed" / "Cannot install package base-files".
    const bodies = [
      { ...OPKG, packages: ["hello", "foo-tool"] },
      { ...OPKG, packages: ["luci-app-bar", "foo-tool"] },
      { ...OPKG, profile: "glinet,gl-ar300m16", packages: ["hello"] },
      { ...OPKG, profile: "glinet,gl-ar300m16", packages: ["luci-app-bar"] },
    ];
    const posted = await Promise.all(bodies.map((b) => request(api.url, "POST", "/api/v1/build", b)));
    const done = await Promise.all(
      posted.map((p) => waitForBuild(api.url, String(p.body.request_hash), 30 * 60_000)),
    );
    for (const d of done) expect(d.status, d.text).toBe(200);
    // They really ran side by side: two worker slots, each window overlapping another's.
    const windows = done.map((d) => {
      const end = Date.parse(String(d.body.build_at));
      return { start: end - (d.body.timings as { total_ms: number }).total_ms, end };
    });
    const overlapping = windows.some((a, i) =>
      windows.some((b, j) => i !== j && a.start < b.end && b.start < a.end),
    );
    expect(overlapping).toBe(true);
  });
});
