import { createParser, type EventSourceMessage } from "eventsource-parser";
import type { AsuHttp } from "./asu-http.js";
import type { BuildProgress } from "./build-answer.js";
import { ServerUnavailableError } from "./client-errors.js";

/**
 * Follows `GET /api/v1/build/{hash}/events` (server-sent events, issue #14 part 2) until its
 * `result` event. A server without the endpoint (404, 405, not an event stream, a refused
 * connection) makes it answer `unsupported`, and the caller polls as LuCI does. A stream that
 * drops is reopened with `Last-Event-ID`, so no stage is lost.
 */
export type EventsOutcome =
  { kind: "result"; body: Record<string, unknown> } | { kind: "unsupported"; why: string };

export interface FollowEventsOptions {
  signal: AbortSignal;
  onProgress: (progress: BuildProgress) => void;
  /** Called when a dropped stream is being reopened (for a line in the output). */
  onReconnect?: (attempt: number, why: string) => void;
  /** Reconnections in a row without an event before giving up on the stream (default 5). */
  maxReconnects?: number;
  /** Wait before reconnecting unless the server sent `retry:` (default 1000 ms). */
  retryMs?: number;
  /** A stream silent this long (no event, no heartbeat) is reopened (default 60 s). */
  idleMs?: number;
}

/** A stream that ended, or broke, before its `result` event. */
class StreamDropped extends Error {}

export async function followBuildEvents(
  http: AsuHttp,
  hash: string,
  opts: FollowEventsOptions,
): Promise<EventsOutcome> {
  const maxReconnects = opts.maxReconnects ?? 5;
  let retryMs = opts.retryMs ?? 1000;
  let lastEventId: string | undefined;
  let failures = 0;
  let connected = false;
  const path = `/api/v1/build/${encodeURIComponent(hash)}/events`;

  for (;;) {
    opts.signal.throwIfAborted();
    let result: Record<string, unknown> | undefined;
    let gotEvent = false;
    try {
      const headers: Record<string, string> = { accept: "text/event-stream" };
      if (lastEventId !== undefined) headers["last-event-id"] = lastEventId;
      const { res, idle } = await http.stream(path, headers, opts.signal, opts.idleMs ?? 60_000);
      try {
        const type = res.headers.get("content-type") ?? "";
        if (res.status !== 200 || !type.startsWith("text/event-stream") || !res.body) {
          await res.body?.cancel().catch(() => undefined);
          // Only the first answer tells whether the server has the endpoint; later, polling
          // sorts out what a 404 means (an expired build) with the server's own words.
          return { kind: "unsupported", why: `the event stream answered HTTP ${res.status}` };
        }
        connected = true;
        const parser = createParser({
          onEvent: (event: EventSourceMessage) => {
            if (event.id !== undefined) lastEventId = event.id;
            gotEvent = true;
            const outcome = dispatch(event, opts.onProgress);
            if (outcome) result = outcome;
          },
          onRetry: (ms) => {
            retryMs = ms;
          },
        });
        const decoder = new TextDecoder();
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          idle.touch();
          parser.feed(decoder.decode(chunk, { stream: true }));
          if (result) break;
        }
        if (result) return { kind: "result", body: result };
        throw new StreamDropped("the event stream ended before the build finished");
      } finally {
        idle.stop();
        await res.body?.cancel().catch(() => undefined);
      }
    } catch (err) {
      if (opts.signal.aborted) throw err;
      if (!connected && err instanceof ServerUnavailableError) {
        return { kind: "unsupported", why: err.message };
      }
      if (gotEvent) failures = 0;
      failures += 1;
      if (failures > maxReconnects) {
        return { kind: "unsupported", why: `the event stream broke ${failures} times in a row` };
      }
      const why = err instanceof Error ? err.message : String(err);
      opts.onReconnect?.(failures, why);
      await delay(retryMs, opts.signal);
    }
  }
}

/** Turns one event into progress; returns the final body for `result`. */
function dispatch(
  event: EventSourceMessage,
  onProgress: (progress: BuildProgress) => void,
): Record<string, unknown> | undefined {
  let data: unknown;
  try {
    data = JSON.parse(event.data);
  } catch {
    return undefined; // not ours to understand; the contract's events are all JSON
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) return undefined;
  const d = data as Record<string, unknown>;
  switch (event.event) {
    case "queue":
      if (typeof d.queue_position === "number") onProgress({ kind: "queued", position: d.queue_position });
      return undefined;
    case "status":
      if (typeof d.imagebuilder_status === "string")
        onProgress({ kind: "stage", stage: d.imagebuilder_status });
      return undefined;
    case "log":
      if (typeof d.line === "string") {
        onProgress({ kind: "log", stream: d.stream === "stderr" ? "stderr" : "stdout", line: d.line });
      }
      return undefined;
    case "result":
      return d;
    default:
      return undefined;
  }
}

/** A wait that an abort (Ctrl-C) ends at once. */
export function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
