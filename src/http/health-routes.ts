import type { FastifyInstance } from "fastify";
import type { BuildQueue } from "../queue/build-queue.js";
import { QUEUE_RETRY_AFTER_SECONDS } from "../queue/queue-errors.js";
import type { UpstreamClient } from "../upstream/upstream-client.js";

export interface HealthDeps {
  queue: BuildQueue;
  upstream: UpstreamClient;
  /** True once shutdown began: readiness fails so load balancers stop sending requests. */
  isShuttingDown?: () => boolean;
}

/**
 * `/healthz` (liveness: the process answers; never touches Redis, so an outage does not get
 * the pod restarted) and `/readyz` (readiness: Redis answers a PING). Load balancers and
 * Kubernetes probes read the status code; the body is for people.
 */
export function registerHealthRoutes(app: FastifyInstance, deps: HealthDeps): void {
  app.get("/healthz", { schema: { hide: true } }, async () => ({ status: "ok" }));

  app.get("/readyz", { schema: { hide: true } }, async (_request, reply) => {
    const started = performance.now();
    let redis: string = "ok";
    try {
      await deps.queue.ping();
    } catch {
      redis = "unavailable";
    }
    const shuttingDown = deps.isShuttingDown?.() ?? false;
    const ready = redis === "ok" && !shuttingDown;
    if (!ready) void reply.code(503).header("Retry-After", String(QUEUE_RETRY_AFTER_SECONDS));
    return {
      status: ready ? "ok" : "unavailable",
      redis,
      redis_ms: Math.round(performance.now() - started),
      ...(shuttingDown ? { shutting_down: true } : {}),
      upstream: { cached_documents: deps.upstream.cachedDocuments },
    };
  });
}
