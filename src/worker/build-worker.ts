import { hostname } from "node:os";
import type { Worker } from "bullmq";
import type { Logger } from "pino";
import type { AsuConfig } from "../config/config.js";
import { UnrecoverableError, type BuildJobContext, type BuildQueue } from "../queue/build-queue.js";
import type { BuildJobData } from "../queue/build-job.js";
import { AsuError, BuildError, isRetryable, isUserFault } from "../shared/errors.js";
import { ACTIVE_TTL_SECONDS, type Stats } from "../stats/stats.js";
import { publishBuildSpans } from "./build-spans.js";
import type { BackgroundTasks } from "./background-tasks.js";
import {
  DEFAULT_LIMITS,
  runBuildPipeline,
  tail,
  type PipelineDeps,
  type PipelineResult,
} from "./build-pipeline.js";
import { checkJob } from "./job-check.js";
import { STALE_REVISION_TTL_SECONDS, StaleRevisionError } from "./revision-check.js";

/**
 * How long a failure of the server's own making (feeds, keys, ImageBuilder, timeouts) is
 * kept: long enough for polling clients to read it, short enough that a retry after the
 * operator fixed things builds again instead of answering "failed" for build_failure_ttl.
 */
export const SERVER_FAULT_TTL_SECONDS = 300;

/** The process's pino logger (src/app.ts); structured fields stay fields. */
export type WorkerLogger = Pick<Logger, "info" | "warn" | "error">;

export interface BuildWorkerDeps extends PipelineDeps {
  config: AsuConfig;
  queue: BuildQueue;
  stats: Stats;
  logger: WorkerLogger;
  /**
   * Where finished builds remove their workspaces after the result is stored, so that the
   * worker takes its next job meanwhile; shutdown waits for it. Without it, a job ends only
   * once its workspace is gone.
   */
  background?: BackgroundTasks;
}

/**
 * Runs builds from the queue. User faults (impossible selection, too big, wrong revision)
 * are stored as failed results at once for build_failure_ttl; anything else is retried by
 * BullMQ when another attempt could help, and stored for SERVER_FAULT_TTL_SECONDS at most:
 * a broken feed or a timeout must not answer "failed" for an hour as if it were the user's.
 */
export function startBuildWorker(deps: BuildWorkerDeps): Worker<BuildJobData> {
  // Reported to Redis so that any API server's /metrics shows every worker's load.
  const workerId = `${hostname()}-${process.pid}`;
  let active = 0;
  const report = (): void => {
    deps.stats.setActiveBuilds(workerId, active).catch((err: unknown) => {
      deps.logger.warn({ err }, "could not report active builds");
    });
  };
  const worker = deps.queue.createWorker(
    async (job) => {
      active += 1;
      report();
      try {
        await processJob(job, deps);
      } finally {
        active -= 1;
        report();
      }
    },
    {
      concurrency: Math.max(1, deps.config.workers),
      lockDurationMs: deps.config.worker_lock_duration * 1000,
    },
  );
  worker.on("error", (err) => deps.logger.error({ err }, "worker error"));
  report();
  const refresh = setInterval(report, (ACTIVE_TTL_SECONDS * 1000) / 4);
  refresh.unref();
  worker.on("closed", () => clearInterval(refresh));
  return worker;
}

export async function processJob(job: BuildJobContext, deps: BuildWorkerDeps): Promise<void> {
  const { config, queue, stats, logger } = deps;
  const refused = checkJob(job.id, job.data, config);
  if (refused !== undefined) {
    // No result is written: the id may be the hash of someone else's request.
    logger.error({ hash: job.id, reason: refused }, "refused a job that no API could have queued");
    throw new UnrecoverableError(`refused job: ${refused}`);
  }
  const req = job.data.request;
  const started = Date.now();
  const facts = { hash: job.id, version: req.version, target: req.target, profile: job.data.profile };
  // A finished build's workspace: removed once the result is stored, whatever happens after.
  let built: PipelineResult | undefined;
  let cleaning: Promise<void> | undefined;
  const cleanUp = (): Promise<void> => {
    if (built === undefined) return Promise.resolve();
    const finished = built;
    cleaning ??= finished.cleanup().catch((err: unknown) => {
      // The client has its result; a leftover workspace is the operator's concern only.
      logger.warn({ ...facts, err: logSummary(err) }, "could not remove a finished build's workspace");
    });
    return cleaning;
  };
  try {
    // Output lines go to the build's event stream as they happen (issue #14).
    const log = job.log;
    const pipelineDeps = log
      ? { ...deps, onOutputLine: (s: "stdout" | "stderr", l: string) => log(s, l) }
      : deps;
    const result = await runBuildPipeline(job.id, job.data, pipelineDeps, job.setStage);
    built = result;
    const clock = result.spans;
    clock.lap("worker");
    await queue.setResult(job.id, 200, JSON.stringify(result.body), job.data.result_ttl);
    clock.lap("set_result");
    // The client can have its answer now: the workspace goes while the worker reports the rest.
    const cleaned = cleanUp();
    await job.setStage("done");
    clock.lap("stage_done");
    const durationMs = Date.now() - started;
    logger.info(
      { ...facts, durationMs, makeMs: result.makeMs, imagebuilderMs: result.imagebuilderMs },
      "build done",
    );
    await stats.recordBuild({
      ...facts,
      packages: req.packages,
      ok: true,
      durationMs: durationMs - result.imagebuilderMs,
      makeMs: result.makeMs,
    });
    clock.lap("stats");
    // From the POST that queued it to the worker's start: API, queue and pickup.
    const queued = started - job.data.enqueued_at;
    void cleaned.then(() => publishBuildSpans({ hash: job.id, spans: { queued, ...clock.spans } }));
  } catch (err) {
    // Decided by the error's type (AsuError.userFault, .retryable): bad signatures, tampered
    // archives and timeouts fail the same way on every attempt.
    const userFault = isUserFault(err);
    const retryable = isRetryable(err);
    const lastAttempt = job.attemptsMade + 1 >= job.maxAttempts;
    const diskFull = diskFullError(err);
    const detail = diskFull
      ? "Error: The server ran out of disk space for this build. Please try again later; the server operator has been told."
      : err instanceof BuildError
        ? err.detail
        : err instanceof AsuError
          ? // ImageBuilder and upstream failures: the server's problem, said so plainly.
            `Error: Could not prepare the ImageBuilder: ${err.detail}. Please try again later or tell the server operator.`
          : "Error: The build failed unexpectedly. Please try again later.";
    if (diskFull) {
      const { path: where, syscall } = diskFull;
      logger.error(
        { ...facts, path: where, syscall },
        "disk full: free space in cache_path or the store (asu gc)",
      );
    }
    // Never the build output: one request with 1,000 bogus packages made a 566 KB log line.
    logger.warn({ ...facts, err: logSummary(err), userFault, retryable, lastAttempt }, "build failed");
    if (!retryable || lastAttempt) {
      const extra = err instanceof AsuError ? err.extra : {};
      const body = {
        status: 500,
        title: "Build failed",
        detail,
        request: req,
        request_hash: job.id,
        enqueued_at: new Date(job.data.enqueued_at).toISOString(),
        imagebuilder_status: "failed",
        stdout: typeof extra.stdout === "string" ? tail(extra.stdout, DEFAULT_LIMITS.outputTailBytes) : "",
        stderr: typeof extra.stderr === "string" ? tail(extra.stderr, DEFAULT_LIMITS.outputTailBytes) : "",
      };
      const ttl = userFault
        ? config.build_failure_ttl
        : Math.min(
            config.build_failure_ttl,
            err instanceof StaleRevisionError ? STALE_REVISION_TTL_SECONDS : SERVER_FAULT_TTL_SECONDS,
          );
      await queue.setResult(job.id, 500, JSON.stringify(body), ttl);
      await job.setStage("failed");
      await stats.recordBuild({
        ...facts,
        packages: req.packages,
        ok: false,
        detail,
        durationMs: Date.now() - started,
        makeMs: 0,
      });
      if (!retryable) throw new UnrecoverableError(detail);
    }
    throw err;
  } finally {
    // In the background when the worker keeps track of it (shutdown waits), else before
    // the job ends.
    if (deps.background) deps.background.track(cleanUp());
    else await cleanUp();
  }
}

/** What a log line says about a failure: its kind and detail, never stdout/stderr. */
function logSummary(err: unknown): Record<string, unknown> {
  if (err instanceof AsuError) {
    return { type: err.name, code: err.code, detail: err.detail.slice(0, 1000) };
  }
  if (err instanceof Error) {
    return { type: err.name, message: err.message.slice(0, 1000), stack: err.stack?.slice(0, 2000) };
  }
  return { message: String(err).slice(0, 1000) };
}

/** ENOSPC (or EDQUOT) anywhere in the error's cause chain: the cache or the store is full. */
function diskFullError(err: unknown): NodeJS.ErrnoException | undefined {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOSPC" || code === "EDQUOT") return e as NodeJS.ErrnoException;
  }
  return undefined;
}
