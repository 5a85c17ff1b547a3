import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { BuildEventHub, BuildEventLog, compareEventIds, isEventId, nextEventId } from "./build-events.js";

const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const redis = new Redis(REDIS_URL);
const prefix = `asu-test-events-${randomBytes(4).toString("hex")}`;

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

let n = 0;
const freshKey = (log: BuildEventLog) => log.key(`h${++n}`, Date.now());

describe("event ids", () => {
  it("orders stream ids numerically and accepts only stream ids as Last-Event-ID", () => {
    expect(compareEventIds("9-0", "10-0")).toBe(-1);
    expect(compareEventIds("10-2", "10-11")).toBe(-1);
    expect(compareEventIds("10-2", "10-2")).toBe(0);
    expect(nextEventId("10-2")).toBe("10-3");
    expect(isEventId("1733112000000-5")).toBe(true);
    for (const bad of ["", "abc", "1-2-3", "1-2\r\nevent: result", "-1-0"])
      expect(isEventId(bad)).toBe(false);
  });
});

describe("BuildEventLog", () => {
  const log = new BuildEventLog(redis, prefix, { maxLogLines: 3, maxLineChars: 10 });

  it("reads entries after an id, in order, as the SSE data", async () => {
    const key = freshKey(log);
    await log.appendStatus(key, "init");
    await log.appendStatus(key, "validate_revision");
    const all = await log.read(key, "0-0", 100);
    expect(all.map((e) => [e.type, e.data])).toEqual([
      ["status", '{"imagebuilder_status":"init"}'],
      ["status", '{"imagebuilder_status":"validate_revision"}'],
    ]);
    expect(compareEventIds(all[0]!.id, all[1]!.id)).toBe(-1);
    // Exclusive: a resume after the first gives only the second.
    expect((await log.read(key, all[0]!.id, 100)).map((e) => e.id)).toEqual([all[1]!.id]);
    // Expires on its own while nothing is written.
    expect(await redis.ttl(key)).toBeGreaterThan(0);
  });

  it("bounds output lines: cut at maxLineChars, at most maxLogLines and one notice", async () => {
    const key = freshKey(log);
    const sink = log.createLogSink(key);
    sink.push("stdout", "short");
    sink.push("stderr", "a line that is far too long");
    for (let i = 0; i < 10; i++) sink.push("stdout", `line ${i}`);
    await sink.flush();
    const lines = (await log.read(key, "0-0", 100)).map(
      (e) => JSON.parse(e.data) as { stream: string; line: string },
    );
    expect(lines).toEqual([
      { stream: "stdout", line: "short" },
      { stream: "stderr", line: "a line tha [asu: line cut]" },
      { stream: "stdout", line: "line 0" },
      {
        stream: "stderr",
        line: "[asu: only the first 3 lines are streamed; the result has the end of the output]",
      },
    ]);
  });

  it("records a queue position only when it changed and only before the build started", async () => {
    const key = freshKey(log);
    expect(await log.appendQueuePosition(key, 2)).toBeDefined();
    expect(await log.appendQueuePosition(key, 2)).toBeUndefined();
    expect(await log.appendQueuePosition(key, 1)).toBeDefined();
    await log.appendStatus(key, "init");
    // A late poll from another API server must not put "queued" after "init".
    expect(await log.appendQueuePosition(key, 0)).toBeUndefined();
    const events = await log.read(key, "0-0", 100);
    expect(events.map((e) => `${e.type} ${e.data}`)).toEqual([
      'queue {"queue_position":2}',
      'queue {"queue_position":1}',
      'status {"imagebuilder_status":"init"}',
    ]);
  });

  it("writes the final stage and the result marker with the result, and shortens the expiry", async () => {
    const key = freshKey(log);
    await log.appendStatus(key, "building_image");
    const multi = redis.multi().set(`${prefix}:result:x`, "500{}", "EX", 60);
    log.addResult(multi, key, 500);
    await multi.exec();
    const events = await log.read(key, "0-0", 100);
    expect(events.map((e) => `${e.type} ${e.data}`)).toEqual([
      'status {"imagebuilder_status":"building_image"}',
      'status {"imagebuilder_status":"failed"}',
      "result 500",
    ]);
    expect(await redis.ttl(key)).toBeLessThanOrEqual(log.limits.finishedTtlSeconds);
    expect(await log.lastId(key)).toBe(events[2]!.id);
  });
});

describe("BuildEventHub", () => {
  it("wakes listeners of a stream on new entries, over one blocking connection, and forgets them", async () => {
    const log = new BuildEventLog(redis, prefix);
    const hub = new BuildEventHub(REDIS_URL, redis, { blockMs: 10_000 });
    try {
      const a = freshKey(log);
      const b = freshKey(log);
      await log.appendStatus(a, "init");
      const wakes = { a: 0, b: 0 };
      const woke = (name: "a" | "b") =>
        new Promise<void>((resolve) => {
          const off = hub.subscribe(name === "a" ? a : b, "0-0", () => {
            wakes[name] += 1;
            resolve();
            off();
          });
        });
      // An entry that exists already wakes at once.
      await woke("a");
      // A new entry wakes a listener whose XREAD was blocking (CLIENT UNBLOCK, not the 10 s timeout).
      const later = woke("b");
      await log.appendStatus(b, "init");
      await later;
      expect(wakes).toEqual({ a: 1, b: 1 });
      expect(hub.size).toBe(0);
    } finally {
      await hub.close();
    }
  });
});
