import path from "node:path";
import type { Worker } from "bullmq";
import type { FastifyInstance } from "fastify";
import pino, { type Logger } from "pino";
import type { AsuConfig } from "./config/config.js";
import { createApp } from "./http/app.js";
import { ACCESS_LINE } from "./http/access-log.js";
import { FeedStager } from "./imagebuilder/feed-stager.js";
import { prepareImageBuilder } from "./imagebuilder/prepare-imagebuilder.js";
import { ImageBuilderManager } from "./imagebuilder/imagebuilder-manager.js";
import { ProcessRunner } from "./imagebuilder/process-runner.js";
import { createRunner, defaultHiddenPaths, type ImageBuilderSource } from "./imagebuilder/runners/index.js";
import { BuildQueue } from "./queue/build-queue.js";
import type { BuildJobData } from "./queue/build-job.js";
import { resolveRedis } from "./queue/embedded-redis.js";
import { Stats } from "./stats/stats.js";
import { createStore } from "./store/store-factory.js";
import type { Store } from "./store/store.js";
import { collectStoreGarbage, type StoreGcReport } from "./store/store-gc.js";
import { Catalog } from "./upstream/catalog.js";
import { UpstreamClient } from "./upstream/upstream-client.js";
import { BackgroundTasks } from "./worker/background-tasks.js";
import { startBuildWorker } from "./worker/build-worker.js";
import { MakeInfoCache } from "./worker/make-info-cache.js";
import { UsignImageSigner } from "./worker/image-signer.js";

export type Role = "all" | "api" | "worker";

export interface RunningServer {
  config: AsuConfig;
  /** http://host:port when the API role runs. */
  url?: string;
  app?: FastifyInstance;
  worker?: Worker<BuildJobData>;
  queue: BuildQueue;
  logger: Logger;
  /**
   * Graceful shutdown, bounded: stops taking requests and jobs, gives running builds
   * `timeoutMs` (default shutdown_timeout) to finish, then gives them back to the queue and
   * kills their processes; Redis and HTTP get a few seconds more whatever their state.
   */
  close(opts?: { timeoutMs?: number }): Promise<void>;
  /** A second signal: kill every build process now (the caller exits right after). */
  abort(): void;
}

/** Time after the build deadline for HTTP, BullMQ and Redis to close before we stop waiting. */
const CLOSE_GRACE_MS = 2000;

/** Resolves true when `work` settles within `ms`, false otherwise; never rejects. */
async function within(work: Promise<unknown> | undefined, ms: number): Promise<boolean> {
  if (!work) return true;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
  });
  try {
    return await Promise.race([
      work.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export interface StartOptions {
  role: Role;
  /** Redis key prefix; tests give each file its own. */
  redisPrefix?: string;
  /** Start redis-server if needed (only `asu start` does this). */
  embeddedRedis?: boolean;
  quiet?: boolean;
}

export function runStoreGc(config: AsuConfig, queue: BuildQueue, store: Store): Promise<StoreGcReport> {
  return collectStoreGarbage({
    store,
    liveHashes: () => queue.liveResultHashes(),
    forget: (hash) => queue.deleteResult(hash),
    maxBytes: config.store_max_bytes,
  });
}

/**
 * What a build must never see: the store, the ImageBuilder cache, the signing key, the
 * config file (it may hold credentials in redis_url) and the embedded Redis data.
 */
export function sandboxHiddenPaths(config: AsuConfig, cwd = process.cwd()): string[] {
  return defaultHiddenPaths(config, [
    ...(config.config_file ? [config.config_file] : []),
    ...(config.signing_cert ? [config.signing_cert] : []),
    path.join(cwd, "var", "redis"),
  ]);
}

/**
 * With a certificate, images that carry fwtool metadata get an embedded signature as well as
 * the detached `.sig`; without one, only the `.sig` (docs/decisions/002).
 */
function createImageSigner(
  config: AsuConfig,
  processRunner: ProcessRunner,
  logger: Logger,
): UsignImageSigner {
  const key = config.signing_key as string;
  if (config.signing_cert && config.signing_tools) {
    return new UsignImageSigner(key, {
      certFile: config.signing_cert,
      tools: config.signing_tools,
      processRunner,
    });
  }
  logger.warn(
    `signing_key has no certificate (signing_cert, or ${key}.ucert): images get only a detached .sig, which sysupgrade on the router does not check`,
  );
  return new UsignImageSigner(key);
}

/** `asu gc`: one garbage collection of the store, then exit. */
export async function collectGarbageOnce(config: AsuConfig): Promise<StoreGcReport> {
  const queue = new BuildQueue({
    redisUrl: config.redis_url ?? "redis://127.0.0.1:6379",
    prefix: config.redis_prefix,
  });
  try {
    const store = createStore(config);
    try {
      await store.init();
      return await runStoreGc(config, queue, store);
    } finally {
      await store.close();
    }
  } finally {
    await queue.close();
  }
}

/** The one place where config, clients, services and the Fastify app are created and wired. */
export async function startServer(config: AsuConfig, opts: StartOptions): Promise<RunningServer> {
  // One pino logger for the process and Fastify (issue #15). Its stdout is written in 4 KiB
  // synchronous batches, within a second and at exit, but only access lines wait in the
  // batch: a write per access line cost a cache hit more than its Redis GET (issue #13);
  // every other line is written at once (operators and tests wait on them). Decision 012.
  const logStream = opts.quiet ? undefined : pino.destination({ dest: 1, sync: true, minLength: 4096 });
  const logger = pino(
    {
      level: opts.quiet ? "silent" : config.log_level,
      hooks: {
        logMethod(args, method) {
          method.apply(this, args);
          if (logStream && !isAccessLine(args)) logStream.flushSync();
        },
      },
    },
    logStream ?? pino.destination({ dest: 1, sync: true }),
  );
  const logFlushTimer = logStream ? setInterval(() => logStream.flush(), 1000).unref() : undefined;
  if (logStream) process.once("exit", () => logStream.flushSync());
  const redis = opts.embeddedRedis
    ? await resolveRedis({
        ...(config.redis_url ? { redisUrl: config.redis_url } : {}),
        dataDir: path.join(process.cwd(), "var", "redis"),
        log: (msg) => logger.info(msg),
      })
    : { url: config.redis_url ?? "redis://127.0.0.1:6379" };

  const prefix = opts.redisPrefix ?? config.redis_prefix;
  const queue = new BuildQueue({ redisUrl: redis.url, prefix });
  // Every request counts itself in Redis: during an outage that is one failure per request.
  // One warning per outage is enough; the next one comes after Redis was back (issue #10).
  let statsWarned = false;
  queue.redis.on("ready", () => {
    statsWarned = false;
  });
  const statsWriteFailed = (err: unknown): void => {
    if (statsWarned) return;
    statsWarned = true;
    logger.warn({ err }, "stats write failed; further failures are not logged until Redis answers again");
  };
  const stats = new Stats(queue.redis, prefix, () => queue.pendingCount(), statsWriteFailed);
  const store = createStore(config);
  await store.init();
  if (opts.role !== "all" && config.store_backend === "local") {
    // An API server can only serve what a worker wrote to a folder both see (issue #12).
    logger.warn(
      `store_backend = "local": the API and the workers must share ${config.public_path}; on separate machines use store_backend = "s3"`,
    );
  }
  const upstream = new UpstreamClient({
    baseUrl: config.upstream_url,
    maxBytes: config.upstream_cache_max_bytes,
  });
  const catalog = new Catalog(config, upstream);

  let worker: Worker<BuildJobData> | undefined;
  let background: BackgroundTasks | undefined;
  let processRunner: ProcessRunner | undefined;
  let gcTimer: NodeJS.Timeout | undefined;
  let shuttingDown = false;
  let app: FastifyInstance | undefined;
  let url: string | undefined;

  if (opts.role !== "api" && config.workers > 0) {
    processRunner = new ProcessRunner();
    const hiddenPaths = sandboxHiddenPaths(config);
    const runner = await createRunner(config, { hiddenPaths, processRunner, logger });
    // A runner that brings its own ImageBuilders (podman images) hands them out itself.
    const imagebuilders: ImageBuilderSource =
      runner.imagebuilders ??
      new ImageBuilderManager({
        cacheDir: config.cache_path,
        upstreamUrl: config.upstream_url,
        requireSignatures: config.require_signatures,
        // The same pino logger, with a field saying who speaks (issue #15, item 4).
        logger: logger.child({ component: "imagebuilder" }),
        processRunner,
        checkIntervalMs: config.imagebuilder_check_interval * 1000,
        prepare: async (tree) => {
          await prepareImageBuilder(runner, tree, { timeoutMs: 10 * 60_000 });
        },
      });
    // Counted for /metrics: a lease that had to download and unpack, or one that reused a tree.
    const countedImagebuilders: ImageBuilderSource = {
      acquire: async (req) => {
        let downloaded = false;
        const lease = await imagebuilders.acquire({
          ...req,
          onStage: (stage) => {
            if (stage === "download_imagebuilder") downloaded = true;
            req.onStage?.(stage);
          },
        });
        stats.recordImageBuilder(downloaded ? "download" : "cache_hit").catch(statsWriteFailed);
        return lease;
      },
    };
    background = new BackgroundTasks();
    worker = startBuildWorker({
      config,
      queue,
      stats,
      logger,
      background,
      imagebuilders: countedImagebuilders,
      runner,
      // An index is used without asking upstream again for as long as a sha256sums is.
      feeds: new FeedStager({
        cacheDir: path.join(config.cache_path, "packages"),
        indexTtlMs: config.imagebuilder_check_interval * 1000,
      }),
      makeInfoCache: new MakeInfoCache(),
      storeFiles: (hash, files) => store.put(hash, files),
      ...(config.signing_key ? { signer: createImageSigner(config, processRunner, logger) } : {}),
    });
    // Expired builds leave the disk within minutes; the budget bounds the rest.
    gcTimer = setInterval(() => {
      runStoreGc(config, queue, store)
        .then(async (report) => {
          logger.debug({ report }, "store garbage collected");
          await stats.recordStoreUsage(report.keptBytes);
        })
        .catch((err: unknown) => logger.warn({ err }, "store garbage collection failed"));
    }, 10 * 60_000);
    gcTimer.unref();
  }

  if (opts.role !== "worker") {
    const created = await createApp({
      config,
      queue,
      store,
      upstream,
      catalog,
      stats,
      logger,
      isShuttingDown: () => shuttingDown,
    });
    app = created.app;
    const address = await app.listen({ host: config.host, port: config.port });
    url = address;
  }

  const shutdown = async (timeoutMs: number): Promise<void> => {
    shuttingDown = true;
    const deadline = Date.now() + timeoutMs;
    if (gcTimer) clearInterval(gcTimer);
    // Stop taking jobs and requests at once; both wait for what is running.
    const workerClosed = worker?.close();
    const appClosed = app?.close();
    if (worker && !(await queue.waitIdle(deadline - Date.now()))) {
      logger.warn(
        { builds: queue.runningJobs, shutdown_timeout: config.shutdown_timeout },
        "builds still running at shutdown_timeout: giving them back to the queue and killing them",
      );
      await within(queue.releaseActiveJobs(), 500);
      processRunner?.killAll("SIGKILL");
    }
    // Idle or not, what is left gets a fixed grace: at most shutdown_timeout + 3.5 s in all.
    const graceEnd = Date.now() + CLOSE_GRACE_MS;
    // Finished builds remove their workspaces after answering (issue #13): none is left half
    // removed, unless that takes past the deadline and the grace.
    if (background && !(await background.idle(Math.max(deadline, graceEnd) - Date.now()))) {
      logger.warn(
        { tasks: background.size },
        "workspaces of finished builds were still being removed at shutdown",
      );
    }
    // With Redis away BullMQ's close can wait for a reconnect that never comes.
    if (!(await within(workerClosed, graceEnd - Date.now()))) void worker?.close(true).catch(() => undefined);
    if (app && !(await within(appClosed, graceEnd - Date.now()))) {
      // A request still in flight (a stalled upload, a slow download) would hold Fastify
      // open until the client gives up; idle keep-alive sockets were closed at once.
      app.server.closeAllConnections();
      await within(appClosed, 500);
    }
    // Request counts still in memory (Stats.countRequest) go out before Redis is closed.
    await within(
      stats.close().catch((err: unknown) => logger.warn({ err }, "stats write failed")),
      500,
    );
    if (!(await within(queue.close(), Math.max(200, graceEnd - Date.now())))) queue.disconnect();
    await within(store.close(), 500);
    await within(redis.stop?.(), 1000);
    processRunner?.killAll("SIGKILL");
    clearInterval(logFlushTimer);
    logStream?.flush();
  };
  let closing: Promise<void> | undefined;

  return {
    config,
    queue,
    logger,
    ...(url ? { url } : {}),
    ...(app ? { app } : {}),
    ...(worker ? { worker } : {}),
    close: (closeOpts = {}) => (closing ??= shutdown(closeOpts.timeoutMs ?? config.shutdown_timeout * 1000)),
    abort: () => {
      processRunner?.killAll("SIGKILL");
    },
  };
}

/** Fastify's access lines (src/http/access-log.ts): the only ones that may wait in the batch. */
function isAccessLine(args: unknown[]): boolean {
  const msg = args.find((a) => typeof a === "string");
  return msg === ACCESS_LINE;
}
