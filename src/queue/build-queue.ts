import { Queue, Worker, UnrecoverableError, WaitingError, type Job } from "bullmq";
import { Redis } from "ioredis";
import type { NormalizedRequest } from "../request/normalize-request.js";
import type { BuildJobData, BuildStage, StoredResult } from "./build-job.js";
import {
  BuildEventHub,
  BuildEventLog,
  type BuildEventHubOptions,
  type BuildEventLimits,
  type LogSink,
} from "./build-events.js";
import { QueueUnavailableError, isRedisConnectionError } from "./queue-errors.js";

export const QUEUE_NAME = "build";

export interface BuildQueueOptions {
  redisUrl: string;
  /** Key prefix; each test file uses its own so files can run in parallel. */
  prefix: string;
  /**
   * Longest a request-path Redis call may take before it fails with QueueUnavailableError
   * (503). Default 1500 ms, so a client hears within 2 s that Redis is down.
   */
  commandTimeoutMs?: number;
  /** Bounds of the live event streams (issue #14); tests lower them. */
  eventLimits?: Partial<BuildEventLimits>;
}

export type JobStatus =
  | { state: "queued"; position: number; enqueuedAt: number; request: NormalizedRequest }
  | { state: "started"; stage: BuildStage; enqueuedAt: number; request: NormalizedRequest }
  | { state: "unknown" };

/**
 * The only module that talks to Redis for builds. BullMQ holds the queue (job id =
 * request hash, so identical requests build once); finished results live in plain keys
 * `<prefix>:result:<hash>` with a per-kind TTL, so a cache hit is a single GET.
 */
export class BuildQueue {
  readonly redis: Redis;
  readonly queue: Queue<BuildJobData>;
  /** Live progress streams: stages, output lines, result markers (issue #14). */
  readonly events: BuildEventLog;
  private readonly prefix: string;
  private readonly redisUrl: string;
  private readonly commandTimeoutMs: number;
  /** Jobs this process's worker is running, with the lock token BullMQ gave it. */
  private readonly active = new Map<string, { job: Job<BuildJobData>; token: string | undefined }>();
  /** Jobs given back to the queue at shutdown: their late outcome must not be recorded. */
  private readonly released = new Set<string>();
  /** Event stream and output-line batcher of each build running here. */
  private readonly runs = new Map<string, { key: string; sink: LogSink }>();
  private idleWaiters: (() => void)[] = [];
  /** The request-path connection has been up at least once. */
  private wasReady = false;

  constructor(opts: BuildQueueOptions) {
    this.prefix = opts.prefix;
    this.redisUrl = opts.redisUrl;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 1500;
    // The request path's connection fails fast while Redis is away (issue #10): no offline
    // queue, one retry, and a command timeout for a Redis that accepts but does not answer.
    // It never blocks, so BullMQ accepts it for a Queue (only Worker connections need
    // maxRetriesPerRequest: null). ioredis keeps reconnecting in the background.
    const failFast = {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.commandTimeoutMs,
      retryStrategy: (times: number) => Math.min(times * 200, 2000),
    };
    // No auto-pipelining: it saved socket writes on cache hits but raised the API's peak RSS
    // under load from ~167 to ~225 MiB (issue #13, docs/decisions/012), and Bull users saw
    // jobs lose their data with it (OptimalBits/bull#2276).
    this.redis = new Redis(opts.redisUrl, failFast);
    // Without a listener ioredis prints every failed reconnect; readiness reports the state.
    this.redis.on("error", () => undefined);
    this.redis.once("ready", () => {
      this.wasReady = true;
    });
    this.queue = new Queue<BuildJobData>(QUEUE_NAME, {
      connection: this.redis,
      prefix: opts.prefix,
    });
    this.queue.on("error", () => undefined);
    this.events = new BuildEventLog(this.redis, opts.prefix, opts.eventLimits);
  }

  /**
   * The hub that wakes an API server's event streams: one more connection, blocking, for
   * all of them together (issue #14, docs/decisions/010).
   */
  createEventHub(opts: BuildEventHubOptions = {}): BuildEventHub {
    return new BuildEventHub(this.redisUrl, this.redis, opts);
  }

  /** Whether the request-path connection is up (readiness, and the fast 503). */
  get available(): boolean {
    return this.redis.status === "ready";
  }

  /**
   * Runs a Redis call for a request, or fails with QueueUnavailableError within
   * commandTimeoutMs: at once when the connection is down, and on a deadline for calls that
   * wait inside BullMQ (its Queue awaits a first connection before any command).
   */
  private async guard<T>(fn: () => Promise<T>): Promise<T> {
    // Before the first connection (a request right after boot) wait for it within the
    // deadline; after an established connection was lost, fail at once.
    if (!this.available && this.wasReady) throw new QueueUnavailableError();
    let timer: NodeJS.Timeout | undefined;
    const giveUp = new AbortController();
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        giveUp.abort();
        reject(new QueueUnavailableError());
      }, this.commandTimeoutMs);
    });
    const work = (this.available ? Promise.resolve() : this.firstReady(giveUp.signal)).then(fn);
    // The call may settle after the deadline; its late rejection is not an unhandled one.
    work.catch(() => undefined);
    try {
      return await Promise.race([work, deadline]);
    } catch (err) {
      throw isRedisConnectionError(err) ? new QueueUnavailableError(err) : err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves on the first connection; stays pending once `signal` aborts (the deadline won). */
  private firstReady(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const ready = () => resolve();
      this.redis.once("ready", ready);
      signal.addEventListener("abort", () => this.redis.off("ready", ready), { once: true });
    });
  }

  /** Readiness: Redis answers a PING within the command timeout. */
  async ping(): Promise<void> {
    await this.guard(() => this.redis.ping());
  }

  private resultKey(hash: string): string {
    return `${this.prefix}:result:${hash}`;
  }

  /**
   * A stored result is "<status><json>": the HTTP status in the first three characters,
   * so a cache hit can be answered without parsing the body.
   */
  async getResult(hash: string): Promise<StoredResult | undefined> {
    const raw = await this.command(() => this.redis.get(this.resultKey(hash)));
    if (raw === null) return undefined;
    return { status: Number(raw.slice(0, 3)), body: raw.slice(3) };
  }

  /**
   * guard() for one plain ioredis command, without its timer on the hot path (a cache hit):
   * on a ready connection ioredis's own commandTimeout bounds the call.
   */
  private async command<T>(fn: () => Promise<T>): Promise<T> {
    if (this.redis.status !== "ready") return this.guard(fn);
    try {
      return await fn();
    } catch (err) {
      throw isRedisConnectionError(err) ? new QueueUnavailableError(err) : err;
    }
  }

  async setResult(hash: string, status: number, body: string, ttlSeconds: number): Promise<void> {
    // A released build was killed at shutdown; another worker builds it again.
    if (this.released.has(hash)) return;
    const value = `${status}${body}`;
    const ttl = Math.max(1, Math.round(ttlSeconds));
    const run = this.runs.get(hash);
    if (!run) {
      await this.redis.set(this.resultKey(hash), value, "EX", ttl);
      return;
    }
    // Output lines first, then the result and its marker in one transaction: a reader that
    // sees the marker finds the result.
    await run.sink.flush();
    const multi = this.redis.multi().set(this.resultKey(hash), value, "EX", ttl);
    this.events.addResult(multi, run.key, status);
    const replies = await multi.exec();
    const failed = replies?.[0]?.[0];
    if (failed) throw failed;
  }

  async deleteResult(hash: string): Promise<void> {
    await this.redis.del(this.resultKey(hash));
  }

  /** Hashes of every result still cached, for store garbage collection. */
  async liveResultHashes(): Promise<Set<string>> {
    const hashes = new Set<string>();
    const prefix = `${this.prefix}:result:`;
    let cursor = "0";
    do {
      const [next, keys] = await this.redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
      cursor = next;
      for (const key of keys) hashes.add(key.slice(prefix.length));
    } while (cursor !== "0");
    return hashes;
  }

  async status(hash: string): Promise<JobStatus> {
    return this.guard(() => this.jobStatus(hash));
  }

  private async jobStatus(hash: string): Promise<JobStatus> {
    const job = await this.queue.getJob(hash);
    if (!job) return { state: "unknown" };
    const state = await job.getState();
    const { enqueued_at: enqueuedAt, request } = job.data;
    if (
      state === "waiting" ||
      state === "prioritized" ||
      state === "delayed" ||
      state === "waiting-children"
    ) {
      return { state: "queued", position: await this.position(hash), enqueuedAt, request };
    }
    if (state === "active") {
      const progress = job.progress as { stage?: BuildStage } | number | undefined;
      const stage = typeof progress === "object" && progress?.stage ? progress.stage : "init";
      return { state: "started", stage, enqueuedAt, request };
    }
    // completed/failed jobs are removed at once; their result key is the truth.
    return { state: "unknown" };
  }

  /** Jobs ahead of this one: BullMQ LPUSHes new jobs and workers take from the tail. */
  private async position(hash: string): Promise<number> {
    const key = this.queue.keys.wait as string;
    const [index, length] = await Promise.all([this.redis.lpos(key, hash), this.redis.llen(key)]);
    if (index === null) return 0;
    return Math.max(0, length - 1 - index);
  }

  /**
   * Fixed one-minute window per client address for new builds. Returns true when the
   * address is over `limit`. Cache hits and polls never get here.
   */
  async hitRateLimit(address: string, limit: number): Promise<boolean> {
    const key = `${this.prefix}:ratelimit:${address}:${Math.floor(Date.now() / 60_000)}`;
    const [[, count]] = (await this.guard(() => this.redis.multi().incr(key).expire(key, 61).exec())) as [
      [Error | null, number],
    ];
    return count > limit;
  }

  async pendingCount(): Promise<number> {
    return this.guard(() => this.queue.getWaitingCount());
  }

  async activeCount(): Promise<number> {
    return this.guard(() => this.queue.getActiveCount());
  }

  /**
   * Adds a build unless one with this id exists. BullMQ ignores a second add with the
   * same jobId, which is what makes 50 concurrent identical POSTs one build.
   */
  async enqueue(hash: string, data: BuildJobData): Promise<void> {
    await this.guard(() =>
      this.queue.add("build", data, {
        jobId: hash,
        attempts: 3,
        backoff: { type: "exponential", delay: 5000 },
        // Results are kept in our own keys; finished jobs would otherwise block a rebuild
        // after the result expired.
        removeOnComplete: true,
        removeOnFail: true,
      }),
    );
  }

  /** Starts a BullMQ worker that runs `processor` for each build. */
  createWorker(
    processor: (job: BuildJobContext) => Promise<void>,
    opts: { concurrency: number; lockDurationMs?: number },
  ): Worker<BuildJobData> {
    return new Worker<BuildJobData>(
      QUEUE_NAME,
      async (job: Job<BuildJobData>, token?: string) => {
        const id = job.id as string;
        this.active.set(id, { job, token });
        try {
          await this.runTracked(job, processor);
        } catch (err) {
          // Released at shutdown: the job is back in the wait list; BullMQ must not fail it.
          if (this.released.has(id)) throw new WaitingError();
          throw err;
        } finally {
          this.active.delete(id);
          if (this.active.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
        }
        if (this.released.has(id)) throw new WaitingError();
      },
      {
        // Options, not an ioredis instance: BullMQ then owns the connections and closes them
        // with the worker. Blocking connections need maxRetriesPerRequest: null (BullMQ's
        // docs); they wait through an outage and resume when Redis returns.
        connection: { url: this.redisUrl, maxRetriesPerRequest: null },
        prefix: this.prefix,
        concurrency: opts.concurrency,
        lockDuration: opts.lockDurationMs ?? 30_000,
        // A worker that dies mid-build leaves a stalled job; another worker takes it over.
        stalledInterval: Math.min(30_000, opts.lockDurationMs ?? 30_000),
        maxStalledCount: 2,
      },
    );
  }

  private async runTracked(
    job: Job<BuildJobData>,
    processor: (job: BuildJobContext) => Promise<void>,
  ): Promise<void> {
    const id = job.id as string;
    const key = this.events.key(id, job.data.enqueued_at);
    const sink = this.events.createLogSink(key);
    this.runs.set(id, { key, sink });
    try {
      await processor({
        id,
        data: job.data,
        attemptsMade: job.attemptsMade,
        maxAttempts: job.opts.attempts ?? 1,
        setStage: async (stage) => {
          await job.updateProgress({ stage });
          // done/failed go into the stream with the result (setResult). Events are progress
          // for watchers: losing one must never fail the build.
          if (stage === "done" || stage === "failed") return;
          await sink.flush();
          await this.events.appendStatus(key, stage).catch(() => undefined);
        },
        log: (stream, line) => sink.push(stream, line),
      });
    } finally {
      await sink.flush();
      this.runs.delete(id);
    }
  }

  /** Builds this process is running now. */
  get runningJobs(): number {
    return this.active.size;
  }

  /** Resolves true once no build runs here, or false after `timeoutMs`. */
  async waitIdle(timeoutMs: number): Promise<boolean> {
    if (this.active.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const idle = new Promise<boolean>((resolve) => {
      this.idleWaiters.push(() => resolve(true));
      timer = setTimeout(() => resolve(false), Math.max(0, timeoutMs));
    });
    try {
      return await idle;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Shutdown: puts every build still running here back in the wait list, so another worker
   * takes it at once. If Redis is away this fails; the lock then expires and BullMQ's
   * stalled-job check hands the job over (worker_lock_duration). Returns the released ids.
   */
  async releaseActiveJobs(): Promise<string[]> {
    const ids = [...this.active.keys()];
    for (const id of ids) this.released.add(id);
    await Promise.allSettled(
      [...this.active.values()].map(({ job, token }) => this.guard(() => job.moveToWait(token))),
    );
    return ids;
  }

  async close(): Promise<void> {
    if (!this.wasReady) {
      // Never connected: BullMQ's pending first-connection wait rejects once the socket
      // ends; it must end while the queue still listens for errors, or the rejection is
      // unhandled.
      this.disconnect();
      await this.queue.close();
      return;
    }
    await this.queue.close();
    this.disconnect();
  }

  /** Drops the connection at once (close() did not finish in time). */
  disconnect(): void {
    this.redis.disconnect();
  }
}

export interface BuildJobContext {
  id: string;
  data: BuildJobData;
  attemptsMade: number;
  maxAttempts: number;
  setStage(stage: BuildStage): Promise<void>;
  /** Streams one line of the build's output to watchers (bounded, batched; issue #14). */
  log?(stream: "stdout" | "stderr", line: string): void;
}

/** Thrown by the processor for failures that retrying cannot fix (BullMQ skips the retries). */
export { UnrecoverableError };
