import { createServer } from "node:net";
import { once } from "node:events";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildQueue } from "./build-queue.js";
import { QueueUnavailableError } from "./queue-errors.js";

// A port where something accepts connections but never answers (a hung Redis), and one
// where nothing listens (a stopped Redis): both must fail fast, not wait (issue #10).
let silent: ReturnType<typeof createServer>;
let silentPort = 0;

beforeAll(async () => {
  silent = createServer(() => undefined);
  silent.listen(0, "127.0.0.1");
  await once(silent, "listening");
  silentPort = (silent.address() as { port: number }).port;
});

afterAll(() => {
  silent.close();
});

async function timedFailure(queue: BuildQueue, call: (q: BuildQueue) => Promise<unknown>) {
  const started = performance.now();
  const error = await call(queue).then(
    () => undefined,
    (err: unknown) => err,
  );
  return { error, ms: performance.now() - started };
}

describe("BuildQueue while Redis is unreachable", () => {
  for (const [name, url] of [
    ["nothing listens", "redis://127.0.0.1:1"],
    ["Redis hangs", () => `redis://127.0.0.1:${silentPort}`],
  ] as const) {
    it(`${name}: every request-path call fails with QueueUnavailableError within 2 s`, async () => {
      const queue = new BuildQueue({ redisUrl: typeof url === "string" ? url : url(), prefix: "unit" });
      try {
        const calls: ((q: BuildQueue) => Promise<unknown>)[] = [
          (q) => q.getResult("a".repeat(64)),
          (q) => q.status("a".repeat(64)),
          (q) => q.pendingCount(),
          (q) => q.hitRateLimit("127.0.0.1", 10),
          (q) => q.ping(),
        ];
        for (const call of calls) {
          const { error, ms } = await timedFailure(queue, call);
          expect(error).toBeInstanceOf(QueueUnavailableError);
          expect((error as QueueUnavailableError).status).toBe(503);
          expect(ms).toBeLessThan(2000);
        }
      } finally {
        await queue.close();
      }
    });
  }
});
