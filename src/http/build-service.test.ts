import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../config/config.js";
import { normalizeRequest } from "../request/normalize-request.js";
import type { StoredResult } from "../queue/build-job.js";
import type { BuildQueue, JobStatus } from "../queue/build-queue.js";
import type { Catalog } from "../upstream/catalog.js";
import type { UpstreamClient } from "../upstream/upstream-client.js";
import { BuildService, resultTtl } from "./build-service.js";

describe("resultTtl", () => {
  const config = loadConfig({ cwd: mkdtempSync(path.join(tmpdir(), "asu-ttl-")), env: {} });
  const base = { version: "24.10.4", target: "ath79/generic", profile: "x" };

  it("keeps fully pinned builds longest, others shorter", () => {
    expect(resultTtl(normalizeRequest({ ...base, packages_versions: { vim: "1" } }), config)).toBe(
      config.build_ttl,
    );
    expect(resultTtl(normalizeRequest({ ...base, packages: ["vim"] }), config)).toBe(
      config.build_ttl_unversioned,
    );
  });

  it("does not count a name like toString as pinned by Object.prototype", () => {
    for (const name of ["toString", "constructor", "valueOf", "hasOwnProperty", "__proto__"]) {
      expect(resultTtl(normalizeRequest({ ...base, packages: [name] }), config)).toBe(
        config.build_ttl_unversioned,
      );
    }
  });
});

/** A BuildQueue stand-in: results and job states in memory, with a hook between calls. */
class FakeQueue {
  results = new Map<string, StoredResult>();
  jobs = new Map<string, JobStatus>();
  /** Runs inside status(), before the job is looked up: lets a test finish a job "between" reads. */
  beforeStatus: (() => void) | undefined;

  async getResult(hash: string): Promise<StoredResult | undefined> {
    return Promise.resolve(this.results.get(hash));
  }

  async status(hash: string): Promise<JobStatus> {
    this.beforeStatus?.();
    return Promise.resolve(this.jobs.get(hash) ?? { state: "unknown" });
  }
}

function serviceWith(queue: FakeQueue): BuildService {
  const config = loadConfig({ cwd: mkdtempSync(path.join(tmpdir(), "asu-bs-")), env: {} });
  return new BuildService({
    config,
    queue: queue as unknown as BuildQueue,
    upstream: {} as UpstreamClient,
    catalog: {} as Catalog,
  });
}

const HASH = "a".repeat(64);
const request = normalizeRequest({ version: "24.10.4", target: "ath79/generic", profile: "x" });

describe("BuildService answers", () => {
  it("sends X-Queue-Position: 0 on every build answer that is not queued, as upstream", async () => {
    const queue = new FakeQueue();
    const service = serviceWith(queue);

    queue.jobs.set(HASH, { state: "started", stage: "building_image", enqueuedAt: 1, request });
    const building = await service.poll(HASH);
    expect(building.status).toBe(202);
    expect(building.headers).toEqual({ "X-Imagebuilder-Status": "building_image", "X-Queue-Position": "0" });
    expect(building.body).not.toHaveProperty("queue_position");

    queue.results.set(HASH, { status: 200, body: '{"status":200}' });
    expect((await service.poll(HASH)).headers).toEqual({
      "X-Imagebuilder-Status": "done",
      "X-Queue-Position": "0",
    });
    queue.results.set(HASH, { status: 500, body: '{"status":500}' });
    expect((await service.poll(HASH)).headers).toEqual({
      "X-Imagebuilder-Status": "failed",
      "X-Queue-Position": "0",
    });
  });

  it("never answers 404 for a build that finishes between reading the result and the job", async () => {
    const queue = new FakeQueue();
    const service = serviceWith(queue);
    queue.jobs.set(HASH, { state: "started", stage: "signing_images", enqueuedAt: 1, request });
    // The worker stores the result and BullMQ removes the job after poll read no result.
    queue.beforeStatus = () => {
      queue.results.set(HASH, { status: 200, body: '{"status":200,"detail":"done"}' });
      queue.jobs.delete(HASH);
    };
    const answer = await service.poll(HASH);
    expect(answer.status).toBe(200);
    expect(answer.body).toBe('{"status":200,"detail":"done"}');
  });

  it("still answers 404 for a hash that is neither built nor queued", async () => {
    const answer = await serviceWith(new FakeQueue()).poll(HASH);
    expect(answer.status).toBe(404);
    expect(answer.body).toMatchObject({ status: 404, title: "Not Found" });
  });
});
