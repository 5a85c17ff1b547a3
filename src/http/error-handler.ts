import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AsuError, UnknownPackageError } from "../shared/errors.js";

const TITLES: Record<number, string> = {
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Payload Too Large",
  415: "Unsupported Media Type",
  422: "Unprocessable Entity",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  529: "Server overloaded",
};

export function errorTitle(status: number): string {
  return TITLES[status] ?? "Error";
}

/** The JSON every client gets for an error: `status` (int) and `detail` (string) always. */
export function errorBody(
  status: number,
  detail: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { status, title: errorTitle(status), detail, ...extra };
}

interface ValidationIssue {
  instancePath: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** "packages/0" → "packages[0]"; a readable place for people, not JSON pointer syntax. */
function fieldName(issue: ValidationIssue, dataVar: string | undefined): string {
  const parts = issue.instancePath.split("/").filter(Boolean);
  const missing = issue.params?.missingProperty;
  if (typeof missing === "string") parts.push(missing);
  if (parts.length === 0) return dataVar ?? "body";
  return parts.map((p, i) => (/^\d+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/**
 * The names for auc's X-Unknown-Package header: at most HEADER_NAMES, then a count. Some
 * HTTP clients refuse headers over a few KB (issue #9, item 8).
 */
const HEADER_NAMES = 20;

export function unknownPackageHeader(error: UnknownPackageError): string {
  const counted = error.extra.unknown_packages_count;
  const total =
    typeof counted === "number" ? Math.max(counted, error.packages.length) : error.packages.length;
  const names = error.packages.slice(0, HEADER_NAMES).map((name) => name.slice(0, 128));
  const more = total - names.length;
  return more > 0 ? `${names.join(", ")}, and ${more} more` : names.join(", ");
}

function describeIssue(issue: ValidationIssue, dataVar: string | undefined): string {
  const field = fieldName(issue, dataVar);
  const limit = issue.params?.limit;
  if (
    (issue.instancePath === "/packages" || issue.instancePath === "/packages_versions") &&
    (issue.keyword === "maxItems" || issue.keyword === "maxProperties") &&
    typeof limit === "number"
  ) {
    return `${field} names more packages than this server accepts: at most ${limit}. An OpenWrt image has a few hundred; remove the ones you do not need`;
  }
  const pattern = issue.params?.pattern;
  if (typeof pattern === "string") {
    return `${field} contains characters that are not allowed (it must match ${pattern})`;
  }
  return `${field} ${issue.message ?? "is invalid"}`;
}

/** A route's URL pattern as a regular expression over concrete paths (`:param`, `*`). */
function routePattern(url: string): RegExp {
  const source = url
    .split("/")
    .map((part) =>
      part === "*" ? ".*" : part.startsWith(":") ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"),
    )
    .join("/");
  return new RegExp(`^${source}$`);
}

/**
 * `mapError` lets the app turn errors of an external system into AsuErrors first (Redis
 * connection errors from any route become 503s; see http/app.ts).
 */
export function registerErrorHandler(
  app: FastifyInstance,
  mapError: (error: Error) => Error = (e) => e,
): void {
  // Routes registered from here on, so that a known path with the wrong method gets a 405
  // with Allow (as upstream ASU) instead of a 404 that reads as "this server has no builds".
  const routes: { pattern: RegExp; methods: string[] }[] = [];
  app.addHook("onRoute", (route) => {
    const methods = (Array.isArray(route.method) ? route.method : [route.method]).map((m) => m.toUpperCase());
    routes.push({ pattern: routePattern(route.url), methods });
  });
  const allowedMethods = (path: string): string[] => {
    const allowed = new Set<string>();
    for (const route of routes) {
      if (route.pattern.test(path)) for (const m of route.methods) allowed.add(m);
    }
    return [...allowed].sort();
  };

  app.setErrorHandler(
    (original: FastifyError | AsuError | Error, request: FastifyRequest, reply: FastifyReply) => {
      const error = mapError(original);
      if (error instanceof AsuError) {
        if (error instanceof UnknownPackageError) {
          // auc prints this header on 422.
          void reply.header("X-Unknown-Package", unknownPackageHeader(error));
        }
        if (error.status >= 500) request.log.warn({ err: error }, error.detail);
        return reply.code(error.status).send(errorBody(error.status, error.detail, error.extra));
      }
      const fe = error as FastifyError;
      if (fe.validation) {
        // OFS calls detail.startsWith(): detail must be a string; the structure goes in `errors`.
        const issues = fe.validation as ValidationIssue[];
        const detail = `Invalid request: ${issues.map((i) => describeIssue(i, fe.validationContext)).join("; ")}. Fix the field and send the request again.`;
        return reply.code(422).send(
          errorBody(422, detail, {
            errors: issues.map((i) => ({
              field: fieldName(i, fe.validationContext),
              message: i.message ?? "",
            })),
          }),
        );
      }
      const status =
        typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500
          ? fe.statusCode
          : 500;
      if (status === 500) {
        request.log.error({ err: error }, "unexpected error");
        return reply
          .code(500)
          .send(
            errorBody(
              500,
              "Internal server error. Please try again later; if it persists, tell the server operator.",
            ),
          );
      }
      const detail =
        fe.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE"
          ? "Send the request body as JSON with Content-Type: application/json."
          : fe.code === "FST_ERR_CTP_BODY_TOO_LARGE"
            ? "The request body is too large."
            : fe.code === "FST_ERR_CTP_EMPTY_JSON_BODY" || fe.code === "FST_ERR_CTP_INVALID_CONTENT_LENGTH"
              ? "The request body is empty; send a JSON build request."
              : status === 400 && error instanceof SyntaxError
                ? "The request body is not valid JSON."
                : fe.message;
      return reply.code(status).send(errorBody(status, detail));
    },
  );

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?")[0] ?? "";
    const allow = allowedMethods(path);
    if (allow.length > 0 && !allow.includes(request.method)) {
      return reply
        .code(405)
        .header("Allow", allow.join(", "))
        .send(
          errorBody(405, `Method ${request.method} is not allowed for ${path}. Use ${allow.join(" or ")}.`),
        );
    }
    return reply
      .code(404)
      .send(
        errorBody(
          404,
          `No such endpoint: ${request.method} ${request.url.split("?")[0]}. See /docs for the API.`,
        ),
      );
  });
}
