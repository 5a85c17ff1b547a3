import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { flushPrefix, REDIS_URL, request, startMirror, type Mirror } from "./harness.js";

/**
 * Issue #14, part 2: GET /api/v1/build/{hash}/events with the API (`asu serve`) and the
 * worker (`asu worker`) as separate processes, sharing only Redis (and, for the local
 * store, a folder). The test talks to the API over HTTP only, as the `asu build` CLI does.
 */

const cli = path.resolve("src/cli/main.ts");
const tsx = pathToFileURL(path.resolve("node_modules/tsx/dist/loader.mjs")).href;
const prefix = `asu-test-events-${randomBytes(6).toString("hex")}`;
const TARGET = { version: "24.10.4", target: "ath79/generic" };

let mirror: Mirror;
let shared: string;
let proxy: { url: string; server: Server; hold: boolean; held: (() => void)[] };
const procs: { child: ChildProcess; dir: string }[] = [];
let api: { url: string; dir: string; child: ChildProcess; output: () => string };
let worker: { dir: string; child: ChildProcess };

/** The mirror behind a proxy that can hold ImageBuilder downloads: a build then waits in download_imagebuilder. */
async function startHoldingProxy(target: string): Promise<typeof proxy> {
  const state = { hold: false, held: [] as (() => void)[] };
  const server = createServer((req, res) => {
    const forward = () => {
      const upstream = httpRequest(`${target}${req.url ?? "/"}`, { method: req.method }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      upstream.on("error", () => res.destroy());
      upstream.end();
    };
    if (state.hold && /openwrt-imagebuilder-/.test(req.url ?? "")) state.held.push(forward);
    else forward();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  return Object.assign(state, { url: `http://127.0.0.1:${port}`, server });
}

async function startAsu(
  role: "serve" | "worker",
): Promise<{ url: string; dir: string; child: ChildProcess; output: () => string }> {
  const dir = await mkdtemp(path.join(tmpdir(), `asu-events-${role}-`));
  const toml = path.join(dir, "asu.toml");
  await writeFile(
    toml,
    [
      `upstream_url = "${proxy.url}"`,
      `redis_url = "${REDIS_URL}"`,
      `redis_prefix = "${prefix}"`,
      `public_path = "${shared}"`,
      `cache_path = "${path.join(dir, "cache")}"`,
      `host = "127.0.0.1"`,
      `port = 0`,
      `log_level = "info"`,
      `build_rate_limit = 0`,
      `job_timeout = "2m"`,
      `workers = 1`,
      // Fast heartbeats, so the test sees some.
      `events_heartbeat = "0.2"`,
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
  procs.push({ child, dir });
  let out = "";
  let all = "";
  let err = "";
  child.stderr?.on("data", (c: Buffer) => (err += c.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout?.on("data", (c: Buffer) => {
      out += c.toString();
      all += c.toString();
      for (const line of out.split("\n")) {
        if (!line.includes('"asu-ts running"')) continue;
        try {
          resolve(String((JSON.parse(line) as { url?: string }).url ?? ""));
        } catch {
          // a partial line; the next chunk completes it
        }
      }
    });
    child.once("exit", (code) => reject(new Error(`asu ${role} exited ${code}: ${err}`)));
  });
  return { url, dir, child, output: () => all };
}

interface SseEvent {
  id?: string;
  event?: string;
  data?: string;
  comment?: string;
}

/** A minimal EventSource over fetch: yields events and comments as they arrive. */
function openEvents(hash: string, lastEventId?: string) {
  const abort = new AbortController();
  const response = fetch(`${api.url}/api/v1/build/${hash}/events`, {
    headers: { accept: "text/event-stream", ...(lastEventId ? { "last-event-id": lastEventId } : {}) },
    signal: abort.signal,
  });
  async function* events(): AsyncGenerator<SseEvent> {
    const res = await response;
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (err) {
        if (abort.signal.aborted) return; // closed by the test
        throw err; // cut off without a proper end of the response
      }
      if (chunk.done) return;
      buffer += decoder.decode(chunk.value, { stream: true });
      for (let end = buffer.indexOf("\n\n"); end !== -1; end = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event: SseEvent = {};
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) event.comment = line.slice(1).trim();
          const m = /^(id|event|data): ?(.*)$/.exec(line);
          if (m) event[m[1] as "id" | "event" | "data"] = m[2];
        }
        yield event;
      }
    }
  }
  return { events: events(), close: () => abort.abort() };
}

/** Reads events until `until` says stop (inclusive) or the stream ends. */
async function readUntil(
  stream: AsyncGenerator<SseEvent>,
  until: (e: SseEvent) => boolean,
): Promise<SseEvent[]> {
  const seen: SseEvent[] = [];
  for (;;) {
    const next = await stream.next();
    if (next.done) return seen;
    seen.push(next.value);
    if (until(next.value)) return seen;
  }
}

const stageOf = (e: SseEvent) =>
  e.event === "status"
    ? (JSON.parse(e.data ?? "{}") as { imagebuilder_status: string }).imagebuilder_status
    : undefined;

async function post(profile: string, packages: string[] = []): Promise<string> {
  const res = await request(api.url, "POST", "/api/v1/build", { ...TARGET, profile, packages });
  expect(res.status, res.text).toBe(202);
  return String(res.body.request_hash);
}

async function openStreams(): Promise<number> {
  const text = await (await fetch(`${api.url}/metrics`)).text();
  return Number(/^asu_event_streams (\d+)$/m.exec(text)?.[1]);
}

/** Resolves once /metrics shows `n` open event streams (asserting on what an operator sees). */
async function streamsBecome(n: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while ((await openStreams()) !== n) {
    if (Date.now() > deadline) throw new Error(`asu_event_streams never became ${n}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  mirror = await startMirror();
  proxy = await startHoldingProxy(mirror.url);
  shared = await mkdtemp(path.join(tmpdir(), "asu-events-public-"));
  [api, worker] = await Promise.all([startAsu("serve"), startAsu("worker")]);
});

afterAll(async () => {
  for (const p of procs) {
    if (p.child.exitCode === null && p.child.pid) {
      const exited = once(p.child, "exit");
      process.kill(-p.child.pid, "SIGTERM");
      await exited;
    }
    await rm(p.dir, { recursive: true, force: true });
  }
  await rm(shared, { recursive: true, force: true });
  await flushPrefix(prefix);
  proxy?.server.close();
  await mirror?.close();
});

describe("GET /api/v1/build/{hash}/events with separate API and worker processes", () => {
  it("answers an unknown hash with the poll route's 404", async () => {
    const hash = "0".repeat(64);
    const events = await request(api.url, "GET", `/api/v1/build/${hash}/events`);
    const poll = await request(api.url, "GET", `/api/v1/build/${hash}`);
    expect(events.status).toBe(404);
    expect(events.headers.get("content-type")).toMatch(/^application\/json/);
    expect(events.body).toEqual(poll.body);
  });

  it("follows builds from the queue to the result, resumes with Last-Event-ID, and frees closed streams", async () => {
    proxy.hold = true;
    // First build: the worker takes it and waits for its ImageBuilder download.
    const first = await post("tplink_archer-c7-v5", ["htop"]);
    const a1 = openEvents(first);
    const beforeCut = await readUntil(a1.events, (e) => stageOf(e) === "download_imagebuilder");
    expect(beforeCut.map(stageOf).filter(Boolean)).toEqual(["init", "download_imagebuilder"]);
    // Two more wait behind it (workers = 1): positions 0 and 1.
    const second = await post("netgear_wndr3700");
    const third = await post("glinet_gl-ar300m16");
    const c = openEvents(third);
    const [queued] = await readUntil(c.events, (e) => e.event === "queue");
    expect(JSON.parse(queued?.data ?? "")).toEqual({ queue_position: 1 });
    // Heartbeats keep proxies from closing a quiet stream.
    await readUntil(c.events, (e) => e.comment === "heartbeat");

    // The client of the first build goes away mid-build; its stream is freed.
    expect(await openStreams()).toBe(2);
    a1.close();
    await streamsBecome(1);

    // The build goes on; the client comes back with the last id it saw.
    proxy.hold = false;
    for (const go of proxy.held.splice(0)) go();
    const lastId = beforeCut.filter((e) => e.id).at(-1)?.id as string;
    const a2 = openEvents(first, lastId);
    const afterCut = await readUntil(a2.events, (e) => e.event === "result");
    expect(await a2.events.next()).toEqual({ done: true, value: undefined }); // the server ended it

    const all = [...beforeCut, ...afterCut].filter((e) => e.id);
    // Ids increase; nothing is sent twice across the reconnection.
    const ids = all.map((e) => e.id as string);
    expect(new Set(ids).size).toBe(ids.length);
    for (let i = 1; i < ids.length; i++) {
      const [pm, ps] = ids[i - 1]!.split("-").map(BigInt);
      const [m, s] = ids[i]!.split("-").map(BigInt);
      expect(m! > pm! || (m === pm && s! > ps!), `${ids[i - 1]} < ${ids[i]}`).toBe(true);
    }
    // Every stage, in order, none lost at the reconnection.
    expect(all.map(stageOf).filter(Boolean)).toEqual([
      "init",
      "download_imagebuilder",
      "unpack_imagebuilder",
      "validate_revision",
      "validate_manifest",
      "calculate_packages_hash",
      "building_image",
      "done",
    ]);
    // Output lines as they happened, from make image, with no host paths.
    const logs = all
      .filter((e) => e.event === "log")
      .map((e) => JSON.parse(e.data ?? "") as { stream: string; line: string });
    expect(logs.length).toBeGreaterThan(0);
    expect(logs).toContainEqual({ stream: "stdout", line: "Building images..." });
    for (const { stream, line } of logs) {
      expect(["stdout", "stderr"]).toContain(stream);
      for (const hostPath of [worker.dir, shared, tmpdir() + "/asu-"]) expect(line).not.toContain(hostPath);
    }
    // Logs come after the stage that runs them, never after the result.
    expect(all.findIndex((e) => e.event === "log")).toBeGreaterThan(
      all.findIndex((e) => stageOf(e) === "validate_revision"),
    );
    // The result is exactly what a poll answers.
    const result = afterCut.at(-1) as SseEvent;
    const poll = await request(api.url, "GET", `/api/v1/build/${first}`);
    expect(poll.status).toBe(200);
    expect(JSON.parse(result.data ?? "")).toEqual(poll.body);
    expect(JSON.parse(result.data ?? "")).toMatchObject({ status: 200, imagebuilder_status: "done" });

    // The third build's client saw its position fall, then its stages, then its result.
    const rest = await readUntil(c.events, (e) => e.event === "result");
    const positions = rest
      .filter((e) => e.event === "queue")
      .map((e) => (JSON.parse(e.data ?? "") as { queue_position: number }).queue_position);
    expect(positions).toEqual([0]);
    const firstStage = rest.findIndex((e) => e.event === "status");
    expect(rest.findLastIndex((e) => e.event === "queue")).toBeLessThan(firstStage);
    expect(rest.map(stageOf).filter(Boolean)).toEqual([
      "init",
      "validate_revision",
      "validate_manifest",
      "calculate_packages_hash",
      "building_image",
      "done",
    ]);
    expect(JSON.parse(rest.at(-1)?.data ?? "")).toMatchObject({ status: 200, request_hash: third });
    expect((await request(api.url, "GET", `/api/v1/build/${second}`)).status).toBe(200);
    await streamsBecome(0);
  });

  it("answers a finished build with its result at once and ends", async () => {
    // The first test's first build: cached now, so POST answers 200.
    const posted = await request(api.url, "POST", "/api/v1/build", {
      ...TARGET,
      profile: "tplink_archer-c7-v5",
      packages: ["htop"],
    });
    expect(posted.status).toBe(200);
    const done = String(posted.body.request_hash);
    const stream = openEvents(done);
    const events = await readUntil(stream.events, () => false);
    expect(events.map((e) => e.event)).toEqual(["result"]);
    expect(events[0]?.id).toBeTruthy();
    expect(JSON.parse(events[0]?.data ?? "")).toEqual(posted.body);
  });

  it("is listed in /openapi.json", async () => {
    const doc = (await request(api.url, "GET", "/openapi.json")).body as {
      paths: Record<string, { get?: { responses?: Record<string, { content?: Record<string, unknown> }> } }>;
    };
    const route = doc.paths["/api/v1/build/{request_hash}/events"];
    expect(route?.get?.responses?.["200"]?.content).toHaveProperty("text/event-stream");
    expect(route?.get?.responses).toHaveProperty("404");
  });

  it("shutdown ends open streams instead of waiting for their builds", async () => {
    // No worker: the build stays queued, and its stream open.
    const workerExited = once(worker.child, "exit");
    process.kill(-(worker.child.pid as number), "SIGTERM");
    await workerExited;
    const hash = await post("netgear_wndr3700", ["curl"]);
    const stream = openEvents(hash);
    expect((await stream.events.next()).value).toMatchObject({ event: "queue" });
    const apiExited = once(api.child, "exit");
    process.kill(-(api.child.pid as number), "SIGTERM");
    // The server ends the stream properly (no result: the client reconnects to another API
    // server), rather than the process exit cutting it off; then the process exits.
    const rest = await readUntil(stream.events, () => false);
    expect(rest.filter((e) => e.comment !== "heartbeat")).toEqual([]);
    expect((await apiExited)[0]).toBe(0);
    // Streams that ended, were left or were cut by shutdown logged no error.
    const errors = api
      .output()
      .split("\n")
      .filter((line) => /"level":(50|60)/.test(line));
    expect(errors).toEqual([]);
  });
});
