import Fastify, { type FastifyInstance } from "fastify";
import { afterEach, describe, expect, it } from "vitest";
import { registerBuildRoutes } from "./build-routes.js";
import type { BuildService } from "./build-service.js";
import { registerErrorHandler } from "./error-handler.js";

let app: FastifyInstance | undefined;

afterEach(async () => {
  await app?.close();
  app = undefined;
});

async function buildApp(): Promise<FastifyInstance> {
  app = Fastify({ logger: false });
  registerErrorHandler(app);
  const service = {
    poll: () => Promise.resolve({ status: 404, headers: {}, body: { status: 404, detail: "x" } }),
  } as unknown as BuildService;
  registerBuildRoutes(app, service);
  app.get("/json/v1/*", () => ({}));
  await app.ready();
  return app;
}

describe("wrong method on a known path", () => {
  it("answers 405 with Allow, as upstream, for POST /api/v1/build/<hash>", async () => {
    const res = await (await buildApp()).inject({ method: "POST", url: `/api/v1/build/${"a".repeat(64)}?1` });
    expect(res.statusCode).toBe(405);
    expect(res.headers.allow).toBe("GET, HEAD");
    expect(res.json()).toMatchObject({ status: 405, title: "Method Not Allowed" });
    expect(typeof res.json<{ detail: unknown }>().detail).toBe("string");
  });

  it("answers 405 for GET /api/v1/build and for a wildcard route", async () => {
    const a = await buildApp();
    const get = await a.inject({ method: "GET", url: "/api/v1/build" });
    expect(get.statusCode).toBe(405);
    expect(get.headers.allow).toBe("POST");
    const del = await a.inject({ method: "DELETE", url: "/json/v1/overview.json" });
    expect(del.statusCode).toBe(405);
    expect(del.headers.allow).toBe("GET, HEAD");
  });

  it("keeps 404 for unknown paths", async () => {
    const res = await (await buildApp()).inject({ method: "POST", url: "/api/v1/nothing" });
    expect(res.statusCode).toBe(404);
    expect(res.headers.allow).toBeUndefined();
  });
});
