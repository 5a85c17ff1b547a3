import { InvalidArgumentError, Option, type Command } from "commander";
import { runBuild, splitPackages, summary, type BuildOptions } from "./build-command.js";
import { ClientError, ExitCode } from "./client-errors.js";
import { listPackages, listProfiles, type Listing, type MetadataOptions } from "./metadata-commands.js";
import { createReporter, type ProgressReporter } from "./progress-reporter.js";

/**
 * `asu build`, `asu profiles` and `asu packages`: the client side, for a person on a PC
 * (issue #14). They talk to any asu server over HTTP only, never to Redis or the store.
 */

function positiveInt(what: string, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
      throw new InvalidArgumentError(`${what} must be a whole number from 1 to ${max}.`);
    }
    return Number(value);
  };
}

function positiveSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError("give a number of seconds above 0.");
  return n;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const serverOption = () =>
  new Option("-s, --server <url>", "the asu server, e.g. https://sysupgrade.openwrt.org")
    .env("ASU_SERVER")
    .makeOptionMandatory();

/** Flushes stdout and stderr, then exits: the HTTP client's idle sockets would keep Node alive for seconds. */
async function exit(code: number): Promise<never> {
  await Promise.all(
    [process.stdout, process.stderr].map((s) => new Promise<void>((resolve) => s.write("", () => resolve()))),
  );
  process.exit(code);
}

function printError(err: unknown): number {
  if (err instanceof ClientError) {
    process.stderr.write(`asu: ${err.message}\n`);
    for (const line of err.more) process.stderr.write(`${line}\n`);
    return err.exitCode;
  }
  process.stderr.write(
    `asu: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  return ExitCode.unexpected;
}

/** Runs a command with Ctrl-C support and the exit statuses of ExitCode. */
async function execute(
  action: (signal: AbortSignal) => Promise<void>,
  reporter?: ProgressReporter,
): Promise<void> {
  const controller = new AbortController();
  const onSignal = () => {
    reporter?.stop();
    controller.abort(new ClientError("interrupted", ExitCode.interrupted));
  };
  process.once("SIGINT", onSignal);
  let code: number = ExitCode.built;
  try {
    await action(controller.signal);
  } catch (err) {
    reporter?.stop();
    code = controller.signal.aborted ? printError(controller.signal.reason) : printError(err);
  } finally {
    reporter?.stop();
    process.off("SIGINT", onSignal);
  }
  await exit(code);
}

function printListing(listing: Listing): void {
  for (const line of listing.lines) process.stdout.write(`${line}\n`);
  for (const note of listing.notes) process.stderr.write(`${note}\n`);
}

/** What commander hands the build action: BuildOptions as typed on the command line. */
type BuildFlags = Omit<BuildOptions, "images" | "pollOnly" | "pollIntervalMs"> & {
  images: string;
  poll?: boolean;
  pollInterval: number;
  verbose?: boolean;
};

interface MetadataFlags {
  server: string;
  version: string;
  target: string;
  search?: string;
  timeout: number;
}

/**
 * Adds the client commands to the `asu` program. Program options become positional, so the
 * program-wide `--version` no longer swallows `asu build --version 24.10.4` (commander would
 * otherwise print its own version and exit).
 */
export function registerClientCommands(program: Command): void {
  program.enablePositionalOptions();
  // Usage mistakes are bad requests too (exit 2); help still exits 0.
  const usageExit = (err: { exitCode: number }) => process.exit(err.exitCode === 0 ? 0 : ExitCode.badRequest);

  program
    .command("build")
    .description("request an image from an asu server, follow the build, download and verify the images")
    .addOption(serverOption())
    .requiredOption("--version <version>", "OpenWrt release, e.g. 24.10.4 or SNAPSHOT")
    .requiredOption("--target <target>", "target/subtarget, e.g. ath79/generic")
    .requiredOption("--profile <profile>", "device profile, e.g. tplink,archer-c7-v5 (see asu profiles)")
    .option(
      "--packages <list>",
      "packages to add, comma-separated; -name removes one (see asu packages)",
      collect,
      [],
    )
    .option(
      "--defaults <file>",
      "first-boot script (uci-defaults) to put in the image, if the server allows it",
    )
    .option("--rootfs-size-mb <n>", "root filesystem size in MiB", positiveInt("--rootfs-size-mb", 1_048_576))
    .option("-o, --out <dir>", "folder for the images", ".")
    .option("--images <types>", 'image types to download, comma-separated, or "all"', "sysupgrade,factory")
    .option("--timeout <seconds>", "give up waiting for the build after this long", positiveSeconds, 3600)
    .option("--request-timeout <seconds>", "each HTTP request may take this long", positiveSeconds, 30)
    .option("--poll", "poll the build (as LuCI does) instead of following its event stream")
    .option("--poll-interval <seconds>", "seconds between polls", positiveSeconds, 2)
    .option("-v, --verbose", "also show the build's output lines (from the event stream)")
    .exitOverride(usageExit)
    .action(async (flags: BuildFlags) => {
      const reporter = createReporter({ verbose: flags.verbose === true, stream: process.stderr });
      await execute(async (signal) => {
        const outcome = await runBuild(
          {
            server: flags.server,
            version: flags.version,
            target: flags.target,
            profile: flags.profile,
            packages: splitPackages(flags.packages),
            ...(flags.defaults !== undefined ? { defaults: flags.defaults } : {}),
            ...(flags.rootfsSizeMb !== undefined ? { rootfsSizeMb: flags.rootfsSizeMb } : {}),
            out: flags.out,
            images: flags.images.trim() === "all" ? "all" : splitPackages([flags.images]),
            requestTimeout: flags.requestTimeout,
            timeout: flags.timeout,
            pollOnly: flags.poll === true,
            pollIntervalMs: flags.pollInterval * 1000,
          },
          reporter,
          signal,
        );
        reporter.stop();
        for (const line of summary(outcome)) process.stdout.write(`${line}\n`);
      }, reporter);
    });

  const metadataCommand = (
    name: string,
    description: string,
    list: (o: MetadataOptions) => Promise<Listing>,
  ) =>
    program
      .command(name)
      .description(description)
      .addOption(serverOption())
      .requiredOption("--version <version>", "OpenWrt release, e.g. 24.10.4 or SNAPSHOT")
      .requiredOption("--target <target>", "target/subtarget, e.g. ath79/generic")
      .option("--search <text>", "show only entries containing this text (case-insensitive)")
      .option("--timeout <seconds>", "each HTTP request may take this long", positiveSeconds, 30)
      .exitOverride(usageExit)
      .action(async (flags: MetadataFlags) => {
        await execute(async () => printListing(await list({ ...flags })));
      });

  metadataCommand(
    "profiles",
    "list the device profiles of a target (id, title, supported devices)",
    listProfiles,
  );
  metadataCommand(
    "packages",
    "list the packages a build of a target can ask for (name, version)",
    listPackages,
  );
}
