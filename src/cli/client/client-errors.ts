/**
 * Exit statuses of the `asu` client commands, and the errors that lead to them. Scripts
 * branch on these, so they are part of the interface (README, "Client commands").
 */
export const ExitCode = {
  built: 0,
  /** Anything unexpected (a bug); the message says what. */
  unexpected: 1,
  /** The server refused the request (400, 404, 422) or the command line is wrong. */
  badRequest: 2,
  /** The build ran and failed (500 with `imagebuilder_status: "failed"`). */
  buildFailed: 3,
  /** Connection refused, timeout, 5xx, 503, 429, 529: try again later. */
  serverUnavailable: 4,
  /** A downloaded image did not match the sha256 the server announced, or is gone. */
  downloadFailed: 5,
  interrupted: 130,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error that ends the command with a given exit status and a message for the user. */
export class ClientError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
    /** Further lines printed after the message (e.g. the tail of a failed build's stderr). */
    readonly more: string[] = [],
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A mistake in the command line or in what it names (exit status 2). */
export class UsageError extends ClientError {
  constructor(message: string) {
    super(message, ExitCode.badRequest);
  }
}

/** The server could not be asked (connection refused, DNS, timeout) or answered 5xx/429/529. */
export class ServerUnavailableError extends ClientError {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message, ExitCode.serverUnavailable);
  }
}

/** An HTTP answer the caller did not expect (a 4xx), with the body's `detail`. */
export class HttpStatusError extends ClientError {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly body: Record<string, unknown> | undefined,
  ) {
    super(detail, ExitCode.badRequest);
  }
}
