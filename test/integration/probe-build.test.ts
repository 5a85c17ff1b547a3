import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, writeFileSync } from "node:fs";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateMirror, type ProbeSpec } from "../../fixtures/mirror/generate-mirror.js";
import { IMAGEBUILDER_FILES } from "../../fixtures/mirror/imagebuilder-tool.js";
import { startMirrorServer } from "../../fixtures/mirror/mirror-server.js";
import { generateKeyPair, verifyMessage } from "../../src/shared/usign.js";
import {
  build,
  flushPrefix,
  REDIS_URL,
  request,
  startTestServer,
  type JsonResponse,
  type Mirror,
  type TestServer,
} from "./harness.js";

/**
 * Issue #9: a build attacks the whole server from inside the sandbox. The mirror's ImageBuilders
 * carry the probe (fixtures/mirror/imagebuilder-probe.ts), which tries Redis, the API, cloud
 * metadata, host files, writes outside its workspace and traps in BIN_DIR, during `make
 * manifest` and at the end of `make image`. This file checks what a user and an operator see.
 */

const tag = randomBytes(6).toString("hex");
const prefix = `asu-test-probe-${tag}`;
const forgedHash = createHash("sha256").update(`forged ${tag}`).digest("hex");
const forgedToken = `ASU-PROBE-FORGED-${tag}`;
const secretText = `ASU-PROBE-SECRET-${randomBytes(12).toString("hex")}\n`;
const victimText = "host file, must stay as it is\n";
const signingKey = generateKeyPair("asu-ts probe test");
const defaultsScript = "uci set system.@system[0].hostname='probe-test'\nuci commit system\n";
const JOB_TIMEOUT_S = 40;
const tmpCanary = path.join("/tmp", `.asu-probe-canary-${tag}`);

let mirrorDir: string;
let mirror: Mirror;
let workDir: string;
let server: TestServer;
let spec: ProbeSpec;
let probed: { res: JsonResponse; ms: number };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const address = srv.address();
      srv.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

/** The host's own non-loopback IPv4 addresses (Redis and the API must not be reached there either). */
function hostAddresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flatMap((list) => list ?? [])
    .filter((a) => a.family === "IPv4" && !a.internal)
    .map((a) => a.address);
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, entry.name);
    out.push(p);
    if (entry.isDirectory()) out.push(...(await walk(p)));
  }
  return out;
}

/** Every value under the server's Redis prefix, as text, whatever the key's type. */
async function redisContents(redis: Redis): Promise<Map<string, string>> {
  const values = new Map<string, string>();
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
    cursor = next;
    for (const key of keys) {
      const type = await redis.type(key);
      const value =
        type === "string"
          ? await redis.get(key)
          : type === "hash"
            ? await redis.hgetall(key)
            : type === "list"
              ? await redis.lrange(key, 0, -1)
              : type === "set"
                ? await redis.smembers(key)
                : type === "zset"
                  ? await redis.zrange(key, 0, -1)
                  : type === "stream"
                    ? await redis.xrange(key, "-", "+")
                    : type;
      values.set(key, JSON.stringify(value));
    }
  } while (cursor !== "0");
  return values;
}

function probeLines(res: JsonResponse): string[] {
  return `${String(res.body.stdout)}\n${String(res.body.stderr)}`
    .split("\n")
    .filter((l) => l.startsWith("PROBE-"));
}

/** The ids one phase reported with the given verdict. */
function idsOf(lines: string[], verdict: string, phase: "manifest" | "image"): Set<string> {
  const start = `PROBE-${verdict} [${phase}] `;
  return new Set(
    lines.filter((l) => l.startsWith(start)).map((l) => l.slice(start.length).split(": ")[0] ?? ""),
  );
}

function imageMember(image: Buffer, name: string, member: string, dir: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, image);
  const args = name.endsWith(".gz") ? ["-xzOf", file, member] : ["-xOf", file, member];
  return execFileSync("tar", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
}

beforeAll(async () => {
  workDir = await mkdtemp(path.join(os.tmpdir(), "asu-work-probe-"));
  mirrorDir = await mkdtemp(path.join(os.tmpdir(), "asu-mirror-probe-"));
  const keyFile = path.join(workDir, "asu.key");
  await writeFile(keyFile, signingKey.secretFile);
  await writeFile(path.join(workDir, "secret.txt"), secretText);
  await writeFile(path.join(workDir, "victim.conf"), victimText);
  const publicPath = path.join(workDir, "public");
  const cachePath = path.join(workDir, "cache");
  // A file in each folder the build must not write: how the probe tells the host's folder from
  // an empty one of the same name in its own /tmp.
  for (const dir of [workDir, publicPath, path.join(publicPath, "store"), cachePath]) {
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, ".asu-probe-canary"), "canary\n");
  }
  await writeFile(tmpCanary, "canary\n");
  const port = await freePort();
  const hosts = hostAddresses();
  spec = {
    tag,
    redis: {
      hosts: ["127.0.0.1", "::1", ...hosts],
      port: Number(new URL(REDIS_URL).port || 6379),
      prefix,
      forgedHash,
      forgedToken,
    },
    api: { hosts: ["127.0.0.1", ...hosts], port },
    otherAddresses: [
      { host: "169.254.169.254", port: 80 },
      { host: "10.0.0.1", port: 80 },
    ],
    readTargets: [
      { id: "shadow", path: "/etc/shadow" },
      { id: "signing-key", path: keyFile },
      { id: "secret", path: path.join(workDir, "secret.txt") },
      { id: "checkout", path: path.join(process.cwd(), "package.json") },
    ],
    signingKey: keyFile,
    secretFile: path.join(workDir, "secret.txt"),
    victimFile: path.join(workDir, "victim.conf"),
    workerPid: process.pid,
    writeTargets: [
      { id: "tmp", dir: "/tmp", canary: path.basename(tmpCanary) },
      { id: "workdir", dir: workDir, canary: ".asu-probe-canary" },
      { id: "public", dir: publicPath, canary: ".asu-probe-canary" },
      { id: "store", dir: path.join(publicPath, "store"), canary: ".asu-probe-canary" },
      { id: "cache", dir: cachePath, canary: ".asu-probe-canary" },
      { id: "checkout", dir: process.cwd(), canary: "package.json" },
    ],
  };
  const info = await generateMirror({ dir: mirrorDir, probe: spec });
  const mirrorServer = await startMirrorServer({ dir: mirrorDir });
  mirror = {
    info,
    url: mirrorServer.url,
    requests: mirrorServer.requests,
    dir: mirrorDir,
    close: () => mirrorServer.close(),
  };
  server = await startTestServer(mirror, {
    workDir,
    prefix,
    overrides: {
      signing_key: keyFile,
      allow_defaults: true,
      port,
      job_timeout: `${JOB_TIMEOUT_S}s`,
    },
  });
  expect(server.url).toBe(`http://127.0.0.1:${port}`);

  const started = Date.now();
  const res = await build(
    server.url,
    {
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["tcpdump"],
      defaults: defaultsScript,
    },
    (JOB_TIMEOUT_S + 10) * 1000,
  );
  probed = { res, ms: Date.now() - started };
});

afterAll(async () => {
  // Fastify keeps keep-alive connections for 72 s, and close() ends only those idle at that
  // moment: one of this test's own fetch connections could hold the shutdown for 70 s.
  server?.server.app?.server.closeAllConnections();
  await server?.close();
  await flushPrefix(prefix);
  await mirror?.close();
  await rm(tmpCanary, { force: true });
  await rm(mirrorDir, { recursive: true, force: true });
  await rm(workDir, { recursive: true, force: true });
});

describe("a build that attacks the server from inside the sandbox", () => {
  it("answers 200 within job_timeout: nothing the probe left is listed in profiles.json", () => {
    // The probe runs after the real images, profiles.json and sha256sums are written, and the
    // worker reads only the images profiles.json lists, so its traps change nothing: 200.
    expect(probed.res.status, probed.res.text).toBe(200);
    expect(probed.res.body).toMatchObject({ status: 200, detail: "done", imagebuilder_status: "done" });
    expect(probed.ms).toBeLessThan(JOB_TIMEOUT_S * 1000);
    // The manifest is the one make manifest printed, before the probe's last step ran.
    expect(probed.res.body.manifest).toMatchObject({
      tcpdump: expect.any(String),
      "base-files": expect.any(String),
    });
  });

  it("every attack is reported blocked (or planted, for the worker's traps), none worked", () => {
    const lines = probeLines(probed.res);
    expect(
      lines.filter((l) => l.startsWith("PROBE-OK")),
      lines.join("\n"),
    ).toEqual([]);
    const everywhere = [
      ...spec.redis.hosts.map((h) => `redis-${h}`),
      ...spec.api.hosts.map((h) => `api-${h}`),
      "net-169.254.169.254",
      "net-10.0.0.1",
      ...spec.readTargets.map((t) => `read-${t.id}`),
      "read-private",
      "read-proc1-environ",
      "read-worker-proc",
      "signal-worker",
      "write-etc-passwd",
      "write-usr-bin",
      "poison-imagebuilder",
      "poison-package-cache",
      "write-usr",
      "write-usr-bin-dir",
      ...spec.writeTargets.map((t) => `write-${t.id}`),
      "write-files-defaults",
      "write-files",
      "link-files",
      "link-files-defaults",
      "umount-files",
    ];
    const manifestBlocked = idsOf(lines, "BLOCKED", "manifest");
    const manifestPlanted = idsOf(lines, "PLANTED", "manifest");
    for (const id of everywhere) expect(manifestBlocked, `[manifest] ${id}`).toContain(id);
    // Renaming FILES (a mount point) fails; renaming its parent may work, but only inside the
    // sandbox: make image then gets FILES as the worker wrote it (files-after-manifest).
    for (const id of ["replace-files", "replace-files-parent"]) {
      expect(manifestBlocked.has(id) || manifestPlanted.has(id), `[manifest] ${id}`).toBe(true);
    }
    const imageBlocked = idsOf(lines, "BLOCKED", "image");
    for (const id of [...everywhere, "files-after-manifest", "survive-manifest", "hardlink-signing-key"]) {
      expect(imageBlocked, `[image] ${id}`).toContain(id);
    }
    const imagePlanted = idsOf(lines, "PLANTED", "image");
    for (const id of [
      "survive",
      "link-zz-manifest",
      "link-image-sig",
      "link-leak-bin",
      "link-sha256sums",
      "fifo",
      "fifo-manifest",
      "sparse",
    ]) {
      expect(imagePlanted, `[image] ${id}`).toContain(id);
    }
    // The traps carry the names the worker publishes: the sysupgrade image's .sig and the manifest.
    const images = probed.res.body.images as { name: string; type: string }[];
    const sysupgrade = images.find((i) => i.type === "sysupgrade")?.name ?? "none";
    expect(lines).toContainEqual(expect.stringContaining(`link-image-sig: ${sysupgrade}.sig -> `));
    expect(lines).toContainEqual(
      expect.stringContaining(`fifo-manifest: ${String(probed.res.body.image_prefix)}.manifest is a FIFO`),
    );
    expect(lines).toContain("PROBE-DONE [manifest]");
    expect(lines).toContain("PROBE-DONE [image]");
    const text = JSON.stringify(probed.res.body);
    expect(text).not.toContain(secretText.trim());
    expect(text).not.toContain(signingKey.secretFile.split("\n")[1]);
  });

  it("Redis holds no forged result and nothing of the attacker's under the server's prefix", async () => {
    const redis = new Redis(REDIS_URL);
    try {
      expect(await redis.exists(`${prefix}:result:${forgedHash}`)).toBe(0);
      expect((await request(server.url, "GET", `/api/v1/build/${forgedHash}`)).status).toBe(404);
      const contents = await redisContents(redis);
      expect(contents.size).toBeGreaterThan(0);
      for (const [key, value] of contents) {
        expect(value, key).not.toContain(forgedToken);
        expect(value, key).not.toContain(secretText.trim());
        expect(value, key).not.toContain(signingKey.secretFile.split("\n")[1]);
      }
    } finally {
      redis.disconnect();
    }
  });

  it("the store holds exactly the listed images, the worker's manifest and signatures", async () => {
    const body = probed.res.body;
    const hash = String(body.request_hash);
    const images = body.images as { name: string; type: string; sha256: string }[];
    const signed = images.filter((i) => ["sysupgrade", "factory"].includes(i.type));
    expect(signed.length).toBeGreaterThan(0);
    const expected = [
      ...images.map((i) => i.name),
      `${String(body.image_prefix)}.manifest`,
      ...signed.map((i) => `${i.name}.sig`),
    ].sort();
    const dir = path.join(server.config.public_path, "store", hash);
    expect((await readdir(dir)).sort()).toEqual(expected);
    for (const name of expected) {
      const st = await lstat(path.join(dir, name));
      expect(st.isFile(), name).toBe(true);
      const bytes = await readFile(path.join(dir, name));
      expect(bytes.includes(secretText.trim()), name).toBe(false);
      expect(bytes.includes(signingKey.secretFile.split("\n")[1] as string), name).toBe(false);
    }
    for (const name of ["zz.manifest", "leak.bin", "sha256sums", "asu-probe-sparse.bin", "asu-probe.fifo"]) {
      const res = await fetch(`${server.url}/store/${hash}/${name}`);
      expect(res.status, name).toBe(404);
      await res.arrayBuffer();
    }

    const unpack = await mkdtemp(path.join(os.tmpdir(), "asu-image-probe-"));
    try {
      for (const image of images) {
        const res = await fetch(`${server.url}/store/${hash}/${image.name}`);
        expect(res.status, image.name).toBe(200);
        const bytes = Buffer.from(await res.arrayBuffer());
        expect(createHash("sha256").update(bytes).digest("hex"), image.name).toBe(image.sha256);
        expect(imageMember(bytes, image.name, "etc/uci-defaults/99-asu-defaults", unpack)).toBe(
          defaultsScript,
        );
        if (signed.includes(image)) {
          // The server's own signature, not the file the planted `.sig` link pointed at.
          const sig = await (await fetch(`${server.url}/store/${hash}/${image.name}.sig`)).text();
          expect(verifyMessage(bytes, sig, signingKey.publicLine)).toEqual({ ok: true });
        }
      }
    } finally {
      await rm(unpack, { recursive: true, force: true });
    }
  });

  it("the host is unchanged: victim file, checkout, cache, store, /tmp, /usr; no process left", async () => {
    expect(await readFile(spec.victimFile, "utf8")).toBe(victimText);
    const marker = `asu-probe-marker-${tag}`;
    const everywhere = [
      ...(await walk(workDir)),
      ...(await readdir(process.cwd())).map((n) => path.join(process.cwd(), n)),
      ...(await readdir("/tmp")).map((n) => path.join("/tmp", n)),
      ...(await readdir(os.tmpdir())).map((n) => path.join(os.tmpdir(), n)),
    ];
    // Markers of writes outside, and what the probe copies or plants, by their names.
    expect(
      everywhere.filter((p) => p.includes(marker) || /asu-probe-(leak|planted|hardlink)/.test(p)),
    ).toEqual([]);
    for (const dir of ["/usr", "/usr/bin"]) expect(existsSync(path.join(dir, marker)), dir).toBe(false);

    // The cached ImageBuilder other builds start from is as the archive shipped it.
    const tool = await readFile(new URL("ib-tool.mjs", IMAGEBUILDER_FILES));
    const cached = (await walk(server.config.cache_path)).filter((p) => p.endsWith("/scripts/ib-tool.mjs"));
    expect(cached.length).toBeGreaterThan(0);
    for (const file of cached) expect((await readFile(file)).equals(tool), file).toBe(true);

    const survivors: string[] = [];
    for (const pid of await readdir("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
      if (cmdline.includes(`asu-probe-survivor-${tag}`)) survivors.push(`${pid}: ${cmdline}`);
    }
    expect(survivors).toEqual([]);
  });

  it("the worker takes the next build: another target builds 200", async () => {
    const res = await build(
      server.url,
      {
        version: "24.10.4",
        target: "x86/64",
        profile: "generic",
        packages: ["htop"],
        filesystem: "squashfs",
      },
      (JOB_TIMEOUT_S + 10) * 1000,
    );
    expect(res.status, res.text).toBe(200);
    expect(probeLines(res).filter((l) => l.startsWith("PROBE-OK"))).toEqual([]);
    const image = (res.body.images as { name: string; type: string; sha256: string }[])[0];
    expect(image).toBeDefined();
    const download = await fetch(`${server.url}/store/${String(res.body.request_hash)}/${image?.name}`);
    const bytes = Buffer.from(await download.arrayBuffer());
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(image?.sha256);
  });
});
