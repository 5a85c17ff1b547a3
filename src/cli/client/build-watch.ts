import type { AsuHttp } from "./asu-http.js";
import { classifyAnswer, progressOf, type BuildProgress } from "./build-answer.js";
import { delay, followBuildEvents } from "./build-events.js";
import { ServerUnavailableError } from "./client-errors.js";

export interface WatchOptions {
  signal: AbortSignal;
  onProgress: (progress: BuildProgress) => void;
  /** How the progress is followed; said once, and again when the client falls back to polling. */
  onMode?: (mode: "events" | "polling", why?: string) => void;
  onReconnect?: (attempt: number, why: string) => void;
  /** Between two polls (default 2 s; LuCI polls every 5 s). */
  pollIntervalMs?: number;
  /** Give up waiting after this long (ServerUnavailableError). */
  timeoutMs: number;
  /** Polls that fail in a row (no answer, 5xx) before giving up (default 5). */
  maxPollFailures?: number;
  /** Skip the event stream and poll from the start. */
  pollOnly?: boolean;
}

/** The final answer of a build: its HTTP-equivalent status and body. */
export interface FinalAnswer {
  status: number;
  body: Record<string, unknown>;
}

/**
 * Waits for a queued build: from the event stream when the server has one, else by polling
 * `GET /api/v1/build/{hash}`. Resolves with the first answer that is not 202.
 */
export async function watchBuild(http: AsuHttp, hash: string, opts: WatchOptions): Promise<FinalAnswer> {
  const deadline = AbortSignal.timeout(opts.timeoutMs);
  const signal = AbortSignal.any([opts.signal, deadline]);
  try {
    if (!opts.pollOnly) {
      opts.onMode?.("events");
      const outcome = await followBuildEvents(http, hash, {
        signal,
        onProgress: opts.onProgress,
        ...(opts.onReconnect ? { onReconnect: opts.onReconnect } : {}),
      });
      if (outcome.kind === "result") {
        const status = typeof outcome.body.status === "number" ? outcome.body.status : 500;
        return { status, body: outcome.body };
      }
      opts.onMode?.("polling", outcome.why);
    } else {
      opts.onMode?.("polling");
    }
    return await pollBuild(http, hash, { ...opts, signal });
  } catch (err) {
    if (deadline.aborted && !opts.signal.aborted) {
      throw new ServerUnavailableError(
        `The build did not finish within ${Math.round(opts.timeoutMs / 1000)} s. It may still be running: run the same command again later (a finished build is answered at once), or raise --timeout.`,
      );
    }
    throw err;
  }
}

async function pollBuild(
  http: AsuHttp,
  hash: string,
  opts: WatchOptions & { signal: AbortSignal },
): Promise<FinalAnswer> {
  const interval = opts.pollIntervalMs ?? 2000;
  const maxFailures = opts.maxPollFailures ?? 5;
  let failures = 0;
  let last = "";
  for (;;) {
    let problem: ServerUnavailableError;
    try {
      const answer = await http.json(
        "GET",
        `/api/v1/build/${encodeURIComponent(hash)}`,
        undefined,
        opts.signal,
      );
      const kind = classifyAnswer(answer.status, answer.body);
      if (kind === "pending") {
        failures = 0;
        const progress = progressOf(answer.body);
        const key = JSON.stringify(progress);
        if (progress && key !== last) opts.onProgress(progress);
        last = key;
        await delay(interval, opts.signal);
        continue;
      }
      if (kind !== "unavailable") {
        return {
          status: typeof answer.body.status === "number" ? answer.body.status : answer.status,
          body: answer.body,
        };
      }
      const detail = typeof answer.body.detail === "string" ? answer.body.detail : `HTTP ${answer.status}`;
      problem = new ServerUnavailableError(detail, answer.status);
    } catch (err) {
      if (!(err instanceof ServerUnavailableError) || opts.signal.aborted) throw err;
      problem = err;
    }
    // A restarting server or a Redis hiccup (503) should not end a long build's wait.
    failures += 1;
    if (failures >= maxFailures) throw problem;
    await delay(interval, opts.signal);
  }
}
