import { mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { AsuHttp, CLIENT_NAME, detailOf } from "./asu-http.js";
import { classifyAnswer, progressOf } from "./build-answer.js";
import { watchBuild, type FinalAnswer } from "./build-watch.js";
import { ClientError, ExitCode, ServerUnavailableError, UsageError } from "./client-errors.js";
import { answeredImages, chooseImages, downloadImage, type DownloadedImage } from "./image-download.js";
import { checkNames } from "./metadata-commands.js";
import { formatBytes, printable, type ProgressReporter } from "./progress-reporter.js";

export interface BuildOptions {
  server: string;
  version: string;
  target: string;
  profile: string;
  packages: string[];
  defaults?: string;
  rootfsSizeMb?: number;
  out: string;
  /** Image types to download, or "all". */
  images: string[] | "all";
  /** Seconds each HTTP request may take. */
  requestTimeout: number;
  /** Seconds to wait for the build. */
  timeout: number;
  pollOnly: boolean;
  pollIntervalMs?: number;
}

export interface BuildOutcome {
  answer: Record<string, unknown>;
  downloaded: DownloadedImage[];
}

/** `luci,tcpdump -ppp` → `["luci", "tcpdump", "-ppp"]`; a repeated option adds up. */
export function splitPackages(values: string[]): string[] {
  return values.flatMap((v) => v.split(/[\s,]+/)).filter((p) => p !== "");
}

/** The body of POST /api/v1/build, as the other clients send it (client-contract.md). */
export async function buildRequestBody(opts: BuildOptions): Promise<Record<string, unknown>> {
  checkNames(opts.version, opts.target);
  const body: Record<string, unknown> = {
    version: opts.version,
    target: opts.target,
    // The server turns `tplink,archer-c7-v5` into `tplink_archer-c7-v5` itself.
    profile: opts.profile,
    packages: opts.packages,
    client: CLIENT_NAME,
  };
  if (opts.rootfsSizeMb !== undefined) body.rootfs_size_mb = opts.rootfsSizeMb;
  if (opts.defaults !== undefined) {
    try {
      body.defaults = await readFile(opts.defaults, "utf8");
    } catch (err) {
      throw new UsageError(
        `--defaults ${opts.defaults} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}). Give a first-boot script file.`,
      );
    }
  }
  return body;
}

/**
 * `asu build`: request, follow, download, verify. Throws a ClientError whose exit status says
 * what went wrong; the caller prints it.
 */
export async function runBuild(
  opts: BuildOptions,
  reporter: ProgressReporter,
  signal: AbortSignal,
): Promise<BuildOutcome> {
  const http = new AsuHttp(opts.server, { timeoutMs: opts.requestTimeout * 1000 });
  const body = await buildRequestBody(opts);
  reporter.info(`requesting ${opts.profile} (${opts.target}, ${opts.version}) from ${http.base}`);
  const first = await http.json("POST", "/api/v1/build", body, signal);
  let final: FinalAnswer = { status: first.status, body: first.body };
  if (classifyAnswer(first.status, first.body) === "pending") {
    const hash = first.body.request_hash;
    if (typeof hash !== "string" || !/^[0-9a-f]{64}$/.test(hash)) {
      throw new ServerUnavailableError(
        `${http.base} queued the build but gave no request_hash. Is it an asu server?`,
      );
    }
    const progress = progressOf(first.body);
    if (progress) reporter.build(progress);
    final = await watchBuild(http, hash, {
      signal,
      timeoutMs: opts.timeout * 1000,
      pollOnly: opts.pollOnly,
      ...(opts.pollIntervalMs !== undefined ? { pollIntervalMs: opts.pollIntervalMs } : {}),
      onProgress: (p) => reporter.build(p),
      onMode: (mode, why) => {
        if (mode === "polling" && why !== undefined)
          reporter.info(`no event stream (${why}); polling the build`);
      },
      onReconnect: (attempt, why) => reporter.info(`event stream lost (${why}); reconnecting (${attempt})`),
    });
  }
  const answer = final.body;
  checkFinal(final.status, answer);

  const hash = typeof answer.request_hash === "string" ? answer.request_hash : "";
  reporter.buildEnd(
    `built ${String(answer.id ?? opts.profile)}${hash ? ` (request ${hash.slice(0, 12)})` : ""}`,
  );

  const images = chooseImages(answeredImages(answer), opts.images);
  if (images.length === 0) {
    throw new ClientError(
      `The build answer lists no images${opts.images !== "all" ? ` of type ${opts.images.join(", ")}` : ""}. Try --images all.`,
      ExitCode.downloadFailed,
    );
  }
  const binDir = typeof answer.bin_dir === "string" && answer.bin_dir !== "" ? answer.bin_dir : hash;
  await mkdir(opts.out, { recursive: true });
  const downloaded: DownloadedImage[] = [];
  for (const image of images) {
    const result = await downloadImage(http, binDir, image, opts.out, {
      signal,
      onStart: (img, total) =>
        reporter.downloadStart(img.name, img.filesystem ? `${img.filesystem}-${img.type}` : img.type, total),
      onData: (name, received) => reporter.downloadData(name, received),
    });
    reporter.downloadEnd(image.name, `${image.name}: ${formatBytes(result.bytes)}, sha256 verified`);
    downloaded.push(result);
  }
  return { answer, downloaded };
}

/** Turns a final answer that is not a success into the error (and exit status) it means. */
function checkFinal(status: number, answer: Record<string, unknown>): void {
  const kind = classifyAnswer(status, answer);
  if (kind === "done") return;
  const detail = printable(detailOf(status, answer));
  if (kind === "failed") {
    const stderr = typeof answer.stderr === "string" ? answer.stderr.trimEnd().split("\n").slice(-10) : [];
    throw new ClientError(
      `The build failed: ${detail}`,
      ExitCode.buildFailed,
      stderr.length > 0 && stderr.some((l) => l.trim() !== "")
        ? ["Last lines of the build's stderr:", ...stderr.map((l) => `  ${printable(l)}`)]
        : [],
    );
  }
  if (kind === "bad_request") {
    const unknown = Array.isArray(answer.unknown_packages) ? answer.unknown_packages.join(", ") : "";
    throw new ClientError(
      `The server refused the request (HTTP ${status}): ${detail}`,
      ExitCode.badRequest,
      unknown && !detail.includes(unknown) ? [`Unknown packages: ${printable(unknown)}`] : [],
    );
  }
  throw new ServerUnavailableError(`The server cannot build now (HTTP ${status}): ${detail}`, status);
}

/** The lines `asu build` prints on stdout when it is done: where each image is. */
export function summary(outcome: BuildOutcome): string[] {
  const { answer, downloaded } = outcome;
  const version = [answer.version_number, answer.version_code].filter(
    (v) => typeof v === "string" && v !== "",
  );
  const head = `Built ${String(answer.id ?? "")} for ${String(answer.target ?? "")}${
    version.length > 0 ? `, OpenWrt ${version.join(" ")}` : ""
  }:`;
  const width = Math.max(...downloaded.map((d) => d.image.type.length));
  return [
    printable(head),
    ...downloaded.map(
      (d) => `  ${d.image.type.padEnd(width)}  ${path.resolve(d.file)}  sha256 ${d.image.sha256}`,
    ),
  ];
}
