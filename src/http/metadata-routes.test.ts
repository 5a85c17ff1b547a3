import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sampleUpstreamTree } from "../../test/support/fixture-upstream.js";
import { FakeQueue, fakeUpstreamClient } from "../../test/support/pipeline-fakes.js";
import { loadConfig } from "../config/config.js";
import type { Stats } from "../stats/stats.js";
import type { Store } from "../store/store.js";
import { Catalog } from "../upstream/catalog.js";
import { createApp, type AsuApp } from "./app.js";
import { buildOverview } from "./metadata-routes.js";

/**
 * Metadata routes with response schemas (issue #15, item 9): /openapi.json documents the
 * bodies, error bodies included, and the schemas drop nothing clients read.
 */

let asu: AsuApp;
let deps: Parameters<typeof buildOverview>[0];

beforeAll(async () => {
  const config = loadConfig({
    cwd: mkdtempSync(path.join(tmpdir(), "asu-meta-")),
    env: {},
    overrides: { branches: { "22.03": { enabled: false } } },
  });
  const upstream = fakeUpstreamClient(sampleUpstreamTree()).client;
  const catalog = new Catalog(config, upstream);
  const stats = { countRequest: () => undefined } as unknown as Stats;
  deps = { config, catalog, upstream, stats };
  asu = await createApp({
    ...deps,
    queue: new FakeQueue().asQueue,
    store: {} as Store,
    logger: false,
  });
});

afterAll(async () => {
  await asu.app.close();
});

describe("metadata routes", () => {
  it("documents the answers and the error body in /openapi.json", async () => {
    const doc = (await asu.app.inject({ method: "GET", url: "/openapi.json" })).json<{
      paths: Record<
        string,
        { get: { responses: Record<string, { content: Record<string, { schema: unknown }> }> } }
      >;
    }>();
    const overview = doc.paths["/json/v1/overview.json"]?.get.responses;
    expect(Object.keys(overview ?? {}).sort()).toEqual(["200", "4XX", "5XX"]);
    expect(overview?.["200"]?.content["application/json"]?.schema).toMatchObject({
      properties: { server: { properties: { max_defaults_length: { type: "integer" } } } },
    });
    expect(overview?.["4XX"]?.content["application/json"]?.schema).toMatchObject({
      required: ["status", "title", "detail"],
      properties: { detail: { type: "string" } },
    });
    const revision = doc.paths["/api/v1/revision/{version}/{target}/{subtarget}"]?.get.responses;
    expect(revision?.["200"]?.content["application/json"]?.schema).toMatchObject({
      properties: { revision: { type: "string" } },
    });
  });

  it("serialises overview.json exactly as built: the schema drops no field", async () => {
    const res = await asu.app.inject({ method: "GET", url: "/json/v1/overview.json?1696506154265" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual(JSON.parse(JSON.stringify(await buildOverview(deps))));
  });

  it("passes upstream's own profile fields through, and answers a miss with the error body", async () => {
    const profile = await asu.app.inject({
      method: "GET",
      url: "/json/v1/releases/24.10.4/targets/ath79/generic/tplink_archer-c7-v5.json",
    });
    expect(profile.statusCode).toBe(200);
    expect(profile.json()).toMatchObject({
      id: "tplink_archer-c7-v5",
      device_packages: ["kmod-ath10k-ct", "ath10k-firmware-qca988x-ct"],
      image_prefix: "openwrt-24.10.4-ath79-generic-tplink_archer-c7-v5",
    });
    const missing = await asu.app.inject({
      method: "GET",
      url: "/json/v1/releases/24.10.4/targets/ath79/generic/no-such-device.json",
    });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toEqual({
      status: 404,
      title: "Not Found",
      detail: expect.stringMatching(/^Unknown profile: no-such-device\./) as unknown,
    });
  });
});
