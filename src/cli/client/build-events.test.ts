import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AsuHttp } from "./asu-http.js";
import type { BuildProgress } from "./build-answer.js";
import { runBuild } from "./build-command.js";
import { followBuildEvents } from "./build-events.js";
import { watchBuild } from "./build-watch.js";
import { ClientError, ExitCode, ServerUnavailableError } from "./client-errors.js";
import type { ProgressReporter } from "./progress-reporter.js";

/*
 * A small fake server that follows the event stream's wire contract (issue #14, part 2):
 * `id:` on every event, `queue`/`status`/`log` events, a `result` carrying the build answer,
 * heartbeat comments, resumption with Last-Event-ID. Each test scripts what it answers.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

interface Fake {
  url: string;
  requests: { method: string; url: string; lastEventId: string | undefined }[];
  close(): Promise<void>;
}

const servers: Server[] = [];

async function fakeServer(handler: Handler): Promise<Fake> {
  const requests: Fake["requests"] = [];
  const server = createServer((req, res) => {
    const header = req.headers["last-event-id"];
    requests.push({
      method: req.method ?? "",
      url: req.url ?? "",
      lastEventId: typeof header === "string" ? header : undefined,
    });
    handler(req, res);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

function sse(res: ServerResponse, id: number, event: string, data: unknown): void {
  res.write(`id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

function openStream(res: ServerResponse): void {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
  // A short retry keeps the reconnection test quick (the client honours `retry:`).
  res.write("retry: 10\n\n");
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

const HASH = "a".repeat(64);
const IMAGE = Buffer.from("an OpenWrt sysupgrade image\n".repeat(1000));
const IMAGE_SHA = createHash("sha256").update(IMAGE).digest("hex");

function doneBody(sha256 = IMAGE_SHA): Record<string, unknown> {
  return {
    status: 200,
    detail: "done",
    imagebuilder_status: "done",
    request_hash: HASH,
    bin_dir: HASH,
    id: "tplink_archer-c7-v5",
    target: "ath79/generic",
    version_number: "24.10.4",
    images: [
      {
        name: "openwrt-24.10.4-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
        type: "sysupgrade",
        filesystem: "squashfs",
        sha256,
      },
      {
        name: "openwrt-24.10.4-ath79-generic-tplink_archer-c7-v5-initramfs-kernel.bin",
        type: "kernel",
        filesystem: "squashfs",
        sha256: "b".repeat(64),
      },
    ],
  };
}

function recorder(): { progress: BuildProgress[]; onProgress: (p: BuildProgress) => void } {
  const progress: BuildProgress[] = [];
  return { progress, onProgress: (p) => progress.push(p) };
}

describe("followBuildEvents (the event stream contract)", () => {
  it("resumes a dropped stream with Last-Event-ID and loses no stage", async () => {
    let connection = 0;
    const fake = await fakeServer((req, res) => {
      if (!req.url?.startsWith(`/api/v1/build/${HASH}/events`))
        return json(res, 404, { status: 404, detail: "no" });
      connection += 1;
      openStream(res);
      if (connection === 1) {
        sse(res, 1, "queue", { queue_position: 2 });
        sse(res, 2, "queue", { queue_position: 1 });
        sse(res, 3, "status", { imagebuilder_status: "init" });
        sse(res, 4, "log", { stream: "stdout", line: "Building images for ath79" });
        // The connection breaks in the middle of the next event, once the rest has been sent.
        res.write('id: 5\nevent: status\ndata: {"imagebuilder_st', () => res.socket?.destroy());
        return;
      }
      // The server resumes after the last event the client saw.
      const after = Number(req.headers["last-event-id"]);
      const rest: [number, string, unknown][] = [
        [5, "status", { imagebuilder_status: "validate_manifest" }],
        [6, "log", { stream: "stderr", line: "warning: something" }],
        [7, "status", { imagebuilder_status: "building_image" }],
      ];
      res.write(": heartbeat\n\n");
      for (const [id, event, data] of rest) if (id > after) sse(res, id, event, data);
      res.write(": heartbeat\n\n");
      sse(res, 8, "result", doneBody());
      res.end();
    });
    const { progress, onProgress } = recorder();
    const reconnects: number[] = [];
    const outcome = await followBuildEvents(new AsuHttp(fake.url), HASH, {
      signal: new AbortController().signal,
      onProgress,
      onReconnect: (attempt) => reconnects.push(attempt),
    });

    expect(outcome).toEqual({ kind: "result", body: doneBody() });
    expect(fake.requests.map((r) => r.lastEventId)).toEqual([undefined, "4"]);
    expect(reconnects).toEqual([1]);
    expect(progress).toEqual([
      { kind: "queued", position: 2 },
      { kind: "queued", position: 1 },
      { kind: "stage", stage: "init" },
      { kind: "log", stream: "stdout", line: "Building images for ath79" },
      { kind: "stage", stage: "validate_manifest" },
      { kind: "log", stream: "stderr", line: "warning: something" },
      { kind: "stage", stage: "building_image" },
    ]);
  });

  it("reopens a stream that falls silent (no event, no heartbeat) and resumes after the last event", async () => {
    let connection = 0;
    const fake = await fakeServer((_req, res) => {
      connection += 1;
      openStream(res);
      if (connection === 1) {
        sse(res, 1, "status", { imagebuilder_status: "building_image" });
        return; // then silence, with the connection left open
      }
      sse(res, 2, "result", doneBody());
      res.end();
    });
    const { progress, onProgress } = recorder();
    const outcome = await followBuildEvents(new AsuHttp(fake.url), HASH, {
      signal: new AbortController().signal,
      onProgress,
      idleMs: 200,
    });
    expect(outcome.kind).toBe("result");
    expect(fake.requests.map((r) => r.lastEventId)).toEqual([undefined, "1"]);
    expect(progress).toEqual([{ kind: "stage", stage: "building_image" }]);
  });

  it("reports a server without the endpoint (404, 405) as unsupported, so the caller polls", async () => {
    for (const status of [404, 405]) {
      const fake = await fakeServer((_req, res) =>
        json(res, status, { statusCode: status, message: "Route not found" }),
      );
      const outcome = await followBuildEvents(new AsuHttp(fake.url), HASH, {
        signal: new AbortController().signal,
        onProgress: () => undefined,
      });
      expect(outcome).toEqual({ kind: "unsupported", why: `the event stream answered HTTP ${status}` });
    }
  });

  it("treats an answer that is not an event stream as unsupported", async () => {
    const fake = await fakeServer((_req, res) => json(res, 200, { status: 202, detail: "queued" }));
    const outcome = await followBuildEvents(new AsuHttp(fake.url), HASH, {
      signal: new AbortController().signal,
      onProgress: () => undefined,
    });
    expect(outcome.kind).toBe("unsupported");
  });
});

describe("watchBuild", () => {
  it("falls back to polling GET /api/v1/build/{hash} when the events path answers 404", async () => {
    const answers = [
      { status: 202, detail: "queued", queue_position: 1, imagebuilder_status: "queued", request_hash: HASH },
      { status: 202, detail: "started", imagebuilder_status: "building_image", request_hash: HASH },
      doneBody(),
    ];
    const fake = await fakeServer((req, res) => {
      if (req.url?.endsWith("/events"))
        return json(res, 404, { message: "Route GET not found", statusCode: 404 });
      json(res, 200, answers.shift());
    });
    const { progress, onProgress } = recorder();
    const modes: string[] = [];
    const final = await watchBuild(new AsuHttp(fake.url), HASH, {
      signal: new AbortController().signal,
      onProgress,
      onMode: (mode) => modes.push(mode),
      pollIntervalMs: 5,
      timeoutMs: 30_000,
    });
    expect(final).toEqual({ status: 200, body: doneBody() });
    expect(modes).toEqual(["events", "polling"]);
    expect(progress).toEqual([
      { kind: "queued", position: 1 },
      { kind: "stage", stage: "building_image" },
    ]);
    expect(fake.requests.map((r) => r.url)).toEqual([
      `/api/v1/build/${HASH}/events`,
      `/api/v1/build/${HASH}`,
      `/api/v1/build/${HASH}`,
      `/api/v1/build/${HASH}`,
    ]);
  });

  it("gives up with ServerUnavailableError when polls keep answering 503", async () => {
    const fake = await fakeServer((_req, res) =>
      json(res, 503, {
        status: 503,
        detail: "The build queue is unavailable. Please try again in a minute.",
      }),
    );
    const err = await watchBuild(new AsuHttp(fake.url), HASH, {
      signal: new AbortController().signal,
      onProgress: () => undefined,
      pollIntervalMs: 5,
      maxPollFailures: 3,
      timeoutMs: 30_000,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServerUnavailableError);
    expect((err as ServerUnavailableError).message).toBe(
      "The build queue is unavailable. Please try again in a minute.",
    );
    expect((err as ServerUnavailableError).exitCode).toBe(ExitCode.serverUnavailable);
    expect(fake.requests.filter((r) => !r.url.endsWith("/events"))).toHaveLength(3);
  });
});

function silentReporter(): ProgressReporter & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (t) => lines.push(t),
    build: () => undefined,
    buildEnd: (t) => lines.push(t),
    downloadStart: () => undefined,
    downloadData: () => undefined,
    downloadEnd: (_n, t) => lines.push(t),
    stop: () => undefined,
  };
}

describe("runBuild against a server with the event stream", () => {
  async function buildServer(sha256: string): Promise<Fake> {
    return fakeServer((req, res) => {
      if (req.method === "POST" && req.url === "/api/v1/build") {
        return json(res, 202, {
          status: 202,
          detail: "queued",
          queue_position: 0,
          imagebuilder_status: "queued",
          request_hash: HASH,
        });
      }
      if (req.url === `/api/v1/build/${HASH}/events`) {
        openStream(res);
        sse(res, 1, "status", { imagebuilder_status: "building_image" });
        sse(res, 2, "result", doneBody(sha256));
        return res.end();
      }
      if (req.url?.startsWith(`/store/${HASH}/`) && req.url.endsWith("sysupgrade.bin")) {
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": IMAGE.length });
        return res.end(IMAGE);
      }
      json(res, 404, { status: 404, detail: "not here" });
    });
  }

  const options = (server: string, out: string) => ({
    server,
    version: "24.10.4",
    target: "ath79/generic",
    profile: "tplink,archer-c7-v5",
    packages: ["luci"],
    out,
    images: ["sysupgrade", "factory"],
    requestTimeout: 10,
    timeout: 30,
    pollOnly: false,
  });

  it("downloads the sysupgrade image and keeps it only after its sha256 matched", async () => {
    const fake = await buildServer(IMAGE_SHA);
    const out = await mkdtemp(path.join(tmpdir(), "asu-cli-"));
    const outcome = await runBuild(options(fake.url, out), silentReporter(), new AbortController().signal);
    expect(outcome.downloaded.map((d) => path.basename(d.file))).toEqual([
      "openwrt-24.10.4-ath79-generic-tplink_archer-c7-v5-squashfs-sysupgrade.bin",
    ]);
    const saved = await readFile(outcome.downloaded[0]!.file);
    expect(createHash("sha256").update(saved).digest("hex")).toBe(IMAGE_SHA);
    // Polling was never needed.
    expect(fake.requests.some((r) => r.method === "GET" && r.url === `/api/v1/build/${HASH}`)).toBe(false);
  });

  it("refuses an image whose bytes do not match the announced sha256 (exit 5) and leaves no file", async () => {
    const fake = await buildServer("c".repeat(64));
    const out = await mkdtemp(path.join(tmpdir(), "asu-cli-"));
    const err = await runBuild(options(fake.url, out), silentReporter(), new AbortController().signal).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ClientError);
    expect((err as ClientError).exitCode).toBe(ExitCode.downloadFailed);
    expect((err as ClientError).message).toContain("does not match the sha256 the server announced");
    expect(await readdir(out)).toEqual([]);
  });

  it("shows the server's detail and exits 4 when the server answers 503", async () => {
    const fake = await fakeServer((_req, res) =>
      json(res, 503, {
        status: 503,
        detail: "The build queue is unavailable. Please try again in a minute.",
      }),
    );
    const err = await runBuild(
      options(fake.url, tmpdir()),
      silentReporter(),
      new AbortController().signal,
    ).catch((e: unknown) => e);
    expect((err as ClientError).exitCode).toBe(ExitCode.serverUnavailable);
    expect((err as ClientError).message).toBe(
      "The server cannot build now (HTTP 503): The build queue is unavailable. Please try again in a minute.",
    );
  });
});
