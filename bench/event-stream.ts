/**
 * Build event streams (GET /api/v1/build/{hash}/events) under many clients.
 *
 *   npx tsx bench/event-stream.ts [clients, default 200] [log lines, default 5000]
 *
 * Starts an API-only server on a private redis-server, queues one build that no worker takes,
 * opens `clients` event streams on it, then plays a worker: writes `log lines` output lines
 * through the worker's own batching sink, then the result. Prints:
 *   - Redis connections before and with the clients open (the bound: one blocking connection
 *     per API process, whatever the number of clients),
 *   - how long until every client had the first line, and every line and the result,
 *   - lines delivered per second over all clients.
 * Needs redis-server on PATH.
 */
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { startMirror, startTestServer } from "../test/integration/harness.js";
import { startOwnRedis } from "../test/integration/own-redis.js";
import { BuildEventLog } from "../src/queue/build-events.js";
import type { NormalizedRequest } from "../src/request/normalize-request.js";

const clients = Number(process.argv[2] ?? 200);
const lines = Number(process.argv[3] ?? 5000);

const redis = await startOwnRedis();
await redis.start();
const mirror = await startMirror();
const api = await startTestServer(mirror, {
  role: "api",
  overrides: { redis_url: redis.url, events_heartbeat: 15 },
});
const control = new Redis(redis.url);
const connections = async () =>
  String(await control.client("LIST"))
    .trim()
    .split("\n").length;
try {
  const hash = randomBytes(32).toString("hex");
  const enqueuedAt = Date.now();
  const request = { version: "24.10.4", target: "ath79/generic", profile: "bench" } as NormalizedRequest;
  await api.server.queue.enqueue(hash, {
    request,
    profile: "bench",
    enqueued_at: enqueuedAt,
    result_ttl: 60,
  });
  const before = await connections();

  let firstLineAll = 0;
  let doneAll = 0;
  let started = 0;
  let withFirst = 0;
  let finished = 0;
  let opened = 0;
  let allOpen: () => void = () => undefined;
  const open = new Promise<void>((resolve) => (allOpen = resolve));
  let allDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (allDone = resolve));
  const readers = Array.from({ length: clients }, async () => {
    const res = await fetch(`${api.url}/api/v1/build/${hash}/events`);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let text = "";
    let sawQueue = false;
    let sawLine = false;
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      text += decoder.decode(chunk.value, { stream: true });
      if (!sawQueue && text.includes("event: queue")) {
        sawQueue = true;
        if (++opened === clients) allOpen();
      }
      if (!sawLine && text.includes("event: log")) {
        sawLine = true;
        if (++withFirst === clients) firstLineAll = performance.now() - started;
      }
      text = text.slice(text.lastIndexOf("\n\n") + 2);
    }
    if (++finished === clients) {
      doneAll = performance.now() - started;
      allDone();
    }
  });
  await open;
  const during = await connections();

  // The worker's side, as BuildQueue does it: batched lines, then the result in one MULTI.
  const writer = new Redis(redis.url);
  const log = new BuildEventLog(writer, api.prefix);
  const key = log.key(hash, enqueuedAt);
  await log.appendStatus(key, "init");
  started = performance.now();
  const sink = log.createLogSink(key);
  for (let i = 0; i < lines; i++) sink.push("stdout", `line ${i} ${"x".repeat(60)}`);
  await sink.flush();
  const multi = writer
    .multi()
    .set(`${api.prefix}:result:${hash}`, `500${JSON.stringify({ status: 500, detail: "bench" })}`, "EX", 60);
  log.addResult(multi, key, 500);
  await multi.exec();
  await api.server.queue.queue.remove(hash);
  await done;
  await Promise.all(readers);
  writer.disconnect();

  console.log(`clients: ${clients}, log lines: ${lines}`);
  console.log(`redis connections: ${before} before the streams, ${during} with ${clients} streams open`);
  console.log(`first line at every client: ${firstLineAll.toFixed(0)} ms`);
  console.log(`every line and the result at every client: ${doneAll.toFixed(0)} ms`);
  console.log(
    `lines delivered: ${((clients * lines) / (doneAll / 1000)).toFixed(0)} per second over all clients`,
  );
} finally {
  control.disconnect();
  await api.close();
  await mirror.close();
  await redis.destroy();
}
