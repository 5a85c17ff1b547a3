import { AsuError, isRetryable } from "../shared/errors.js";

// The retry rule lives with AsuError; re-exported for the ImageBuilder's callers and tests.
export { isRetryable };

/**
 * Failures while getting an ImageBuilder. `retryable` tells the worker whether a later
 * attempt can succeed (BullMQ's UnrecoverableError idea):
 * - retryable: the network or the mirror failed us, or the local disk did; try again later.
 * - not retryable: the ImageBuilder is missing upstream, or it failed a sha256, signature or
 *   archive-safety check; trying again fetches the same bad bytes. The operator must act.
 */
export class ImageBuilderError extends AsuError {
  constructor(status: number, code: string, detail: string, retryable: boolean) {
    super(status, code, detail, {}, { retryable });
  }
}

/** 502, retryable: network error, timeout or a 5xx from the download server. */
export class ImageBuilderUnavailableError extends ImageBuilderError {
  constructor(detail: string) {
    super(502, "imagebuilder_unavailable", detail, true);
  }
}

/** 404, not retryable: upstream publishes no ImageBuilder (or no sha256sums) for the target. */
export class ImageBuilderNotFoundError extends ImageBuilderError {
  constructor(detail: string) {
    super(404, "imagebuilder_not_found", detail, false);
  }
}

/**
 * 502, not retryable: the download failed verification (sha256, usign signature, missing
 * required signature) or the archive is unsafe to unpack (absolute paths, "..", escaping
 * links, device files).
 */
export class ImageBuilderVerificationError extends ImageBuilderError {
  constructor(detail: string) {
    super(502, "imagebuilder_untrusted", detail, false);
  }
}

/** 500, retryable: tar failed on an archive that passed its checks, e.g. the disk is full. */
export class ImageBuilderUnpackError extends ImageBuilderError {
  constructor(detail: string) {
    super(500, "imagebuilder_unpack_failed", detail, true);
  }
}

/** An error's message, with the cause fetch hides behind "fetch failed". */
export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
  return `${err.message}${cause}`;
}

/**
 * 500, not retryable: the ImageBuilder's own preparation failed on this host, most often its
 * host prerequisite check (a missing tool or Perl module). The operator must install what it
 * names; every build of that ImageBuilder would fail the same way until then.
 */
export class ImageBuilderPrepareError extends ImageBuilderError {
  constructor(detail: string) {
    super(500, "imagebuilder_prepare_failed", detail, false);
  }
}
