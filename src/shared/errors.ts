/**
 * Errors are data: each carries the HTTP status a client sees, a stable machine code,
 * and a human `detail` that says what to do next. The HTTP layer turns them into the
 * JSON bodies of client-contract.md; the worker stores them as failed-build results.
 */
export class AsuError extends Error {
  readonly status: number;
  readonly code: string;
  readonly detail: string;
  readonly extra: Record<string, unknown>;
  /**
   * The request's own fault (impossible selection, bad input): the worker keeps the failure
   * for build_failure_ttl. Otherwise the server's, kept only briefly. Default: a 4xx status.
   */
  readonly userFault: boolean;
  /**
   * Whether a later attempt of the same build could succeed (BullMQ's UnrecoverableError
   * idea): the worker retries exactly these. Default: no; the classes that can say yes
   * (BuildError, ImageBuilderError) decide it where the failure is known.
   */
  readonly retryable: boolean;

  constructor(
    status: number,
    code: string,
    detail: string,
    extra: Record<string, unknown> = {},
    fault: { userFault?: boolean; retryable?: boolean } = {},
  ) {
    super(detail);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.extra = extra;
    this.userFault = fault.userFault ?? status < 500;
    this.retryable = fault.retryable ?? false;
  }
}

/**
 * The one retry rule of the worker: an AsuError says whether it is retryable; anything
 * unexpected (EIO, a bug) gets the benefit of the doubt.
 */
export function isRetryable(err: unknown): boolean {
  return err instanceof AsuError ? err.retryable : true;
}

/** Whether a failure is the request's fault (see AsuError.userFault); unexpected errors are not. */
export function isUserFault(err: unknown): boolean {
  return err instanceof AsuError && err.userFault;
}

/** 400: the request is well-formed but does not match what upstream publishes. */
export class ValidationError extends AsuError {
  constructor(detail: string, extra: Record<string, unknown> = {}) {
    super(400, "validation_error", detail, extra);
  }
}

/** 422: the request body breaks the schema (pattern, range, enum). */
export class SchemaError extends AsuError {
  constructor(detail: string, extra: Record<string, unknown> = {}) {
    super(422, "schema_error", detail, extra);
  }
}

/** 422: packages that exist in no feed for the requested version and target. */
export class UnknownPackageError extends AsuError {
  readonly packages: string[];
  constructor(detail: string, packages: string[], extra: Record<string, unknown> = {}) {
    super(422, "unknown_package", detail, { ...extra, unknown_packages: packages });
    this.packages = packages;
  }
}

export class NotFoundError extends AsuError {
  constructor(detail: string) {
    super(404, "not_found", detail);
  }
}

/** 529: more jobs are waiting than `max_pending_jobs` allows. */
export class OverloadedError extends AsuError {
  constructor(detail: string) {
    super(529, "overloaded", detail);
  }
}

/** 502/503/504: the upstream download server failed us; not the user's fault. */
export class UpstreamError extends AsuError {
  constructor(status: 502 | 503 | 504, detail: string) {
    super(status, "upstream_error", detail);
  }
}

/**
 * 500: a build failed. `userFault` marks failures that retrying cannot fix
 * (impossible package selection, image too big, revision mismatch).
 */
export class BuildError extends AsuError {
  /** `retryable` defaults to "not the user's fault". */
  constructor(
    detail: string,
    opts: { userFault: boolean; retryable?: boolean; stdout?: string; stderr?: string } = { userFault: true },
  ) {
    super(
      500,
      "build_failed",
      detail,
      { stdout: opts.stdout ?? "", stderr: opts.stderr ?? "" },
      { userFault: opts.userFault, retryable: opts.retryable ?? !opts.userFault },
    );
  }
}

/** Boot-time configuration problems, listed all at once. */
export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}
