#!/usr/bin/env node
import { Command } from "commander";
import type { Role } from "../app.js";
import { loadConfig, type AsuConfig } from "../config/config.js";
import { ConfigError } from "../shared/errors.js";
import { VERSION } from "../shared/version.js";
import { registerClientCommands } from "./client/client-commands.js";

interface CommonOptions {
  config?: string;
  checkConfig?: boolean;
}

function readConfig(opts: CommonOptions): AsuConfig {
  try {
    return loadConfig(opts.config !== undefined ? { file: opts.config } : {});
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

async function run(role: Role, opts: CommonOptions, embeddedRedis: boolean): Promise<void> {
  const config = readConfig(opts);
  if (opts.checkConfig) {
    process.stdout.write(`configuration OK (${Object.keys(config.branches).length} branches)\n`);
    return;
  }
  // A signal while still starting has nothing to drain yet.
  const early = (signal: NodeJS.Signals) => process.exit(signal === "SIGINT" ? 130 : 143);
  process.once("SIGINT", early).once("SIGTERM", early);
  // The server stack loads only for server commands: the client commands start in a
  // fraction of the time without it.
  const { startServer } = await import("../app.js");
  const server = await startServer(config, { role, embeddedRedis });
  process.off("SIGINT", early).off("SIGTERM", early);
  server.logger.info(
    { role, url: server.url, upstream: config.upstream_url, workers: role === "api" ? 0 : config.workers },
    "asu-ts running",
  );
  // Orchestrators (systemd, Kubernetes, podman-compose) send SIGTERM and expect an exit:
  // the first signal drains (builds get shutdown_timeout), a second one exits at once, and
  // a failsafe exits even if something in the drain hangs (issue #10).
  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      server.logger.warn({ signal }, "second signal: exiting now, builds killed");
      server.abort();
      process.exit(signal === "SIGINT" ? 130 : 143);
    }
    stopping = true;
    const timeoutMs = config.shutdown_timeout * 1000;
    server.logger.info({ signal, shutdown_timeout: config.shutdown_timeout }, "shutting down");
    setTimeout(() => {
      server.logger.error("shutdown did not finish in time: exiting");
      server.abort();
      process.exit(1);
    }, timeoutMs + 4500).unref();
    server
      .close({ timeoutMs })
      .then(() => {
        server.logger.info("shut down");
        process.exit(0);
      })
      .catch((err: unknown) => {
        server.logger.error({ err }, "shutdown failed");
        server.abort();
        process.exit(1);
      });
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

const program = new Command().name("asu").description("OpenWrt Attended Sysupgrade server").version(VERSION);

const withCommon = (cmd: Command) =>
  cmd
    .option("-c, --config <file>", "asu.toml to read (default: $ASU_CONFIG or ./asu.toml)")
    .option("--check-config", "check the configuration and exit");

withCommon(
  program.command("start").description("API and build worker in one process (starts Redis if needed)"),
).action((opts: CommonOptions) => run("all", opts, true));
withCommon(program.command("serve").description("the HTTP API only")).action((opts: CommonOptions) =>
  run("api", opts, false),
);
withCommon(program.command("worker").description("a build worker only")).action((opts: CommonOptions) =>
  run("worker", opts, false),
);

withCommon(
  program
    .command("gc")
    .description("remove expired builds from the store, and the oldest when over store_max_bytes"),
).action(async (opts: CommonOptions) => {
  const { collectGarbageOnce } = await import("../app.js");
  const report = await collectGarbageOnce(readConfig(opts));
  process.stdout.write(`${JSON.stringify(report)}\n`);
});

registerClientCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`asu: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
