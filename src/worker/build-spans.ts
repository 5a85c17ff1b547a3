import { channel } from "node:diagnostics_channel";
import { performance } from "node:perf_hooks";

/**
 * Where a build's time goes, step by step, for bench/build-overhead.ts (issue #13). The worker
 * publishes one message per finished build on the diagnostics channel `asu:build-spans`; with no
 * subscriber nothing is published, so it costs nothing and logs nothing.
 */
export const BUILD_SPANS_CHANNEL = "asu:build-spans";

export interface BuildSpansMessage {
  hash: string;
  /** Milliseconds per step, in the order the steps first ran. */
  spans: Record<string, number>;
}

const spansChannel = channel(BUILD_SPANS_CHANNEL);

export function publishBuildSpans(message: BuildSpansMessage): void {
  if (spansChannel.hasSubscribers) spansChannel.publish(message);
}

/** Splits wall time into named steps: each `lap` gives the time since the last one to a name. */
export class SpanClock {
  readonly spans: Record<string, number> = {};
  private last = performance.now();

  lap(name: string): void {
    const now = performance.now();
    this.spans[name] = (this.spans[name] ?? 0) + (now - this.last);
    this.last = now;
  }

  /** Adds time measured elsewhere (the feed stager's parts) without moving the clock. */
  add(name: string, ms: number): void {
    this.spans[name] = (this.spans[name] ?? 0) + ms;
  }
}
