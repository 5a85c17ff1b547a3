import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";

export interface MirrorServer {
  url: string;
  port: number;
  close(): Promise<void>;
  /** Paths of the requests served (GET and HEAD, any status), in order; tests assert on it. */
  requests: string[];
}

const TYPES: Record<string, string> = {
  ".json": "application/json",
  ".gz": "application/gzip",
  ".zst": "application/zstd",
  ".xz": "application/x-xz",
  ".ipk": "application/octet-stream",
  ".apk": "application/octet-stream",
  ".adb": "application/octet-stream",
  ".bin": "application/octet-stream",
  ".img": "application/octet-stream",
};

function contentType(file: string): string {
  const base = path.basename(file);
  if (["Packages", "sha256sums", "feeds.conf"].includes(base) || /\.(sig|buildinfo|conf|pub)$/.test(base)) {
    return "text/plain; charset=utf-8";
  }
  return TYPES[path.extname(base)] ?? "application/octet-stream";
}

/**
 * A static file server for the synthetic mirror, like downloads.openwrt.org: GET and HEAD,
 * Content-Length, ETag and Last-Modified with 304s. It refuses paths outside `dir`.
 */
export async function startMirrorServer(opts: {
  dir: string;
  host?: string;
  port?: number;
}): Promise<MirrorServer> {
  const root = await realpath(path.resolve(opts.dir));
  const requests: string[] = [];
  const host = opts.host ?? "127.0.0.1";

  const server = createServer((req, res) => {
    handle(root, req, res, requests).catch(() => {
      if (!res.headersSent) send(res, 500, "internal error\n");
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, text: string, head = false): void {
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(head ? undefined : text);
}

async function handle(
  root: string,
  req: IncomingMessage,
  res: ServerResponse,
  requests: string[],
): Promise<void> {
  const head = req.method === "HEAD";
  let pathname: string;
  try {
    pathname = decodeURIComponent(new URL(req.url ?? "/", "http://mirror").pathname);
  } catch {
    send(res, 400, "bad request\n", head);
    return;
  }
  requests.push(pathname);
  if (req.method !== "GET" && !head) {
    res.setHeader("Allow", "GET, HEAD");
    send(res, 405, "method not allowed\n");
    return;
  }
  // the URL parser already folds "/../"; refuse what is left (encoded dots, backslashes, NUL)
  const segments = pathname.split("/");
  if (
    pathname.includes("\0") ||
    pathname.includes("\\") ||
    segments.includes("..") ||
    segments.includes(".")
  ) {
    send(res, 400, "bad path\n", head);
    return;
  }
  const candidate = path.join(root, ...segments);
  let file: string;
  try {
    file = await realpath(candidate);
  } catch {
    send(res, 404, "not found\n", head);
    return;
  }
  if (file !== root && !file.startsWith(root + path.sep)) {
    send(res, 404, "not found\n", head);
    return;
  }
  const st = await stat(file);
  if (!st.isFile()) {
    send(res, 404, "not found\n", head);
    return;
  }
  const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
  const lastModified = new Date(Math.floor(st.mtimeMs / 1000) * 1000).toUTCString();
  const headers = {
    ETag: etag,
    "Last-Modified": lastModified,
    "Cache-Control": "no-cache",
    "Accept-Ranges": "none",
  };
  const inm = req.headers["if-none-match"];
  const ims = req.headers["if-modified-since"];
  const notModified =
    inm !== undefined
      ? inm.split(",").some((t) => t.trim() === etag || t.trim() === "*")
      : ims !== undefined &&
        !Number.isNaN(Date.parse(ims)) &&
        Math.floor(st.mtimeMs / 1000) * 1000 <= Date.parse(ims);
  if (notModified) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  res.writeHead(200, { ...headers, "Content-Type": contentType(file), "Content-Length": st.size });
  if (head) {
    res.end();
    return;
  }
  const stream = createReadStream(file);
  stream.on("error", () => res.destroy());
  stream.pipe(res);
}
