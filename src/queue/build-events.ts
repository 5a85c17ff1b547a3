import { Redis } from "ioredis";
import type { BuildStage } from "./build-job.js";

/**
 * Live progress of builds (issue #14): one Redis Stream per build run,
 * `<prefix>:events:<hash>:<enqueued_at>`. Workers append stage changes, output lines and a
 * result marker; API servers read it for `GET /api/v1/build/{hash}/events`. Stream ids are
 * monotonic, so they are the SSE event ids and `Last-Event-ID` resumes with one XRANGE
 * (docs/decisions/010).
 */

export type BuildEventType = "queue" | "status" | "log" | "result";

export interface BuildEvent {
  /** The stream entry id, "<ms>-<seq>". */
  id: string;
  type: BuildEventType;
  /**
   * The SSE `data:` text (one line of JSON); for `result` the HTTP status of the result,
   * whose body the reader takes from the result key.
   */
  data: string;
}

export interface BuildEventLimits {
  /** Output lines kept per build run; later ones are counted, not streamed. */
  maxLogLines: number;
  /** Longest output line streamed, in characters; longer ones are cut. */
  maxLineChars: number;
  /** Idle expiry of a stream while its build waits or runs, in seconds (renewed on writes). */
  ttlSeconds: number;
  /** Expiry once the result is written: clients that come later get the result key. */
  finishedTtlSeconds: number;
}

export const DEFAULT_EVENT_LIMITS: BuildEventLimits = {
  maxLogLines: 5000,
  maxLineChars: 1000,
  ttlSeconds: 3600,
  finishedTtlSeconds: 300,
};

/** A stream never holds more entries than this (XADD MAXLEN ~), whatever writes it. */
function streamMaxLen(limits: BuildEventLimits): number {
  // Room for every streamed line, the cut notice, every stage of three attempts and queue moves.
  return limits.maxLogLines + 1000;
}

const ID_PATTERN = /^(\d{1,20})-(\d{1,20})$/;

/** Whether `text` is a stream id; anything else in Last-Event-ID is ignored. */
export function isEventId(text: string): boolean {
  return ID_PATTERN.test(text);
}

/** Orders two stream ids (negative, zero, positive). */
export function compareEventIds(a: string, b: string): number {
  const [, am = "0", as = "0"] = ID_PATTERN.exec(a) ?? [];
  const [, bm = "0", bs = "0"] = ID_PATTERN.exec(b) ?? [];
  const ms = BigInt(am) - BigInt(bm);
  if (ms !== 0n) return ms < 0n ? -1 : 1;
  const seq = BigInt(as) - BigInt(bs);
  return seq === 0n ? 0 : seq < 0n ? -1 : 1;
}

/** The id right after `id`: for events the server makes up (a result read from its key). */
export function nextEventId(id: string): string {
  const [, ms = "0", seq = "0"] = ID_PATTERN.exec(id) ?? [];
  return `${ms}-${BigInt(seq) + 1n}`;
}

// Adds a queue position unless it is the last entry already, or the build has started
// (any other entry last): positions come from every API server polling, stages from the
// worker, and a late poll must not put "queued" after "init".
const QUEUE_EVENT_SCRIPT = `
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if last[1] then
  local f = last[1][2]
  if f[2] ~= 'queue' or f[4] == ARGV[1] then return false end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 't', 'queue', 'd', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return id
`;

interface QueueEventCommand {
  asuQueueEvent(key: string, data: string, maxLen: number, ttl: number): Promise<string | null>;
}

/** One Redis call's worth of output lines, and what is cut. */
export interface LogSink {
  push(stream: "stdout" | "stderr", line: string): void;
  /** Writes what is pending; resolves once it is in Redis (or failed, which is ignored). */
  flush(): Promise<void>;
}

/** Appends to and reads build event streams. Errors on writes never fail a build. */
export class BuildEventLog {
  readonly limits: BuildEventLimits;
  private readonly maxLen: number;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    limits: Partial<BuildEventLimits> = {},
  ) {
    this.limits = { ...DEFAULT_EVENT_LIMITS, ...limits };
    this.maxLen = streamMaxLen(this.limits);
    if (!("asuQueueEvent" in redis)) {
      redis.defineCommand("asuQueueEvent", { numberOfKeys: 1, lua: QUEUE_EVENT_SCRIPT });
    }
  }

  /** The stream of one build run: a rebuild after the result expired starts a new one. */
  key(hash: string, enqueuedAt: number): string {
    return `${this.prefix}:events:${hash}:${enqueuedAt}`;
  }

  async appendStatus(key: string, stage: BuildStage): Promise<void> {
    await this.append(key, [["status", JSON.stringify({ imagebuilder_status: stage })]]);
  }

  /** Records the queue position if it changed and the build has not started; returns the new id. */
  async appendQueuePosition(key: string, position: number): Promise<string | undefined> {
    const id = await (this.redis as unknown as QueueEventCommand).asuQueueEvent(
      key,
      JSON.stringify({ queue_position: position }),
      this.maxLen,
      this.limits.ttlSeconds,
    );
    return id ?? undefined;
  }

  /**
   * Adds the final stage and the result marker to `multi`, next to the command that stores
   * the result, so a reader that sees the marker finds the result.
   */
  addResult(multi: ReturnType<Redis["multi"]>, key: string, status: number): void {
    const stage: BuildStage = status === 200 ? "done" : "failed";
    multi
      .xadd(
        key,
        "MAXLEN",
        "~",
        this.maxLen,
        "*",
        "t",
        "status",
        "d",
        JSON.stringify({ imagebuilder_status: stage }),
      )
      .xadd(key, "MAXLEN", "~", this.maxLen, "*", "t", "result", "d", String(status))
      .expire(key, this.limits.finishedTtlSeconds);
  }

  /** Entries after `afterId` (exclusive), oldest first, at most `count`. */
  async read(key: string, afterId: string, count: number): Promise<BuildEvent[]> {
    const entries = await this.redis.xrange(key, `(${afterId}`, "+", "COUNT", count);
    return entries.map(toEvent);
  }

  /** The id of the newest entry, if the stream exists. */
  async lastId(key: string): Promise<string | undefined> {
    const [entry] = await this.redis.xrevrange(key, "+", "-", "COUNT", 1);
    return entry?.[0];
  }

  /**
   * Output lines of one build run, bounded: lines cut at maxLineChars, at most maxLogLines
   * of them (then one line saying so), written in batches so a chatty make costs a few
   * Redis calls a second, in order.
   */
  createLogSink(key: string, onError: (err: unknown) => void = () => undefined): LogSink {
    const { maxLogLines, maxLineChars } = this.limits;
    let pending: string[] = [];
    let count = 0;
    let dropped = false;
    let timer: NodeJS.Timeout | undefined;
    let chain: Promise<void> = Promise.resolve();
    const flush = (): Promise<void> => {
      if (timer) clearTimeout(timer);
      timer = undefined;
      if (pending.length > 0) {
        const batch = pending;
        pending = [];
        chain = chain
          .then(() =>
            this.append(
              key,
              batch.map((d) => ["log", d] as const),
            ),
          )
          .catch(onError);
      }
      return chain;
    };
    return {
      push: (stream, line) => {
        if (dropped) return;
        if (count >= maxLogLines) {
          dropped = true;
          const notice = `[asu: only the first ${maxLogLines} lines are streamed; the result has the end of the output]`;
          pending.push(JSON.stringify({ stream: "stderr", line: notice }));
        } else {
          count += 1;
          const text = line.length > maxLineChars ? `${line.slice(0, maxLineChars)} [asu: line cut]` : line;
          pending.push(JSON.stringify({ stream, line: text }));
        }
        if (pending.length >= 200) void flush();
        else timer ??= setTimeout(() => void flush(), 100);
      },
      flush,
    };
  }

  private async append(key: string, entries: readonly (readonly [BuildEventType, string])[]): Promise<void> {
    const multi = this.redis.multi();
    for (const [type, data] of entries)
      multi.xadd(key, "MAXLEN", "~", this.maxLen, "*", "t", type, "d", data);
    multi.expire(key, this.limits.ttlSeconds);
    await multi.exec();
  }
}

function toEvent([id, fields]: [string, string[]]): BuildEvent {
  let type = "";
  let data = "";
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === "t") type = fields[i + 1] as string;
    else if (fields[i] === "d") data = fields[i + 1] as string;
  }
  return { id, type: type as BuildEventType, data };
}

export interface BuildEventHubOptions {
  /** Longest one XREAD blocks; also the longest a new subscription may wait for its first wake. */
  blockMs?: number;
}

interface Watched {
  /** Entries up to here were seen by the hub. */
  cursor: string;
  listeners: Set<() => void>;
}

/**
 * Tells an API server's event streams when their build's stream got new entries. However many
 * clients listen, a process holds one blocking connection: a single XREAD BLOCK over every
 * stream someone watches (docs/decisions/010). Listeners then read the entries themselves,
 * each from its own position, on the ordinary connection.
 */
export class BuildEventHub {
  private readonly blocking: Redis;
  private readonly blockMs: number;
  private readonly watched = new Map<string, Watched>();
  private wake: (() => void) | undefined;
  private running = false;
  private closed = false;
  private clientId: number | undefined;

  /** `control` is a non-blocking connection, used to interrupt the blocking XREAD. */
  constructor(
    redisUrl: string,
    private readonly control: Redis,
    opts: BuildEventHubOptions = {},
  ) {
    this.blockMs = opts.blockMs ?? 5000;
    // Blocking connections wait through outages (BullMQ's rule for its own, decision 008).
    this.blocking = new Redis(redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
    this.blocking.on("error", () => undefined);
    this.blocking.on("ready", () => {
      this.blocking
        .client("ID")
        .then((id) => (this.clientId = Number(id)))
        .catch(() => undefined);
    });
  }

  /** Streams watched now (for tests and metrics). */
  get size(): number {
    return this.watched.size;
  }

  /**
   * Calls `listener` whenever entries after `afterId` exist in `key` (at once if some exist
   * already). Returns the function that stops it.
   */
  subscribe(key: string, afterId: string, listener: () => void): () => void {
    let entry = this.watched.get(key);
    if (!entry) {
      entry = { cursor: afterId, listeners: new Set() };
      this.watched.set(key, entry);
    }
    // A later listener with an older position reads what it missed itself; the cursor only
    // decides when listeners are woken.
    entry.listeners.add(listener);
    this.interrupt();
    this.start();
    return () => {
      const current = this.watched.get(key);
      if (!current) return;
      current.listeners.delete(listener);
      if (current.listeners.size === 0) {
        this.watched.delete(key);
        this.interrupt();
      }
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watched.clear();
    this.wake?.();
    this.blocking.disconnect();
  }

  private start(): void {
    if (this.running || this.closed) return;
    this.running = true;
    if (this.blocking.status === "wait") this.blocking.connect().catch(() => undefined);
    this.loop().catch(() => {
      this.running = false;
    });
  }

  /** Ends a blocking XREAD early, so a new stream is included at once. */
  private interrupt(): void {
    this.wake?.();
    if (this.clientId === undefined || this.control.status !== "ready") return;
    this.control.client("UNBLOCK", this.clientId).catch(() => undefined);
  }

  private async loop(): Promise<void> {
    for (;;) {
      if (this.closed || this.watched.size === 0) {
        // In the same tick as this check: a subscribe from now on starts a new loop.
        this.running = false;
        return;
      }
      const keys = [...this.watched.keys()];
      const cursors = keys.map((k) => (this.watched.get(k) as Watched).cursor);
      let result: [string, [string, string[]][]][] | null;
      try {
        result = (await this.blocking.xread(
          "COUNT",
          100,
          "BLOCK",
          this.blockMs,
          "STREAMS",
          ...keys,
          ...cursors,
        )) as [string, [string, string[]][]][] | null;
      } catch {
        if (this.closed) return;
        // Redis away: wait a moment (or for a change), then try again.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1000);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
        continue;
      }
      for (const [key, entries] of result ?? []) {
        const entry = this.watched.get(key);
        const last = entries.at(-1);
        if (!entry || !last) continue;
        entry.cursor = last[0];
        for (const listener of [...entry.listeners]) listener();
      }
    }
  }
}
