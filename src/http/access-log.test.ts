import { Writable } from "node:stream";
import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { AccessLogController } from "./access-log.js";

function appWithLog() {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  const app = Fastify({ logger: { level: "info", stream }, logController: new AccessLogController() });
  app.get("/ok", async () => ({ ok: true }));
  app.get("/boom", async () => {
    throw new Error("boom");
  });
  return { app, lines };
}

describe("AccessLogController", () => {
  it("writes one access line per request with the method, URL, address, status and time", async () => {
    const { app, lines } = appWithLog();
    const res = await app.inject({ method: "GET", url: "/ok?1733100000000", remoteAddress: "192.0.2.7" });
    expect(res.statusCode).toBe(200);
    const access = lines.filter((l) => l.req !== undefined || l.res !== undefined);
    expect(access).toHaveLength(1);
    expect(access[0]).toMatchObject({
      level: 30,
      msg: "request completed",
      req: { method: "GET", url: "/ok?1733100000000", remoteAddress: "192.0.2.7" },
      res: { statusCode: 200 },
    });
    expect(typeof access[0]?.responseTime).toBe("number");
    expect(typeof access[0]?.reqId).toBe("string");
    await app.close();
  });

  it("still logs a failed request with its status", async () => {
    const { app, lines } = appWithLog();
    const res = await app.inject({ method: "GET", url: "/boom" });
    expect(res.statusCode).toBe(500);
    const access = lines.filter((l) => l.msg === "request completed");
    expect(access).toHaveLength(1);
    expect(access[0]).toMatchObject({ req: { method: "GET", url: "/boom" }, res: { statusCode: 500 } });
    await app.close();
  });
});
