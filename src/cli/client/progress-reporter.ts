import cliProgress from "cli-progress";
import { BUILD_STAGES, stageIndex, stageText, type BuildProgress } from "./build-answer.js";

/**
 * What `asu build` shows while it waits and downloads. On a terminal: live bars (cli-progress)
 * for the build (stage, queue position, elapsed time) and for each download. Anywhere else
 * (a pipe, a CI log, a file): one plain line per change, never a control character.
 */
export interface ProgressReporter {
  /** A line of information above the bars (or a plain line). */
  info(text: string): void;
  build(progress: BuildProgress): void;
  buildEnd(text: string): void;
  /** `label` names the image briefly on a bar (`squashfs-sysupgrade`); `name` is its file name. */
  downloadStart(name: string, label: string, totalBytes: number | undefined): void;
  downloadData(name: string, receivedBytes: number): void;
  downloadEnd(name: string, text: string): void;
  /** Stops every bar and restores the cursor; safe to call twice. */
  stop(): void;
}

export interface ReporterOptions {
  /** Also show the build's output lines (from the event stream). */
  verbose: boolean;
  /** Where progress goes (stderr; results go to stdout). */
  stream: NodeJS.WriteStream;
  now?: () => number;
}

/** A terminal gets bars; `TERM=dumb`, pipes and files get plain lines. */
export function createReporter(opts: ReporterOptions): ProgressReporter {
  const interactive = opts.stream.isTTY === true && process.env.TERM !== "dumb";
  return interactive ? new TerminalReporter(opts) : new PlainReporter(opts);
}

/** Removes control characters (escape codes included) from text that came from the server. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, "");
}

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** 75 s → "1:15". */
export function formatElapsed(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function describe(progress: BuildProgress): string {
  switch (progress.kind) {
    case "queued":
      return `queued, position ${progress.position}`;
    case "stage":
      return progress.stage === "queued" ? "queued" : `building: ${stageText(progress.stage)}`;
    case "log":
      return `  ${progress.stream === "stderr" ? "!" : "|"} ${progress.line}`;
  }
}

class PlainReporter implements ProgressReporter {
  private readonly started: number;
  private readonly now: () => number;
  private last = "";

  constructor(private readonly opts: ReporterOptions) {
    this.now = opts.now ?? Date.now;
    this.started = this.now();
  }

  private write(text: string): void {
    this.opts.stream.write(`[${formatElapsed(this.now() - this.started)}] ${printable(text)}\n`);
  }

  info(text: string): void {
    this.write(text);
  }

  build(progress: BuildProgress): void {
    if (progress.kind === "log") {
      if (this.opts.verbose) this.opts.stream.write(`${printable(describe(progress))}\n`);
      return;
    }
    const text = describe(progress);
    if (text === this.last) return;
    this.last = text;
    this.write(text);
  }

  buildEnd(text: string): void {
    this.write(text);
  }

  downloadStart(name: string, _label: string, totalBytes: number | undefined): void {
    this.write(`downloading ${name}${totalBytes !== undefined ? ` (${formatBytes(totalBytes)})` : ""}`);
  }

  downloadData(): void {
    // One line per file is enough in a log.
  }

  downloadEnd(_name: string, text: string): void {
    this.write(text);
  }

  stop(): void {}
}

interface BuildPayload {
  stage: string;
  queue: string;
}

interface DownloadPayload {
  name: string;
  known: boolean;
}

class TerminalReporter implements ProgressReporter {
  private readonly bars: cliProgress.MultiBar;
  private buildBar: cliProgress.SingleBar | undefined;
  private readonly downloads = new Map<string, cliProgress.SingleBar>();
  private stopped = false;

  constructor(private readonly opts: ReporterOptions) {
    this.bars = new cliProgress.MultiBar(
      {
        stream: opts.stream,
        hideCursor: true,
        fps: 5,
        barsize: 24,
        // The command's own Ctrl-C handler stops the bars (and restores the cursor) first.
        gracefulExit: false,
        autopadding: true,
        format: (options, params, payload: BuildPayload | DownloadPayload) => {
          const bar = cliProgress.Format.BarFormat(params.progress, options);
          const elapsed = formatElapsed((params.stopTime ?? Date.now()) - params.startTime);
          if ("name" in payload) {
            const size = payload.known
              ? `${formatBytes(params.value)} / ${formatBytes(params.total)}`
              : formatBytes(params.value);
            return `${payload.name} ${bar} ${size} | ${elapsed}`;
          }
          return `build ${bar} ${payload.stage}${payload.queue} | ${elapsed}`;
        },
      },
      cliProgress.Presets.shades_classic,
    );
  }

  info(text: string): void {
    this.bars.log(`${printable(text)}\n`);
  }

  build(progress: BuildProgress): void {
    if (progress.kind === "log") {
      if (this.opts.verbose) this.bars.log(`${printable(describe(progress))}\n`);
      return;
    }
    const stage = progress.kind === "queued" ? "queued" : progress.stage;
    const payload: BuildPayload = {
      stage: stageText(stage),
      queue: progress.kind === "queued" ? ` (position ${progress.position})` : "",
    };
    const index = stageIndex(stage);
    if (!this.buildBar) {
      this.buildBar = this.bars.create(BUILD_STAGES.length - 1, index ?? 0, payload);
      return;
    }
    if (index !== undefined) this.buildBar.update(index, payload);
    else this.buildBar.update(payload);
  }

  buildEnd(text: string): void {
    if (this.buildBar) {
      this.buildBar.update(BUILD_STAGES.length - 1, { stage: "done", queue: "" });
      this.buildBar.stop();
    }
    this.info(text);
  }

  downloadStart(name: string, label: string, totalBytes: number | undefined): void {
    const payload: DownloadPayload = { name: printable(label), known: totalBytes !== undefined };
    this.downloads.set(name, this.bars.create(totalBytes ?? 0, 0, payload));
  }

  downloadData(name: string, receivedBytes: number): void {
    const bar = this.downloads.get(name);
    if (!bar) return;
    if (bar.getTotal() < receivedBytes) bar.setTotal(receivedBytes);
    bar.update(receivedBytes);
  }

  downloadEnd(name: string, text: string): void {
    this.downloads.get(name)?.stop();
    this.info(text);
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    // cli-progress prints logged lines at its next redraw; stop() alone would drop the last ones.
    this.bars.update();
    this.bars.stop();
  }
}
