import { AsuError } from "../shared/errors.js";

/** Seconds a client is told to wait (Retry-After) while Redis is unreachable. */
export const QUEUE_RETRY_AFTER_SECONDS = 10;

/**
 * 503: Redis (the queue and the result cache) did not answer in time. Clients get this at
 * once instead of waiting on ioredis's offline queue (issue #10: POSTs hung for 30 s).
 */
export class QueueUnavailableError extends AsuError {
  constructor(cause?: unknown) {
    super(
      503,
      "queue_unavailable",
      `The build queue is unavailable right now (its database does not answer). Please retry in ${QUEUE_RETRY_AFTER_SECONDS} seconds.`,
    );
    if (cause !== undefined) this.cause = cause;
  }
}

/**
 * ioredis's ways of saying "no connection": offline queue disabled, connection closed,
 * command timeout, refused/reset sockets, retries exhausted.
 */
export function isRedisConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err instanceof QueueUnavailableError) return true;
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string" && ["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT"].includes(code))
    return true;
  return (
    err.name === "MaxRetriesPerRequestError" ||
    /enableOfflineQueue|Connection is closed|Command timed out|Stream isn't writeable|Reached the max retries/i.test(
      err.message,
    )
  );
}
