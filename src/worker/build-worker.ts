import type { Worker } from "bullmq";
import type { AsuConfig } from "../config/config.js";
import { UnrecoverableError, type BuildJobContext, type BuildQueue } from "../queue/build-queue.js";
import type { BuildJobData } from "../queue/build-job.js";
import { isRetryable } from "../imagebuilder/imagebuilder-errors.js";
import { AsuError, BuildError } from "../shared/errors.js";
import type { Stats } from "../stats/stats.js";
import { runBuildPipeline, type PipelineDeps } from "./build-pipeline.js";
import { checkJob } from "./job-check.js";

export interface WorkerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface BuildWorkerDeps extends PipelineDeps {
  config: AsuConfig;
  queue: BuildQueue;
  stats: Stats;
  logger: WorkerLogger;
}

/**
 * Runs builds from the queue. User faults (impossible selection, too big, wrong revision)
 * are stored as failed results at once; anything else is retried by BullMQ and stored as a
 * failure only after the last attempt.
 */
export function startBuildWorker(deps: BuildWorkerDeps): Worker<BuildJobData> {
  const worker = deps.queue.createWorker((job) => processJob(job, deps), {
    concurrency: Math.max(1, deps.config.workers),
    lockDurationMs: deps.config.worker_lock_duration * 1000,
  });
  worker.on("error", (err) => deps.logger.error({ err }, "worker error"));
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
  try {
    const result = await runBuildPipeline(job.id, job.data, deps, job.setStage);
    await queue.setResult(job.id, 200, JSON.stringify(result.body), job.data.result_ttl);
    await job.setStage("done");
    const durationMs = Date.now() - started;
    logger.info(
      { ...facts, durationMs, makeMs: result.makeMs, imagebuilderMs: result.imagebuilderMs },
      "build done",
    );
    await stats.recordBuild({
      ...facts,
      ok: true,
      durationMs: durationMs - result.imagebuilderMs,
      makeMs: result.makeMs,
    });
  } catch (err) {
    const userFault = err instanceof BuildError ? err.userFault : err instanceof AsuError && err.status < 500;
    // Bad signatures, tampered archives and timeouts fail the same way on every attempt.
    const retryable = err instanceof BuildError ? err.retryable : !userFault && isRetryable(err);
    const lastAttempt = job.attemptsMade + 1 >= job.maxAttempts;
    const detail =
      err instanceof BuildError
        ? err.detail
        : err instanceof AsuError
          ? // ImageBuilder and upstream failures: the server's problem, said so plainly.
            `Error: Could not prepare the ImageBuilder: ${err.detail}. Please try again later or tell the server operator.`
          : "Error: The build failed unexpectedly. Please try again later.";
    logger.warn({ ...facts, err, userFault, retryable, lastAttempt }, "build failed");
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
        stdout: typeof extra.stdout === "string" ? extra.stdout : "",
        stderr: typeof extra.stderr === "string" ? extra.stderr : "",
      };
      await queue.setResult(job.id, 500, JSON.stringify(body), config.build_failure_ttl);
      await job.setStage("failed");
      await stats.recordBuild({ ...facts, ok: false, detail, durationMs: Date.now() - started, makeMs: 0 });
      if (!retryable) throw new UnrecoverableError(detail);
    }
    throw err;
  }
}
