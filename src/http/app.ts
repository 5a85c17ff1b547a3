import cors from "@fastify/cors";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import type { AsuConfig } from "../config/config.js";
import type { BuildQueue } from "../queue/build-queue.js";
import {
  QUEUE_RETRY_AFTER_SECONDS,
  QueueUnavailableError,
  isRedisConnectionError,
} from "../queue/queue-errors.js";
import type { Store } from "../store/store.js";
import type { Stats } from "../stats/stats.js";
import type { Catalog } from "../upstream/catalog.js";
import type { UpstreamClient } from "../upstream/upstream-client.js";
import { VERSION } from "../shared/version.js";
import { AccessLogController } from "./access-log.js";
import { registerBuildEventRoutes } from "./build-events-routes.js";
import { BuildEventsService } from "./build-events-service.js";
import { registerBuildRoutes } from "./build-routes.js";
import { BuildService } from "./build-service.js";
import { registerErrorHandler } from "./error-handler.js";
import { registerHealthRoutes } from "./health-routes.js";
import { registerMetadataRoutes } from "./metadata-routes.js";
import { registerStatsRoutes } from "./stats-routes.js";
import { registerStoreRoutes } from "./store-routes.js";
import { fastifyTrustProxy } from "./trust-proxy.js";

export interface AppDeps {
  config: AsuConfig;
  queue: BuildQueue;
  store: Store;
  upstream: UpstreamClient;
  catalog: Catalog;
  stats: Stats;
  /**
   * The process's one pino logger (src/app.ts), so request logs and the server's own lines
   * share level, fields and destination; false logs nothing (tests).
   */
  logger: Logger | false;
  /** True once SIGTERM/SIGINT arrived: /readyz answers 503. */
  isShuttingDown?: () => boolean;
}

export interface AsuApp {
  app: FastifyInstance;
  buildService: BuildService;
  eventsService: BuildEventsService;
}

export async function createApp(deps: AppDeps): Promise<AsuApp> {
  const logging: { logger: false } | { loggerInstance: FastifyBaseLogger } =
    deps.logger === false ? { logger: false } : { loggerInstance: deps.logger };
  const app = Fastify({
    ...logging,
    // One access line per request instead of two (issue #13).
    logController: new AccessLogController(),
    // Rate limits key on request.ip. X-Forwarded-For is believed only as far as the operator
    // says proxies append to it, counted from the right (see trust-proxy.ts).
    trustProxy: fastifyTrustProxy(deps.config.trust_proxy),
    bodyLimit: 1024 * 1024,
    // LuCI appends "?<milliseconds>" to every URL; Fastify ignores unknown query strings.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true } },
  });

  // OFS and LuCI call cross-origin, GET polls included; preflights get a 204 with the headers.
  await app.register(cors, {
    origin: "*",
    methods: ["GET", "HEAD", "POST", "OPTIONS"],
    // last-event-id: a browser's EventSource resumes a build's event stream with it (issue #14).
    allowedHeaders: ["content-type", "last-event-id"],
    exposedHeaders: ["X-Imagebuilder-Status", "X-Queue-Position", "X-Unknown-Package", "Content-Length"],
    maxAge: 86400,
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "asu-ts: OpenWrt Attended Sysupgrade server",
        version: VERSION,
        description: "Builds OpenWrt firmware images with the packages you choose.",
      },
      tags: [{ name: "build" }, { name: "metadata" }, { name: "stats" }],
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });

  // Routes that read Redis outside BuildQueue (stats, metrics) get ioredis's own errors;
  // while Redis is away they are the same 503 as the queue's, not a 500 (issue #10).
  registerErrorHandler(app, (error) =>
    !(error instanceof QueueUnavailableError) && isRedisConnectionError(error)
      ? new QueueUnavailableError(error)
      : error,
  );
  // Every 503 (queue or upstream unavailable) says when to come back.
  // (A callback hook: an async one costs a promise on every answer, cache hits included.)
  app.addHook("onSend", (_request, reply, payload, done) => {
    if (reply.statusCode === 503 && !reply.hasHeader("retry-after")) {
      void reply.header("Retry-After", String(QUEUE_RETRY_AFTER_SECONDS));
    }
    done(null, payload);
  });

  const buildService = new BuildService({
    config: deps.config,
    queue: deps.queue,
    upstream: deps.upstream,
    catalog: deps.catalog,
    onEvent: (event) => deps.stats.countRequest(event),
  });
  registerBuildRoutes(app, buildService);
  // Live progress (issue #14): one blocking Redis connection for all of this process's streams.
  const hub = deps.queue.createEventHub();
  app.addHook("onClose", async () => hub.close());
  const eventsService = new BuildEventsService(deps.queue, buildService, hub);
  await registerBuildEventRoutes(app, eventsService, {
    heartbeatMs: deps.config.events_heartbeat * 1000,
    registry: deps.stats.registry,
  });
  registerStoreRoutes(app, deps.store);
  registerMetadataRoutes(app, deps);
  registerStatsRoutes(app, { stats: deps.stats, queue: deps.queue });
  registerHealthRoutes(app, {
    queue: deps.queue,
    upstream: deps.upstream,
    ...(deps.isShuttingDown ? { isShuttingDown: deps.isShuttingDown } : {}),
  });

  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());
  app.get("/metrics", { schema: { hide: true } }, async (_request, reply) => {
    const text = await deps.stats.metricsText();
    return reply.type(deps.stats.metricsContentType).send(text);
  });

  return { app, buildService, eventsService };
}
