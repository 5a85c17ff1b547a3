import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { flushPrefix, REDIS_URL, request, startMirror, waitForBuild, type Mirror } from "./harness.js";
import { startS3, type TestS3 } from "../support/s3-server.js";

/**
 * Issue #12: `asu serve` and `asu worker` as separate processes, each with its own
 * public_path and cache_path and no shared disk, one Redis and an S3 server on loopback.
 * The test talks to the API over HTTP only, as clients do.
 */

interface Proc {
  child: ChildProcess;
  /** pino JSON lines written so far. */
  logs: Record<string, unknown>[];
  dir: string;
}

const cli = path.resolve("src/cli/main.ts");
// Each process runs in its own folder, where a bare "tsx" would not resolve.
const tsx = pathToFileURL(path.resolve("node_modules/tsx/dist/loader.mjs")).href;
const prefix = `asu-test-split-${randomBytes(6).toString("hex")}`;
let mirror: Mirror;
let s3: TestS3;
const procs: Proc[] = [];

async function startAsu(role: "serve" | "worker"): Promise<Proc> {
  const dir = await mkdtemp(path.join(tmpdir(), `asu-split-${role}-`));
  const toml = path.join(dir, "asu.toml");
  await writeFile(
    toml,
    [
      `upstream_url = "${mirror.url}"`,
      `redis_url = "${REDIS_URL}"`,
      `redis_prefix = "${prefix}"`,
      `public_path = "${path.join(dir, "public")}"`,
      `cache_path = "${path.join(dir, "cache")}"`,
      `host = "127.0.0.1"`,
      `port = 0`,
      `log_level = "info"`,
      `build_rate_limit = 0`,
      `job_timeout = "2m"`,
      ...Object.entries(s3.config).map(([k, v]) => `${k} = "${v}"`),
      ...["SNAPSHOT", "24.10", "23.05"].map(
        (b) => `[branches."${b}"]\npubkey = "${mirror.info.publicKeyLine}"`,
      ),
    ].join("\n"),
  );
  const child = spawn(process.execPath, ["--import", tsx, cli, role, "--config", toml], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
    env: { ...process.env, ASU_CONFIG: "" },
  });
  const proc: Proc = { child, logs: [], dir };
  procs.push(proc);
  let buffered = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) {
      try {
        proc.logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const deadline = Date.now() + 60_000;
  while (!proc.logs.some((l) => l.msg === "asu-ts running")) {
    if (child.exitCode !== null) throw new Error(`asu ${role} exited ${child.exitCode}: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`asu ${role} did not start: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return proc;
}

const apiUrl = (api: Proc) => String(api.logs.find((l) => l.msg === "asu-ts running")?.url);
const builtBy = (p: Proc) => p.logs.filter((l) => l.msg === "build done").map((l) => String(l.hash));

/**
 * A worker stores the result before it logs "build done", so a client can see the result
 * first: wait (with a deadline) until `count` such lines are in, across the given workers.
 */
async function waitForBuildLogs(procs: Proc[], count: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (procs.flatMap(builtBy).length < count && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function storeFiles(dir: string): Promise<string[]> {
  return readdir(path.join(dir, "public", "store")).catch(() => []);
}

beforeAll(async () => {
  [mirror, s3] = await Promise.all([startMirror(), startS3()]);
});

afterAll(async () => {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.pid) {
      const exited = new Promise((r) => p.child.once("exit", r));
      process.kill(-p.child.pid, "SIGTERM");
      await exited;
    }
    await rm(p.dir, { recursive: true, force: true });
  }
  await flushPrefix(prefix);
  await s3?.close();
  await mirror?.close();
});

type Image = { name: string; type: string; sha256: string };

describe("API and workers on separate machines with the S3 store", () => {
  let api: Proc;
  let worker: Proc;

  it("builds on the worker and serves the image through the API's redirect with the right sha256", async () => {
    [api, worker] = await Promise.all([startAsu("serve"), startAsu("worker")]);
    const url = apiUrl(api);
    const posted = await request(url, "POST", "/api/v1/build", {
      version: "24.10.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["htop"],
    });
    expect(posted.status, posted.text).toBe(202);
    const hash = String(posted.body.request_hash);
    const done = await waitForBuild(url, hash);
    expect(done.status, done.text).toBe(200);
    const images = done.body.images as Image[];
    expect(images.length).toBeGreaterThan(0);
    for (const image of images) {
      const storePath = `/store/${hash}/${image.name}`;
      const redirect = await fetch(`${url}${storePath}`, {
        redirect: "manual",
        headers: { Origin: "https://firmware-selector.openwrt.org" },
      });
      expect(redirect.status).toBe(302);
      // OFS downloads cross-origin: the redirect needs CORS headers too.
      expect(redirect.headers.get("access-control-allow-origin")).toBeTruthy();
      expect(redirect.headers.get("location")).toMatch(
        new RegExp(`^${s3.endpoint}/${s3.bucket}/store/${hash}/`),
      );
      // What auc, owut and LuCI do: follow the redirect, check the length and the sha256.
      const download = await fetch(`${url}${storePath}`);
      expect(download.status).toBe(200);
      const bytes = Buffer.from(await download.arrayBuffer());
      expect(download.headers.get("content-length")).toBe(String(bytes.length));
      expect(createHash("sha256").update(bytes).digest("hex")).toBe(image.sha256);
      const head = await fetch(`${url}${storePath}`, { method: "HEAD" });
      expect(head.status).toBe(200);
      expect(head.headers.get("content-length")).toBe(String(bytes.length));
    }
    // Nothing went through a disk the two share: neither public_path holds the build.
    expect(await storeFiles(api.dir)).toEqual([]);
    expect(await storeFiles(worker.dir)).toEqual([]);
    await waitForBuildLogs([worker], 1);
    expect(builtBy(worker)).toEqual([hash]);

    // The API process never built anything, yet its /metrics counts the worker's build.
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toContain('asu_builds_total{outcome="success",version="24.10.4"} 1');
    expect(metrics).toMatch(/asu_build_duration_seconds_count\{outcome="success"\} 1\n/);
    // The worker's first build downloaded its ImageBuilder; the worker reports itself idle now.
    expect(metrics).toContain('asu_imagebuilder_leases_total{result="download"} 1');
    expect(metrics).toMatch(/asu_builds_active\{worker="[^"]+-\d+"\} 0\n/);
  });

  it("two workers share the queue: each builds, no build is done twice", async () => {
    const second = await startAsu("worker");
    const url = apiUrl(api);
    const profiles = ["netgear_wndr3700", "glinet_gl-ar300m16", "tplink_archer-c7-v5", "netgear_wndr3700"];
    const hashes: string[] = [];
    for (const [i, profile] of profiles.entries()) {
      const posted = await request(url, "POST", "/api/v1/build", {
        version: "24.10.4",
        target: "ath79/generic",
        profile,
        packages: [["curl", "tcpdump", "curl", "vim"][i]!],
      });
      expect(posted.status, posted.text).toBe(202);
      hashes.push(String(posted.body.request_hash));
    }
    for (const hash of hashes) expect((await waitForBuild(url, hash)).status).toBe(200);
    // the first worker's earlier test build, plus one line per hash
    await waitForBuildLogs([worker, second], hashes.length + 1);
    const first = builtBy(worker).slice(1);
    const other = builtBy(second);
    expect([...first, ...other].sort()).toEqual([...hashes].sort());
    expect(first.length).toBeGreaterThan(0);
    expect(other.length).toBeGreaterThan(0);

    // Both worker processes recorded their builds; the API process shows the history (issue #14).
    const summary = await request(url, "GET", "/api/v1/stats/summary");
    expect(summary.body).toMatchObject({
      queue_length: 0,
      builds_24h: 5,
      failures_24h: 0,
      active_workers: 2,
    });
    const top = await request(url, "GET", "/api/v1/top-packages");
    expect(top.body.packages).toEqual(expect.arrayContaining([{ name: "curl", count: 2 }]));
  });
});
