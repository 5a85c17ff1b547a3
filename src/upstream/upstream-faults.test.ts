import { once } from "node:events";
import { createServer, type Server } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { UpstreamError } from "../shared/errors.js";
import {
  sampleUpstreamTree,
  startFixtureUpstream,
  type FixtureUpstream,
} from "../../test/support/fixture-upstream.js";
import { UpstreamClient } from "./upstream-client.js";

// Issue #10, upstream faults: bounded time per request, stale-if-error, no unbounded memory.

let fixture: FixtureUpstream | undefined;
let raw: Server | undefined;
let clock = 1_000_000;

afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
  raw?.closeAllConnections();
  raw?.close();
  raw = undefined;
});

/** A server whose every answer is written by `handler`. */
async function rawUpstream(handler: Parameters<typeof createServer>[1]): Promise<string> {
  raw = createServer(handler);
  raw.listen(0, "127.0.0.1");
  await once(raw, "listening");
  return `http://127.0.0.1:${(raw.address() as { port: number }).port}`;
}

async function rejection(promise: Promise<unknown>): Promise<UpstreamError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

describe("upstream faults", () => {
  it("a response that trickles fails with 504 within the request timeout", async () => {
    const url = await rawUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.write("{");
      // one byte every 100 ms, forever: headers came quickly, the body never ends
      const timer = setInterval(() => res.write(" "), 100);
      res.on("close", () => clearInterval(timer));
    });
    const started = performance.now();
    const err = await rejection(new UpstreamClient({ baseUrl: url, timeoutMs: 500 }).getVersions());
    expect(err.status).toBe(504);
    expect(performance.now() - started).toBeLessThan(1500);
  });

  it("garbage from upstream does not replace a good cached copy (stale-if-error)", async () => {
    fixture = await startFixtureUpstream(sampleUpstreamTree());
    const client = new UpstreamClient({ baseUrl: fixture.url, now: () => clock, ttlMs: 60_000 });
    const good = await client.getVersions();
    fixture.set(".versions.json", "<html>502 Bad Gateway</html>");
    clock += 60_000;
    expect((await client.getVersions()).versions_list).toEqual(good.versions_list);
  });

  it("refuses a document larger than the cap instead of buffering it", async () => {
    const url = await rawUpstream((_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      const chunk = Buffer.alloc(1024 * 1024, 0x20);
      let sent = 0;
      const push = () => {
        while (sent < 512 && res.write(chunk)) sent++;
        if (sent < 512) res.once("drain", push);
        else res.end();
      };
      push();
    });
    const err = await rejection(
      new UpstreamClient({
        baseUrl: url,
        timeoutMs: 10_000,
        maxDocumentBytes: 8 * 1024 * 1024,
      }).getVersions(),
    );
    expect(err.status).toBe(502);
    expect(err.detail).toMatch(/larger than/);
  });
});
