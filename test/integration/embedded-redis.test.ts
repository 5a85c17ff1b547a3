import net from "node:net";
import { describe, expect, it } from "vitest";
import { redisAnswers, resolveRedis } from "../../src/queue/embedded-redis.js";

describe("resolveRedis", () => {
  it("uses REDIS_URL as given and starts nothing", async () => {
    const endpoint = await resolveRedis({
      redisUrl: "redis://10.0.0.5:6380/1",
      dataDir: "/nonexistent",
      log: () => {},
    });
    expect(endpoint).toEqual({ url: "redis://10.0.0.5:6380/1" });
  });

  it("uses the Redis answering on 127.0.0.1:6379 instead of starting one", async () => {
    // CI and the dev machines run Redis there.
    expect(await redisAnswers("127.0.0.1", 6379)).toBe(true);
    const logs: string[] = [];
    const endpoint = await resolveRedis({ dataDir: "/nonexistent", log: (m) => logs.push(m) });
    expect(endpoint.url).toBe("redis://127.0.0.1:6379");
    expect(endpoint.stop).toBeUndefined();
    expect(logs).toEqual([]);
  });

  it("does not mistake another service for Redis", async () => {
    const server = net.createServer((socket) => socket.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    try {
      expect(await redisAnswers("127.0.0.1", port)).toBe(false);
    } finally {
      server.close();
    }
    expect(await redisAnswers("127.0.0.1", 1)).toBe(false);
  });
});
