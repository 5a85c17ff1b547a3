import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";

export interface RedisEndpoint {
  url: string;
  /** Present when this process started redis-server itself. */
  stop?: () => Promise<void>;
}

const DEFAULT_URL = "redis://127.0.0.1:6379";

/** Answers true when a Redis server replies to PING at host:port within the timeout. */
export function redisAnswers(
  host: string,
  port: number,
  timeoutMs = 500,
  password?: string,
): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write(password ? `AUTH ${password}\r\nPING\r\n` : "PING\r\n"));
    socket.once("close", () => done(false));
    // Without a password the first reply line decides; with one, AUTH's reply comes first.
    const lines = password ? 2 : 1;
    let seen = "";
    socket.on("data", (data) => {
      seen += data.toString();
      if (seen.includes("+PONG\r\n")) done(true);
      else if (seen.split("\r\n").length > lines || seen.length > 256) done(false);
    });
  });
}

function onPath(command: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(command, ["--version"], { stdio: "ignore" });
    child.once("error", () => resolve(false));
    child.once("exit", (code) => resolve(code === 0));
  });
}

/**
 * `asu start` on a small VPS: use REDIS_URL when set; else localhost:6379 when something
 * answers there; else start redis-server with its data under the working folder.
 */
export async function resolveRedis(opts: {
  redisUrl?: string;
  dataDir: string;
  log: (msg: string) => void;
}): Promise<RedisEndpoint> {
  if (opts.redisUrl) return { url: opts.redisUrl };
  if (await redisAnswers("127.0.0.1", 6379)) return { url: DEFAULT_URL };
  if (!(await onPath("redis-server"))) {
    throw new Error(
      "No Redis answers on 127.0.0.1:6379 and redis-server is not installed. Install it (apt-get install redis-server) or set REDIS_URL.",
    );
  }
  return startEmbeddedRedis({ dataDir: opts.dataDir, port: 6379, log: opts.log });
}

/** Starts redis-server on 127.0.0.1:`port` with a fresh password and its data in `dataDir`. */
export async function startEmbeddedRedis(opts: {
  dataDir: string;
  port: number;
  log: (msg: string) => void;
}): Promise<RedisEndpoint> {
  const dir = path.resolve(opts.dataDir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const port = opts.port;
  // Nothing on this host gets in without the password (issue #9: a build once wrote forged
  // results into an open embedded Redis). It is new on every start and kept in a file only
  // root and this user can read, for `redis-cli -a "$(cat var/redis/password)"`.
  const password = randomBytes(24).toString("hex");
  const passwordFile = path.join(dir, "password");
  await rm(passwordFile, { force: true });
  await writeFile(passwordFile, `${password}\n`, { mode: 0o600, flag: "wx" });
  const child: ChildProcess = spawn(
    "redis-server",
    // The password goes in on stdin as a config line, so `ps` never shows it.
    [
      "-",
      "--bind",
      "127.0.0.1",
      "--port",
      String(port),
      "--dir",
      dir,
      "--appendonly",
      "yes",
      "--save",
      "60 1",
    ],
    { stdio: ["pipe", "ignore", "ignore"] },
  );
  child.stdin?.end(`requirepass ${password}\n`);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let i = 0; i < 100; i++) {
    if (await redisAnswers("127.0.0.1", port, 200, password)) break;
    if (child.exitCode !== null) throw new Error("redis-server exited at once; see its log");
    await new Promise((r) => setTimeout(r, 100));
  }
  opts.log(`started redis-server on 127.0.0.1:${port} with data in ${dir}`);
  return {
    url: `redis://:${password}@127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
