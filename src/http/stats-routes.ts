import type { FastifyInstance } from "fastify";
import Type, { type Static } from "typebox";
import type { BuildQueue } from "../queue/build-queue.js";
import { ValidationError } from "../shared/errors.js";
import { STRING_PATTERN, TARGET_PATTERN } from "../request/build-request-schema.js";
import { HISTORY_DAYS, MAX_ERRORS } from "../stats/build-history.js";
import type { Stats } from "../stats/stats.js";
import { branchNameOf } from "../upstream/catalog.js";
import { registerStatsPage } from "./stats-page.js";

export interface StatsRoutesDeps {
  stats: Stats;
  queue: BuildQueue;
}

const tags = ["stats"];

/** Query values arrive as strings (the app does not coerce types): counts are digit strings. */
const Count = (description: string) => Type.String({ pattern: "^[0-9]{1,4}$", description });
const Version = Type.String({ pattern: STRING_PATTERN, minLength: 1, maxLength: 64 });
const Target = Type.String({ pattern: TARGET_PATTERN, maxLength: 64 });

const ChartSchema = Type.Object({
  labels: Type.Array(Type.String(), { description: "First day (UTC) of each bucket, as `2024-06-01Z`" }),
  datasets: Type.Array(
    Type.Object({
      label: Type.String(),
      data: Type.Array(Type.Number()),
      color: Type.Optional(Type.String()),
    }),
  ),
});

const RankedSchema = Type.Array(Type.Object({ name: Type.String(), count: Type.Integer() }));

const SummarySchema = Type.Object({
  queue_length: Type.Integer({ description: "Builds waiting" }),
  builds_24h: Type.Integer({ description: "Builds finished or failed in the last 24 hours (whole hours)" }),
  failures_24h: Type.Integer({ description: "Of those, failed builds" }),
  active_workers: Type.Integer({ description: "Worker processes alive (they report every 15 s)" }),
  builds_running: Type.Integer({ description: "Builds running now, over all workers" }),
  requests_today: Type.Integer({ description: "Build requests today (UTC), cache hits included" }),
  cache_hits_today: Type.Integer({ description: "Requests answered from the cache today (UTC)" }),
});

const TopPackagesQuery = Type.Object({
  version: Type.Optional(Version),
  target: Type.Optional(Target),
  limit: Type.Optional(Count("At most this many packages, 1 to 100 (default 20)")),
});
const TopTargetsQuery = Type.Object({
  limit: Type.Optional(Count("At most this many targets, 1 to 100 (default 20)")),
});
const ErrorsQuery = Type.Object({
  n_entries: Type.Optional(Count(`At most this many failures, 1 to ${MAX_ERRORS} (default 100)`)),
});
const ByVersionQuery = Type.Object({ branch: Type.Optional(Version) });

function clamp(value: string | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  return Math.min(max, Math.max(1, Number(value)));
}

/** True when the client asks for text/plain and not for JSON (scripts written for upstream ASU). */
function prefersText(accept: string | undefined): boolean {
  return accept !== undefined && /\btext\/plain\b/i.test(accept) && !/\bapplication\/json\b/i.test(accept);
}

/** Upstream ASU's text form of /api/v1/build-errors: a header, then one line per failure. */
function errorsAsText({ total, errors }: Awaited<ReturnType<Stats["history"]["recentErrors"]>>): string {
  if (errors.length === 0) return "No build errors recorded.\n";
  const lines = errors.map(
    (e) => `${e.time} ${e.version}:${e.target}:${e.profile} ${e.detail.replace(/\s+/g, " ")}`,
  );
  const span = `${errors.at(-1)?.time ?? ""} - ${errors[0]?.time ?? ""}`;
  return `Build errors: ${total} entries (showing ${errors.length} most recent)\nTime range: ${span}\n\n${lines.join("\n")}\n`;
}

/**
 * Upstream ASU's statistics endpoints (paths and Chart.js-shaped answers), a summary, a few of
 * our own, and the /stats page. Everything is read from the history workers write to Redis
 * when a build ends (src/stats/build-history.ts); nothing here is on the build request path.
 */
export function registerStatsRoutes(app: FastifyInstance, deps: StatsRoutesDeps): void {
  const { stats, queue } = deps;
  const history = stats.history;

  app.get(
    "/api/v1/stats/summary",
    {
      schema: {
        tags,
        summary: "Queue length, builds of the last 24 hours, workers and today's cache hits",
        response: { 200: SummarySchema },
      },
    },
    async (): Promise<Static<typeof SummarySchema>> => {
      const [queueLength, day, active, today] = await Promise.all([
        queue.pendingCount(),
        history.last24Hours(),
        stats.activeBuilds(),
        history.requestsToday(),
      ]);
      return {
        queue_length: queueLength,
        builds_24h: day.success + day.failure,
        failures_24h: day.failure,
        active_workers: active.length,
        builds_running: active.reduce((sum, [, n]) => sum + Number(n), 0),
        requests_today: today.requests,
        cache_hits_today: today.cacheHits,
      };
    },
  );

  app.get(
    "/api/v1/builds-per-day",
    {
      schema: {
        tags,
        summary: `Requests, cache hits, successful and failed builds per day, the last ${HISTORY_DAYS} days`,
        description:
          "Chart.js-shaped, as upstream ASU: `labels` are the days (UTC, oldest first, today last), each dataset has one number per day. Datasets: `Requests`, `Cache-Hits`, `Successes`, `Failures`.",
        response: { 200: ChartSchema },
      },
    },
    async () => history.buildsPerDay(),
  );

  app.get<{ Querystring: Static<typeof ByVersionQuery> }>(
    "/api/v1/builds-by-version",
    {
      schema: {
        tags,
        summary: "Builds per week over 26 weeks, per branch, or per version of one branch",
        description:
          "Chart.js-shaped, as upstream ASU. Without `branch`, one dataset per branch (`24.10`, `SNAPSHOT`, ...); with `branch=24.10`, one per version of that branch (`24.10.3`, `24.10.4`, `24.10-SNAPSHOT`).",
        querystring: ByVersionQuery,
        response: { 200: ChartSchema },
      },
    },
    async (request) => {
      const { branch } = request.query;
      return history.buildsByVersion((version) =>
        branch === undefined
          ? (branchNameOf(version) ?? version)
          : branchNameOf(version) === branch || version === branch
            ? version
            : undefined,
      );
    },
  );

  app.get<{ Querystring: Static<typeof TopPackagesQuery> }>(
    "/api/v1/top-packages",
    {
      schema: {
        tags,
        summary: `The packages most often asked for in builds of the last ${HISTORY_DAYS} days`,
        description:
          "Counts the packages of every build a worker ran (cache hits are not builds), optionally of one `version` or one `target` (not both: 400). Removals (`-name`) are not counted. Refreshed at most every 30 s.",
        querystring: TopPackagesQuery,
        response: {
          200: Type.Object({
            days: Type.Integer(),
            version: Type.Union([Type.String(), Type.Null()]),
            target: Type.Union([Type.String(), Type.Null()]),
            packages: RankedSchema,
          }),
        },
      },
    },
    async (request) => {
      const { version, target, limit } = request.query;
      if (version !== undefined && target !== undefined) {
        // Rankings are kept per version and per target, not per pair (docs/decisions/009).
        throw new ValidationError(
          "Give either ?version= or ?target=, not both: packages are ranked per version and per target.",
        );
      }
      const filter =
        version !== undefined
          ? ({ by: "version", value: version } as const)
          : target !== undefined
            ? ({ by: "target", value: target } as const)
            : undefined;
      return {
        days: HISTORY_DAYS,
        version: version ?? null,
        target: target ?? null,
        packages: await history.topPackages(filter, clamp(limit, 20, 100)),
      };
    },
  );

  app.get<{ Querystring: Static<typeof TopTargetsQuery> }>(
    "/api/v1/top-targets",
    {
      schema: {
        tags,
        summary: `The targets most often built in the last ${HISTORY_DAYS} days`,
        querystring: TopTargetsQuery,
        response: { 200: Type.Object({ days: Type.Integer(), targets: RankedSchema }) },
      },
    },
    async (request) => ({
      days: HISTORY_DAYS,
      targets: await history.topTargets(clamp(request.query.limit, 20, 100)),
    }),
  );

  app.get<{ Querystring: Static<typeof ErrorsQuery> }>(
    "/api/v1/build-errors",
    {
      schema: {
        tags,
        summary: "Recent build failures, newest first (anonymised)",
        description: `Time, version, target, profile and the error \`detail\` of the last ${MAX_ERRORS} failed builds at most. No request hash, client address, package list or \`defaults\`; long hex ids in \`detail\` read \`[hash]\`. JSON; upstream ASU's plain text with \`Accept: text/plain\` (docs/decisions/009).`,
        querystring: ErrorsQuery,
        response: {
          200: Type.Object({
            total: Type.Integer({ description: "Failures kept (the newest, at most the cap)" }),
            errors: Type.Array(
              Type.Object({
                time: Type.String(),
                version: Type.String(),
                target: Type.String(),
                profile: Type.String(),
                detail: Type.String(),
              }),
            ),
          }),
        },
      },
    },
    async (request, reply) => {
      const recent = await history.recentErrors(clamp(request.query.n_entries, 100, MAX_ERRORS));
      if (!prefersText(request.headers.accept)) return recent;
      return reply.type("text/plain; charset=utf-8").send(errorsAsText(recent));
    },
  );

  registerStatsPage(app);
}
