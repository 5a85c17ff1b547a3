import { VERSION } from "../../shared/version.js";
import { HttpStatusError, ServerUnavailableError, UsageError } from "./client-errors.js";

/**
 * The only module of the `asu` client commands that talks HTTP (fetch). Everything a
 * command needs from a server, or from the download server it names, goes through here, so
 * the tests can point it at a fake server and the commands never see a socket error.
 */

/** Sent as `client` in build requests and as User-Agent. */
export const CLIENT_NAME = `asu-cli/${VERSION}`;

export interface JsonAnswer {
  status: number;
  headers: Headers;
  /** The parsed JSON object; `{}` when the body was empty or not a JSON object. */
  body: Record<string, unknown>;
}

export interface HttpOptions {
  /** Each request (until its headers, and for streams between two chunks) may take this long. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** "connect ECONNREFUSED 127.0.0.1:9" instead of fetch's bare "fetch failed". */
export function describeFetchError(err: unknown): string {
  if (err instanceof Error && (err.name === "TimeoutError" || err.name === "AbortError")) {
    return "no answer in time";
  }
  const seen = new Set<unknown>();
  let deepest = err instanceof Error ? err.message : String(err);
  for (let e: unknown = err; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e);
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === "string" && code !== "UND_ERR_SOCKET") return e.message || code;
    if (e.message) deepest = e.message;
  }
  return deepest;
}

function parseJson(text: string): Record<string, unknown> {
  try {
    const value: unknown = text ? JSON.parse(text) : {};
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : {};
  } catch {
    return {};
  }
}

/** The `detail` of an error body, or a sentence naming the status. */
export function detailOf(status: number, body: Record<string, unknown> | undefined): string {
  const detail = body?.detail;
  if (typeof detail === "string" && detail.trim() !== "") return detail;
  const message = body?.message;
  if (typeof message === "string" && message.trim() !== "") return `HTTP ${status}: ${message}`;
  return `HTTP ${status}`;
}

/** An HTTP status that means "not now": try again later, the request itself may be fine. */
export function isUnavailableStatus(status: number): boolean {
  return status >= 500 || status === 429 || status === 408;
}

/** A client for one asu server (and the download server its overview names). */
export class AsuHttp {
  readonly base: string;
  private readonly timeoutMs: number;

  constructor(serverUrl: string, opts: HttpOptions = {}) {
    this.base = normalizeServerUrl(serverUrl);
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  url(pathname: string): string {
    return `${this.base}${pathname}`;
  }

  /** A request with a timeout until the whole body is read; network faults become ServerUnavailableError. */
  async json(
    method: "GET" | "POST",
    pathOrUrl: string,
    body?: unknown,
    cancel?: AbortSignal,
  ): Promise<JsonAnswer> {
    const url = /^https?:\/\//.test(pathOrUrl) ? pathOrUrl : this.url(pathOrUrl);
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = cancel ? AbortSignal.any([cancel, timeout]) : timeout;
    try {
      const res = await fetch(url, {
        method,
        signal,
        headers: {
          accept: "application/json",
          "user-agent": CLIENT_NAME,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, body: parseJson(text) };
    } catch (err) {
      if (cancel?.aborted) throw err;
      throw new ServerUnavailableError(
        `${new URL(url).origin} cannot be reached: ${describeFetchError(err)}`,
      );
    }
  }

  /** GET that must answer 200; anything else is an HttpStatusError (or ServerUnavailableError for 5xx). */
  async getJson(pathOrUrl: string): Promise<Record<string, unknown>> {
    const answer = await this.json("GET", pathOrUrl);
    if (answer.status === 200) return answer.body;
    const detail = detailOf(answer.status, answer.body);
    if (isUnavailableStatus(answer.status)) throw new ServerUnavailableError(detail, answer.status);
    throw new HttpStatusError(answer.status, detail, answer.body);
  }

  /**
   * Opens a streaming GET (event stream, image download). The timeout covers the answer's
   * headers; the caller calls `idle.touch()` on every chunk, so only silence aborts it.
   */
  async stream(
    pathOrUrl: string,
    headers: Record<string, string>,
    signal: AbortSignal,
    idleMs = this.timeoutMs,
  ): Promise<{ res: Response; idle: IdleTimer }> {
    const url = /^https?:\/\//.test(pathOrUrl) ? pathOrUrl : this.url(pathOrUrl);
    const silence = new AbortController();
    const idle = new IdleTimer(idleMs, () =>
      silence.abort(new ServerUnavailableError(`${new URL(url).origin} stopped answering`)),
    );
    try {
      const res = await fetch(url, {
        signal: AbortSignal.any([signal, silence.signal]),
        headers: { "user-agent": CLIENT_NAME, ...headers },
      });
      idle.touch();
      return { res, idle };
    } catch (err) {
      idle.stop();
      if (signal.aborted) throw err;
      const reason = silence.signal.reason as unknown;
      if (reason instanceof ServerUnavailableError) throw reason;
      throw new ServerUnavailableError(
        `${new URL(url).origin} cannot be reached: ${describeFetchError(err)}`,
      );
    }
  }
}

/** Aborts a stream that has been silent for too long; every chunk calls touch(). */
export class IdleTimer {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ms: number,
    private readonly onIdle: () => void,
  ) {
    this.touch();
  }

  touch(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(this.onIdle, this.ms);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/** `https://sysupgrade.openwrt.org/` → `https://sysupgrade.openwrt.org`; a bare host gets http://. */
export function normalizeServerUrl(raw: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(
      `--server ${JSON.stringify(raw)} is not a URL. Give one like https://sysupgrade.openwrt.org`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`--server must be an http:// or https:// URL, not ${url.protocol}`);
  }
  return url.href.replace(/\/+$/, "");
}
