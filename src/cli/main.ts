#!/usr/bin/env node
import { Command } from "commander";
import { collectGarbageOnce, startServer, type Role } from "../app.js";
import { loadConfig, type AsuConfig } from "../config/config.js";
import { ConfigError } from "../shared/errors.js";
import { VERSION } from "../shared/version.js";

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
  const server = await startServer(config, { role, embeddedRedis });
  server.logger.info(
    { role, url: server.url, upstream: config.upstream_url, workers: role === "api" ? 0 : config.workers },
    "asu-ts running",
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    server.logger.info({ signal }, "shutting down");
    server
      .close()
      .then(() => process.exit(0))
      .catch((err: unknown) => {
        server.logger.error({ err }, "shutdown failed");
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
  const report = await collectGarbageOnce(readConfig(opts));
  process.stdout.write(`${JSON.stringify(report)}\n`);
});

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`asu: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
