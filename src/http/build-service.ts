import type { AsuConfig } from "../config/config.js";
import type { BuildQueue, JobStatus } from "../queue/build-queue.js";
import type { BuildJobData } from "../queue/build-job.js";
import type { BuildRequestBody } from "../request/build-request-schema.js";
import { normalizeRequest, type NormalizedRequest } from "../request/normalize-request.js";
import { requestHash } from "../request/request-hash.js";
import { snapshotPin } from "../request/snapshot-pin.js";
import { validateRequest } from "../request/validate-request.js";
import type { Catalog } from "../upstream/catalog.js";
import type { UpstreamClient } from "../upstream/upstream-client.js";
import { AsuError, OverloadedError } from "../shared/errors.js";

/** What the HTTP layer sends: a status, a JSON body (pre-serialised for cache hits) and headers. */
export interface BuildReply {
  status: number;
  body: string | Record<string, unknown>;
  headers: Readonly<Record<string, string>>;
}

export interface BuildServiceDeps {
  config: AsuConfig;
  queue: BuildQueue;
  upstream: UpstreamClient;
  catalog: Catalog;
  /** Counts requests and cache hits; optional so unit tests can leave it out. */
  onEvent?: (event: "request" | "cache_hit" | "enqueued" | "overloaded" | "rate_limited") => void;
}

export class RateLimitedError extends AsuError {
  constructor(limit: number) {
    super(
      429,
      "rate_limited",
      `Too many new build requests from your address (limit ${limit} per minute). Wait a minute and try again; polling existing builds is not limited.`,
    );
  }
}

/** Cache lookup, queue status, validation and enqueueing for `/api/v1/build`. */
export class BuildService {
  constructor(private readonly deps: BuildServiceDeps) {}

  async submit(body: BuildRequestBody, clientAddress: string): Promise<BuildReply> {
    const { config, queue } = this.deps;
    this.deps.onEvent?.("request");
    const request = normalizeRequest(body);
    // Snapshots: upstream's current revision is part of the cache key (docs/decisions/014).
    const pinned = await snapshotPin(request, this.deps);
    const hash = requestHash(request, pinned);

    // Cache hit: one Redis GET, no upstream traffic.
    const cached = await queue.getResult(hash);
    if (cached) {
      this.deps.onEvent?.("cache_hit");
      return storedReply(cached.status, cached.body);
    }
    const existing = await queue.status(hash);
    if (existing.state !== "unknown") return progressReply(hash, existing);
    // Finished between the two reads (see poll): answer with it rather than build again.
    const finished = await queue.getResult(hash);
    if (finished) {
      this.deps.onEvent?.("cache_hit");
      return storedReply(finished.status, finished.body);
    }

    const validated = await validateRequest(request, {
      config,
      catalog: this.deps.catalog,
      upstream: this.deps.upstream,
    });

    if (config.build_rate_limit > 0 && (await queue.hitRateLimit(clientAddress, config.build_rate_limit))) {
      this.deps.onEvent?.("rate_limited");
      throw new RateLimitedError(config.build_rate_limit);
    }
    if ((await queue.pendingCount()) >= config.max_pending_jobs) {
      this.deps.onEvent?.("overloaded");
      throw new OverloadedError(
        `The server has ${config.max_pending_jobs} or more builds waiting. Please try again in a few minutes.`,
      );
    }

    const data: BuildJobData = {
      request,
      profile: validated.profile,
      enqueued_at: Date.now(),
      result_ttl: resultTtl(request, config),
      ...(pinned ? { snapshot_revision: pinned } : {}),
    };
    await queue.enqueue(hash, data);
    this.deps.onEvent?.("enqueued");
    const status = await queue.status(hash);
    if (status.state === "unknown") {
      // Finished between enqueue and now (a very fast build): answer with the result.
      const done = await queue.getResult(hash);
      if (done) return storedReply(done.status, done.body);
      return progressReply(hash, { state: "queued", position: 0, enqueuedAt: data.enqueued_at, request });
    }
    return progressReply(hash, status);
  }

  async poll(hash: string): Promise<BuildReply> {
    const { queue } = this.deps;
    const cached = await queue.getResult(hash);
    if (cached) return storedReply(cached.status, cached.body);
    const status = await queue.status(hash);
    if (status.state === "unknown") {
      // The worker stores the result before BullMQ removes the job, so a job that finished
      // between the two reads above has its result now. LuCI and owut give up on a 404.
      const finished = await queue.getResult(hash);
      if (finished) return storedReply(finished.status, finished.body);
      return {
        status: 404,
        headers: {},
        body: {
          status: 404,
          title: "Not Found",
          detail: `No build with hash ${hash} is known here. It may have expired; send the build request again.`,
        },
      };
    }
    return progressReply(hash, status);
  }
}

/**
 * Result TTLs as upstream ASU: `defaults` builds are short-lived, fully pinned package
 * versions are reproducible and kept longest.
 */
export function resultTtl(request: NormalizedRequest, config: AsuConfig): number {
  if (request.defaults) return config.build_defaults_ttl;
  const wanted = request.packages.filter((p) => !p.startsWith("-"));
  const pinned = wanted.length > 0 && wanted.every((p) => Object.hasOwn(request.packages_versions, p));
  return pinned ? config.build_ttl : config.build_ttl_unversioned;
}

const DONE_HEADERS = Object.freeze({ "X-Imagebuilder-Status": "done", "X-Queue-Position": "0" });
const FAILED_HEADERS = Object.freeze({ "X-Imagebuilder-Status": "failed", "X-Queue-Position": "0" });

/** A stored result goes out as stored: no parse, no serialisation (docs/decisions/001). */
function storedReply(status: number, body: string): BuildReply {
  return { status, body, headers: status === 200 ? DONE_HEADERS : FAILED_HEADERS };
}

function progressReply(hash: string, status: Exclude<JobStatus, { state: "unknown" }>): BuildReply {
  const base = {
    status: 202,
    request_hash: hash,
    enqueued_at: new Date(status.enqueuedAt).toISOString(),
    request: status.request,
  };
  if (status.state === "queued") {
    // LuCI shows a queue position only when the key exists, so it is sent only while queued.
    return {
      status: 202,
      headers: { "X-Imagebuilder-Status": "queued", "X-Queue-Position": String(status.position) },
      body: { ...base, detail: "queued", queue_position: status.position, imagebuilder_status: "queued" },
    };
  }
  const { stage } = status;
  return {
    status: 202,
    // Upstream sends both headers on every build answer; the position is 0 once started.
    headers: { "X-Imagebuilder-Status": stage, "X-Queue-Position": "0" },
    body: { ...base, detail: "started", imagebuilder_status: stage },
  };
}
