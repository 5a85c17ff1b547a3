import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { redisAnswers, resolveRedis, startEmbeddedRedis } from "../../src/queue/embedded-redis.js";

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

describe("startEmbeddedRedis", () => {
  it("starts redis-server with a fresh password: without it nothing on this host gets in", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "asu-redis-"));
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as net.AddressInfo).port;
    await new Promise((resolve) => server.close(resolve));
    const endpoint = await startEmbeddedRedis({ dataDir: dir, port, log: () => {} });
    try {
      const password = (await readFile(path.join(dir, "password"), "utf8")).trim();
      expect(password).toMatch(/^[0-9a-f]{48}$/);
      expect((await stat(path.join(dir, "password"))).mode & 0o777).toBe(0o600);
      expect(endpoint.url).toBe(`redis://:${password}@127.0.0.1:${port}`);
      // An intruder (a build once was one) is refused.
      const reply = await new Promise<string>((resolve, reject) => {
        const socket = net.connect({ host: "127.0.0.1", port }, () =>
          socket.write("SET asu:result:forged 200{}\r\n"),
        );
        socket.once("data", (d) => {
          socket.destroy();
          resolve(d.toString());
        });
        socket.once("error", reject);
      });
      expect(reply).toMatch(/^-NOAUTH/);
      expect(await redisAnswers("127.0.0.1", port)).toBe(false);
      const client = new Redis(endpoint.url);
      expect(await client.ping()).toBe("PONG");
      client.disconnect();
    } finally {
      await endpoint.stop?.();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
