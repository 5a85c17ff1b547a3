import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

/** A free loopback port (the OS picks one; it is released before redis-server binds it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

async function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: "127.0.0.1" });
    socket.setTimeout(500);
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (chunk) => {
      socket.destroy();
      resolve(chunk.toString().startsWith("+PONG"));
    });
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * A redis-server of the test's own on a random loopback port, with AOF in a temp folder, so
 * a test can stop and restart it (the machine's Redis on 6379 is never touched).
 */
export interface OwnRedis {
  port: number;
  url: string;
  dir: string;
  /** Running now. */
  readonly up: boolean;
  start(): Promise<void>;
  /** SIGTERM (Redis writes its AOF and exits) or SIGKILL; resolves once the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Stops it and removes its data. */
  destroy(): Promise<void>;
}

export async function startOwnRedis(): Promise<OwnRedis> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(tmpdir(), "asu-redis-"));
  let proc: ChildProcess | undefined;
  const handle: OwnRedis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    get up() {
      return proc !== undefined && proc.exitCode === null && proc.signalCode === null;
    },
    async start() {
      proc = spawn(
        "redis-server",
        ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--appendonly", "yes", "--save", ""],
        { stdio: "ignore" },
      );
      const deadline = Date.now() + 10_000;
      while (!(await answersPing(port))) {
        if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
        if (!handle.up) throw new Error(`redis-server on ${port} exited at start`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop(signal = "SIGTERM") {
      const p = proc;
      if (!p || !handle.up) return;
      const exited = once(p, "exit");
      p.kill(signal);
      await exited;
    },
    async destroy() {
      await handle.stop("SIGKILL");
      await rm(dir, { recursive: true, force: true });
    },
  };
  await handle.start();
  return handle;
}
