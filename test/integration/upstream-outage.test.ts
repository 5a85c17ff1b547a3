import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  build,
  request,
  startMirror,
  startTestServer,
  stopStack,
  type Mirror,
  type TestServer,
} from "./harness.js";

// Issue #10: with the download server gone, cached results and cached metadata are still
// served, and what needs fresh data gets a clear 5xx JSON answer quickly, not a hang.

let mirror: Mirror;
let api: TestServer;
let mirrorClosed = false;

beforeAll(async () => {
  mirror = await startMirror();
  api = await startTestServer(mirror);
});

afterAll(async () => {
  // The test closes the mirror itself.
  await stopStack({ api });
  if (!mirrorClosed) await mirror?.close();
});

describe("upstream outage", () => {
  it("serves cached builds and metadata, and answers 5xx JSON for what needs upstream", async () => {
    const body = {
      version: "23.05.4",
      target: "ath79/generic",
      profile: "tplink_archer-c7-v5",
      packages: ["htop"],
    };
    const done = await build(api.url, body);
    expect(done.status, done.text).toBe(200);
    const overview = await request(api.url, "GET", "/json/v1/overview.json");
    expect(overview.status).toBe(200);

    await mirror.close();
    mirrorClosed = true;

    const cached = await request(api.url, "POST", "/api/v1/build", body);
    expect(cached.status).toBe(200);
    expect(cached.body.request_hash).toBe(done.body.request_hash);
    expect((await request(api.url, "GET", "/json/v1/overview.json")).status).toBe(200);

    // A target never fetched before needs upstream.
    const started = performance.now();
    const fresh = await request(api.url, "POST", "/api/v1/build", {
      version: "24.10.4",
      target: "x86/64",
      profile: "generic",
    });
    const ms = Math.round(performance.now() - started);
    console.log(`new build with upstream down: ${fresh.status} after ${ms} ms`);
    expect([502, 503, 504]).toContain(fresh.status);
    expect(fresh.body.status).toBe(fresh.status);
    expect(String(fresh.body.detail)).toMatch(/upstream/i);
    expect(ms).toBeLessThan(5000);
    // The server is still up for everything else.
    expect((await request(api.url, "GET", "/healthz")).status).toBe(200);
    expect((await request(api.url, "GET", "/readyz")).status).toBe(200);
  });
});
