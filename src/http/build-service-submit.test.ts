import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { sampleUpstreamTree } from "../../test/support/fixture-upstream.js";
import { FakeQueue, fakeUpstreamClient } from "../../test/support/pipeline-fakes.js";
import { loadConfig, type RawConfig } from "../config/config.js";
import { normalizeRequest } from "../request/normalize-request.js";
import { requestHash } from "../request/request-hash.js";
import { OverloadedError, UnknownPackageError, ValidationError } from "../shared/errors.js";
import { Catalog } from "../upstream/catalog.js";
import { BuildService, RateLimitedError } from "./build-service.js";

/**
 * BuildService.submit, branch by branch (issue #15, item 7), over an in-memory queue and an
 * upstream client answered from memory: no Redis, no sockets.
 */

const body = { version: "23.05.4", target: "ath79/generic", profile: "tplink,archer-c7-v5" };
const hash = requestHash(normalizeRequest(body));

function setup(overrides: Partial<RawConfig> = {}) {
  const config = loadConfig({
    cwd: mkdtempSync(path.join(tmpdir(), "asu-submit-")),
    env: {},
    overrides: { branches: { "22.03": { enabled: false } }, max_pending_jobs: 5, ...overrides },
  });
  const upstream = fakeUpstreamClient(sampleUpstreamTree());
  const queue = new FakeQueue();
  const events: string[] = [];
  const service = new BuildService({
    config,
    queue: queue.asQueue,
    upstream: upstream.client,
    catalog: new Catalog(config, upstream.client),
    onEvent: (e) => events.push(e),
  });
  return { service, queue, upstream, events };
}

describe("BuildService.submit", () => {
  it("queues a new valid request under its hash and answers 202 with the queue position", async () => {
    const t = setup();
    const reply = await t.service.submit(body, "192.0.2.1");
    expect(reply.status).toBe(202);
    expect(reply.headers).toEqual({ "X-Imagebuilder-Status": "queued", "X-Queue-Position": "1" });
    expect(reply.body).toMatchObject({
      status: 202,
      detail: "queued",
      queue_position: 1,
      request_hash: hash,
    });
    expect(t.queue.enqueued.map((e) => [e.hash, e.data.profile])).toEqual([[hash, "tplink_archer-c7-v5"]]);
    expect(t.events).toEqual(["request", "enqueued"]);
  });

  it("answers a cache hit from the stored result, without asking upstream", async () => {
    const t = setup();
    await t.queue.setResult(hash, 200, '{"status":200,"detail":"done"}', 60);
    const reply = await t.service.submit(body, "192.0.2.1");
    expect([reply.status, reply.body]).toEqual([200, '{"status":200,"detail":"done"}']);
    expect(t.upstream.fetched).toEqual([]);
    expect(t.events).toEqual(["request", "cache_hit"]);
  });

  it("answers with the running job's stage for a request already being built", async () => {
    const t = setup();
    t.queue.jobs.set(hash, {
      state: "started",
      stage: "building_image",
      enqueuedAt: 1,
      request: normalizeRequest(body),
    });
    const reply = await t.service.submit(body, "192.0.2.1");
    expect(reply.body).toMatchObject({
      status: 202,
      detail: "started",
      imagebuilder_status: "building_image",
    });
    expect(t.queue.enqueued).toEqual([]);
  });

  it("refuses an unknown target (400) and unknown packages (422) before queueing", async () => {
    const t = setup();
    await expect(t.service.submit({ ...body, target: "nope/nope" }, "192.0.2.1")).rejects.toBeInstanceOf(
      ValidationError,
    );
    await expect(
      t.service.submit({ ...body, packages: ["no-such-package"] }, "192.0.2.1"),
    ).rejects.toBeInstanceOf(UnknownPackageError);
    expect(t.queue.enqueued).toEqual([]);
  });

  it("refuses with 429 when the client is over build_rate_limit", async () => {
    const t = setup();
    t.queue.rateLimited = true;
    await expect(t.service.submit(body, "192.0.2.1")).rejects.toBeInstanceOf(RateLimitedError);
    expect(t.events).toContain("rate_limited");
    expect(t.queue.enqueued).toEqual([]);
  });

  it("refuses with 529 when max_pending_jobs are waiting", async () => {
    const t = setup();
    t.queue.pending = 5;
    const err = await t.service.submit(body, "192.0.2.1").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OverloadedError);
    expect((err as OverloadedError).status).toBe(529);
    expect(t.queue.enqueued).toEqual([]);
  });
});
