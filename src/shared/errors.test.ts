import { describe, expect, it } from "vitest";
import {
  ImageBuilderNotFoundError,
  ImageBuilderPrepareError,
  ImageBuilderUnavailableError,
  ImageBuilderUnpackError,
  ImageBuilderVerificationError,
} from "../imagebuilder/imagebuilder-errors.js";
import { QueueUnavailableError } from "../queue/queue-errors.js";
import { BuildError, isRetryable, isUserFault, UnknownPackageError, UpstreamError } from "./errors.js";

// The worker's whole retry rule (issue #15, item 5): each error type decides it, once.
describe("isRetryable and isUserFault", () => {
  const cases: [string, unknown, { userFault: boolean; retryable: boolean }][] = [
    [
      "impossible package selection",
      new BuildError("conflict", { userFault: true }),
      { userFault: true, retryable: false },
    ],
    ["broken feed", new BuildError("feed", { userFault: false }), { userFault: false, retryable: true }],
    [
      "timeout",
      new BuildError("timed out", { userFault: false, retryable: false }),
      { userFault: false, retryable: false },
    ],
    ["unknown package", new UnknownPackageError("nope", ["x"]), { userFault: true, retryable: false }],
    ["upstream 502", new UpstreamError(502, "down"), { userFault: false, retryable: false }],
    ["queue gone", new QueueUnavailableError(), { userFault: false, retryable: false }],
    [
      "ImageBuilder download failed",
      new ImageBuilderUnavailableError("x"),
      { userFault: false, retryable: true },
    ],
    ["ImageBuilder unpack failed", new ImageBuilderUnpackError("x"), { userFault: false, retryable: true }],
    [
      "ImageBuilder missing upstream",
      new ImageBuilderNotFoundError("x"),
      { userFault: true, retryable: false },
    ],
    ["ImageBuilder tampered", new ImageBuilderVerificationError("x"), { userFault: false, retryable: false }],
    ["ImageBuilder host check", new ImageBuilderPrepareError("x"), { userFault: false, retryable: false }],
    ["unexpected error (EIO, a bug)", new Error("EIO"), { userFault: false, retryable: true }],
  ];
  it.each(cases)("%s", (_name, err, expected) => {
    expect({ userFault: isUserFault(err), retryable: isRetryable(err) }).toEqual(expected);
  });
});
