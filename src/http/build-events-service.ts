import type { BuildQueue } from "../queue/build-queue.js";
import { isEventId, nextEventId, type BuildEventHub } from "../queue/build-events.js";
import { AsuError } from "../shared/errors.js";
import type { BuildReply, BuildService } from "./build-service.js";

/** One server-sent event as the route writes it. */
export interface OutgoingEvent {
  id: string;
  event: "queue" | "status" | "log" | "result";
  /** One line of JSON. */
  data: string;
}

/** Where a session writes; the route adapts @fastify/sse's reply to this. */
export interface EventOutput {
  /** Writes events in order, in one write; resolves when the client can take more. */
  send(events: OutgoingEvent[]): Promise<void>;
  /** The client went away. */
  readonly closed: boolean;
}

export type OpenedEvents =
  /** Unknown hash: the 404 that GET /api/v1/build/{hash} gives. */
  | { kind: "reply"; reply: BuildReply }
  /** A stream to follow; `run` writes it and resolves when it ended (result or disconnect). */
  | { kind: "stream"; run(output: EventOutput): Promise<void>; stop(): void };

export interface BuildEventsServiceOptions {
  /** How often a watched build's queue position and existence are checked. Default 1 s. */
  pollMs?: number;
  /** Open event streams this process serves at most; more answer 503. Default 1000. */
  maxStreams?: number;
  /** Entries read from Redis per call. */
  readBatch?: number;
}

export class TooManyStreamsError extends AsuError {
  constructor(limit: number) {
    super(
      503,
      "too_many_event_streams",
      `This server already streams ${limit} builds' progress. Poll GET /api/v1/build/{request_hash} instead, or try the event stream again in a minute.`,
    );
  }
}

/** Checks shared by every stream of one build run in this process: one Redis poll per build, not per client. */
interface Watch {
  hash: string;
  key: string;
  timer: NodeJS.Timeout;
  sessions: Set<Session>;
  /** The job is gone: the result (or nothing, if it was refused or expired) is final. */
  finished: boolean;
}

/**
 * `GET /api/v1/build/{hash}/events` (issue #14). Events come from the build run's Redis
 * Stream (src/queue/build-events.ts); queue positions are added to it by whichever API
 * server watches a waiting build; the result is the body GET /api/v1/build/{hash} gives.
 */
export class BuildEventsService {
  private readonly watches = new Map<string, Watch>();
  private readonly sessions = new Set<Session>();
  private readonly pollMs: number;
  private readonly maxStreams: number;
  readonly readBatch: number;

  constructor(
    readonly queue: BuildQueue,
    readonly builds: BuildService,
    readonly hub: BuildEventHub,
    opts: BuildEventsServiceOptions = {},
  ) {
    this.pollMs = opts.pollMs ?? 1000;
    this.maxStreams = opts.maxStreams ?? 1000;
    this.readBatch = opts.readBatch ?? 200;
  }

  /** Event streams open now. */
  get openStreams(): number {
    return this.sessions.size;
  }

  /** Builds watched now (each has one timer and one entry in the hub's XREAD). */
  get watchedBuilds(): number {
    return this.watches.size;
  }

  async open(hash: string, lastEventId: string | undefined): Promise<OpenedEvents> {
    if (this.sessions.size >= this.maxStreams) throw new TooManyStreamsError(this.maxStreams);
    const after = lastEventId !== undefined && isEventId(lastEventId) ? lastEventId : "0-0";
    const polled = await this.builds.poll(hash);
    if (polled.status === 404) return { kind: "reply", reply: polled };
    const status = polled.status === 202 ? await this.queue.status(hash) : undefined;
    if (status === undefined || status.state === "unknown") {
      // Finished already (or between the two reads): the result at once, then the end.
      const final = polled.status === 202 ? await this.builds.poll(hash) : polled;
      if (final.status === 404) return { kind: "reply", reply: final };
      const session = new Session(this, hash, "", after);
      session.finalReply = final;
      return this.track(session);
    }
    const key = this.queue.events.key(hash, status.enqueuedAt);
    return this.track(new Session(this, hash, key, after));
  }

  /** Ends every stream (shutdown: open streams would hold the HTTP server open). */
  stopAll(): void {
    for (const session of [...this.sessions]) session.stop();
  }

  private track(session: Session): OpenedEvents {
    this.sessions.add(session);
    return {
      kind: "stream",
      run: async (output) => {
        try {
          await session.run(output);
        } finally {
          this.sessions.delete(session);
        }
      },
      stop: () => session.stop(),
    };
  }

  /** Joins the session to its build's watch; `finished` says when the job is gone. */
  attach(session: Session): { detach(): void; finished(): boolean } {
    let watch = this.watches.get(session.key);
    if (!watch) {
      const created: Watch = {
        hash: session.hash,
        key: session.key,
        sessions: new Set(),
        finished: false,
        timer: setInterval(() => void this.check(created), this.pollMs),
      };
      created.timer.unref();
      this.watches.set(session.key, created);
      watch = created;
      void this.check(created);
    }
    const current = watch;
    current.sessions.add(session);
    if (current.finished) session.wake();
    return {
      finished: () => current.finished,
      detach: () => {
        current.sessions.delete(session);
        if (current.sessions.size === 0) {
          clearInterval(current.timer);
          this.watches.delete(current.key);
        }
      },
    };
  }

  private async check(watch: Watch): Promise<void> {
    if (watch.finished) return;
    try {
      const status = await this.queue.status(watch.hash);
      if (status.state === "queued" && this.queue.events.key(watch.hash, status.enqueuedAt) === watch.key) {
        // The hub wakes every session once the entry is in the stream.
        await this.queue.events.appendQueuePosition(watch.key, status.position);
        return;
      }
      if (status.state === "started" && this.queue.events.key(watch.hash, status.enqueuedAt) === watch.key) {
        return;
      }
      // Gone (done, failed, refused) or replaced by a new run of the same request.
      watch.finished = true;
      clearInterval(watch.timer);
      for (const session of watch.sessions) session.wake();
    } catch {
      // Redis away: the next check tries again; the clients keep getting heartbeats.
    }
  }
}

/** One client's stream: what it has been sent, and its wake-ups. */
class Session {
  /** Set when the result was known at connect time. */
  finalReply: BuildReply | undefined;
  private lastSent: string;
  private stopped = false;
  private pending = false;
  private waker: (() => void) | undefined;

  constructor(
    private readonly service: BuildEventsService,
    readonly hash: string,
    readonly key: string,
    after: string,
  ) {
    this.lastSent = after;
  }

  wake(): void {
    this.pending = true;
    this.waker?.();
  }

  stop(): void {
    this.stopped = true;
    this.wake();
  }

  async run(output: EventOutput): Promise<void> {
    if (this.finalReply) {
      await this.sendResult(output, this.finalReply);
      return;
    }
    const { hub, queue } = this.service;
    // Listen first, then read: whatever arrives while we read wakes us again.
    const unsubscribe = hub.subscribe(this.key, this.lastSent, () => this.wake());
    const watch = this.service.attach(this);
    let finishedSeen = false;
    try {
      while (!this.stopped && !output.closed) {
        this.pending = false;
        let events;
        try {
          events = await queue.events.read(this.key, this.lastSent, this.service.readBatch);
        } catch {
          events = undefined; // Redis away: heartbeats go on, the next wake reads again
        }
        const batch: OutgoingEvent[] = [];
        const result = events?.find((e) => e.type === "result");
        for (const event of events ?? []) {
          if (event === result) break;
          batch.push({ id: event.id, event: event.type, data: event.data });
        }
        if (this.stopped || output.closed) return;
        if (batch.length > 0) {
          await output.send(batch);
          this.lastSent = (batch.at(-1) as OutgoingEvent).id;
        }
        if (result) {
          await this.sendResult(output, await this.service.builds.poll(this.hash), result.id);
          return;
        }
        if (events && events.length === this.service.readBatch) continue;
        if (finishedSeen) {
          // The job is gone and its stream has no result (refused, expired, or a stream
          // lost with Redis): the answer of a poll is the last word.
          await this.sendResult(output, await this.service.builds.poll(this.hash));
          return;
        }
        if (watch.finished()) {
          finishedSeen = true;
          continue; // one more read: the marker may have arrived with the end
        }
        await this.sleep();
      }
    } finally {
      unsubscribe();
      watch.detach();
    }
  }

  private async sendResult(output: EventOutput, reply: BuildReply, id?: string): Promise<void> {
    // A new run of the same request started: the client follows it by reconnecting.
    if (reply.status === 202 || output.closed) return;
    const data = typeof reply.body === "string" ? reply.body : JSON.stringify(reply.body);
    await output.send([{ id: id ?? nextEventId(this.lastSent), event: "result", data }]);
  }

  /** Until a wake-up, or 5 s: a missed wake-up costs at most that. */
  private async sleep(): Promise<void> {
    if (this.pending || this.stopped) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 5000);
      this.waker = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.waker = undefined;
  }
}
