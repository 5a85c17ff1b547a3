import { spawn, type ChildProcess } from "node:child_process";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import path from "node:path";

export interface RedisEndpoint {
  url: string;
  /** Present when this process started redis-server itself. */
  stop?: () => Promise<void>;
}

const DEFAULT_URL = "redis://127.0.0.1:6379";

/** Answers true when a Redis server replies to PING at host:port within the timeout. */
export function redisAnswers(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => done(data.toString().startsWith("+PONG")));
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
  const dir = path.resolve(opts.dataDir);
  await mkdir(dir, { recursive: true });
  const port = 6379;
  const child: ChildProcess = spawn(
    "redis-server",
    ["--bind", "127.0.0.1", "--port", String(port), "--dir", dir, "--appendonly", "yes", "--save", "60 1"],
    { stdio: "ignore" },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let i = 0; i < 100; i++) {
    if (await redisAnswers("127.0.0.1", port, 200)) break;
    if (child.exitCode !== null) throw new Error("redis-server exited at once; see its log");
    await new Promise((r) => setTimeout(r, 100));
  }
  opts.log(`started redis-server on 127.0.0.1:${port} with data in ${dir}`);
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
