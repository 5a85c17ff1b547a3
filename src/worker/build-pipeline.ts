import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import type { AsuConfig, BranchConfig } from "../config/config.js";
import type { RunResult } from "../imagebuilder/process-runner.js";
import type { BuildRunner, ImageBuilderSource, Workspace } from "../imagebuilder/runners/index.js";
import type { BuildJobData, BuildStage } from "../queue/build-job.js";
import { applyPackageChanges } from "../request/package-changes.js";
import { readFeedList, type FeedList } from "../imagebuilder/feed-stager.js";
import { BuildError } from "../shared/errors.js";
import {
  isSafeName,
  openRegularFile,
  readOpened,
  readRegularFile,
  UnsafeFileError,
  writeNewFile,
  type OpenedFile,
} from "../shared/safe-fs.js";
import { StoreIntegrityError, type StoreFile } from "../store/local-store.js";
import { SpanClock } from "./build-spans.js";
import { applyCustomRepositories } from "./custom-repositories.js";
import { treeKey, type CachedMakeInfo, type MakeInfoCache } from "./make-info-cache.js";
import { checkRevision, ImageBuilderBehindError } from "./revision-check.js";
import {
  describePackageFailure,
  exceedsStorage,
  parseMakeInfo,
  parseManifest,
} from "./imagebuilder-output.js";

export interface SignImageContext {
  /** A folder no build can reach (the workspace's privateDir), for the signer's own files. */
  workDir: string;
  signal?: AbortSignal;
}

/** An image after signing (docs/decisions/002). */
export interface SignedImage {
  /** The bytes to serve: with an embedded signature, or exactly as built. */
  image: Buffer;
  /** Whether a fwtool signature trailer was embedded. */
  embedded: boolean;
  /** sha256 of `image`, which LuCI, owut and auc check the download against. */
  sha256: string;
  /** sha256 of the image without its fwtool signature, as OpenWrt's json_add_image_info.py means it. */
  sha256Unsigned: string;
  /** `<image>.sig`: a usign signature over `image`, the bytes served. */
  detachedSignature: string;
}

export interface ImageSigner {
  sign(image: Buffer, ctx: SignImageContext): Promise<SignedImage>;
}

/** What the pipeline needs to give a network-less build its packages (FeedStager). */
export interface PackageFeeds {
  stage(
    ws: Workspace,
    list: FeedList,
    wanted: string[],
    opts: {
      dumpApkIndex: (file: string) => Promise<string>;
      customUrls?: Set<string>;
      signal?: AbortSignal;
      imagebuilder?: string;
    },
  ): Promise<unknown>;
}

// Installed into every image by the ImageBuilder itself (apk pins them, opkg installs them first).
const BASE_PACKAGES = ["base-files", "libc", "kernel"];
// `apk adbdump --format json` of a whole snapshot feed runs to several MiB.
const APK_DUMP_MAX_BYTES = 256 * 1024 * 1024;

/** Bounds on what the worker reads from a build (issue #9); tests lower them. */
export interface PipelineLimits {
  /** profiles.json; real ones are a few KB per profile. */
  profilesJsonBytes: number;
  /** Any one image. */
  imageBytes: number;
  /** stdout and stderr each keep this much of their end in results. */
  outputTailBytes: number;
}

const PROFILES_READ_TIMEOUT_MS = 30_000;

export const DEFAULT_LIMITS: PipelineLimits = {
  profilesJsonBytes: 4 * 1024 * 1024,
  imageBytes: 2 * 1024 * 1024 * 1024,
  outputTailBytes: 64 * 1024,
};

export interface PipelineDeps {
  config: AsuConfig;
  imagebuilders: ImageBuilderSource;
  runner: BuildRunner;
  /** Stages the packages a build needs; builds have no network (docs/decisions/005). */
  feeds?: PackageFeeds;
  /** `make info` per ImageBuilder tree, so that a build runs make twice, not three times. */
  makeInfoCache?: MakeInfoCache;
  /**
   * Publishes finished files under the request hash: images from their open descriptors
   * (checking size and sha256 while copying), the manifest and signatures as data.
   */
  storeFiles(hash: string, files: StoreFile[], signal?: AbortSignal): Promise<void>;
  signer?: ImageSigner;
  limits?: Partial<PipelineLimits>;
  /**
   * Live output of the build's make runs, line by line, host paths already replaced
   * (the event stream, issue #14). Optional: without it nothing is streamed.
   */
  onOutputLine?: (stream: "stdout" | "stderr", line: string) => void;
}

export interface PipelineResult {
  body: Record<string, unknown>;
  /** Milliseconds spent inside make (info, manifest, image). */
  makeMs: number;
  /** Milliseconds spent getting the ImageBuilder (download and unpack, when needed). */
  imagebuilderMs: number;
  /** Where the time went, step by step (build-spans.ts); the worker adds its own steps. */
  spans: SpanClock;
  /**
   * Removes the build's workspace and gives its ImageBuilder back. Not started yet: the worker
   * runs it once the result is stored, so the client does not wait for it (issue #13). Rejects
   * when the workspace could not be removed (the ImageBuilder is given back all the same).
   */
  cleanup(): Promise<void>;
}

interface ProfileImage {
  name: string;
  type: string;
  filesystem?: string;
  sha256: string;
  sha256_unsigned?: string;
}

interface OutputProfiles {
  target?: string;
  version_code?: string;
  version_number?: string;
  metadata_version?: number;
  profiles?: Record<string, Record<string, unknown> & { images?: ProfileImage[] }>;
  [key: string]: unknown;
}

// Image types that a router flashes; these get signatures when a key is configured.
const SIGNED_TYPES = new Set(["sysupgrade", "factory", "combined", "combined-efi", "sdcard"]);

/**
 * One build: make info → revision check → package changes → diff_packages → make manifest →
 * version check → make image → profiles.json → sign → store. Stages are reported as the
 * `imagebuilder_status` values LuCI knows.
 *
 * `job_timeout` bounds the whole job, ImageBuilder download and store included: when it
 * fires, the job fails at once (the worker takes the next one) and the work still running is
 * aborted and cleans up after itself.
 */
export async function runBuildPipeline(
  hash: string,
  job: BuildJobData,
  deps: PipelineDeps,
  setStage: (stage: BuildStage) => Promise<void>,
): Promise<PipelineResult> {
  const timeoutMs = deps.config.job_timeout * 1000;
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort();
      reject(
        new BuildError(`Error: Build timed out after ${deps.config.job_timeout} s and was stopped.`, {
          userFault: false,
          // A hung build hangs again.
          retryable: false,
        }),
      );
    }, timeoutMs);
  });
  const work = buildSteps(hash, job, deps, setStage, controller.signal, Date.now() + timeoutMs);
  let delivered = false;
  try {
    const result = await Promise.race([work, timedOut]);
    delivered = true;
    return result;
  } finally {
    clearTimeout(timer);
    controller.abort();
    // After a timeout the steps end on their own (aborted); nobody waits for them. Steps that
    // still succeeded leave a workspace that no caller will clean up: it goes here.
    if (!delivered) work.then((r) => r.cleanup()).catch(() => undefined);
  }
}

interface Logs {
  stdout: string;
  stderr: string;
}

async function buildSteps(
  hash: string,
  job: BuildJobData,
  deps: PipelineDeps,
  setStage: (stage: BuildStage) => Promise<void>,
  signal: AbortSignal,
  deadline: number,
): Promise<PipelineResult> {
  const { config } = deps;
  const limits = { ...DEFAULT_LIMITS, ...deps.limits };
  const req = job.request;
  const branch = branchFor(config, req.version);
  const started = Date.now();
  const clock = new SpanClock();
  let makeMs = 0;
  // Stages go to Redis in order without holding up the build (a few round trips each, issue
  // #13). One that fails still fails the build: all are awaited before the outcome is known.
  let stageUpdates = Promise.resolve();
  const stage = async (name: BuildStage): Promise<void> => {
    signal.throwIfAborted();
    const next = stageUpdates.then(() => setStage(name));
    next.catch(() => undefined);
    stageUpdates = next;
  };

  if (req.defaults && !config.allow_defaults) {
    throw new BuildError("Error: This server does not accept `defaults`. Remove them from the request.", {
      userFault: true,
    });
  }

  await stage("init");
  let result: PipelineResult;
  try {
    try {
      result = await withImageBuilder(false);
    } catch (err) {
      if (!(err instanceof ImageBuilderBehindError)) throw err;
      // A snapshot newer than our tree: read sha256sums now and build with its ImageBuilder.
      result = await withImageBuilder(true);
    }
  } catch (err) {
    // The worker reports "failed" next: no stage of this build may land after it.
    await stageUpdates.catch(() => undefined);
    throw err;
  }
  try {
    await stageUpdates;
  } catch (err) {
    await result.cleanup().catch(() => undefined);
    throw err;
  }
  clock.lap("stages");
  return result;

  async function withImageBuilder(refresh: boolean): Promise<PipelineResult> {
    const lease = await deps.imagebuilders.acquire({
      version: req.version,
      target: req.target,
      branch,
      onStage: (s) => {
        if (!signal.aborted) void stage(s).catch(() => undefined);
      },
      ...(refresh ? { refresh } : {}),
    });
    clock.lap("imagebuilder");
    // Set once the result holds the cleanup: from then on the worker removes the workspace.
    let handedOver = false;
    try {
      signal.throwIfAborted();
      const imagebuilderMs = Date.now() - started - makeMs;
      const ws = await deps.runner.createWorkspace(lease.root, {});
      clock.lap("workspace");
      try {
        signal.throwIfAborted();
        const result = await buildInWorkspace(ws, lease.root, refresh);
        result.body.timings = {
          imagebuilder_ms: imagebuilderMs,
          make_ms: makeMs,
          total_ms: Date.now() - started,
        };
        let cleaning: Promise<void> | undefined;
        const cleanup = (): Promise<void> =>
          (cleaning ??= (async () => {
            // Timed on their own: this runs while the worker reports the result.
            const t0 = performance.now();
            try {
              await ws.dispose();
            } finally {
              const t1 = performance.now();
              clock.add("dispose", t1 - t0);
              await lease.release().catch(() => undefined);
              clock.add("release", performance.now() - t1);
            }
          })());
        handedOver = true;
        return { ...result, makeMs, imagebuilderMs, spans: clock, cleanup };
      } finally {
        if (!handedOver) await ws.dispose().catch(() => undefined);
      }
    } finally {
      if (!handedOver) await lease.release().catch(() => undefined);
    }
  }

  async function buildInWorkspace(
    ws: Workspace,
    imagebuilderRoot: string,
    refreshed: boolean,
  ): Promise<{ body: Record<string, unknown> }> {
    // What clients see of a command's output: its end, without host paths (issue #9).
    const scrub = scrubber([
      [ws.root, "/builder"],
      [imagebuilderRoot, "/builder/ib"],
    ]);
    const logsOf = (r: Logs): Logs => ({
      stdout: tail(scrub(r.stdout), limits.outputTailBytes),
      stderr: tail(scrub(r.stderr), limits.outputTailBytes),
    });
    const make = async (args: string[]): Promise<RunResult> => {
      signal.throwIfAborted();
      const onOutputLine = deps.onOutputLine;
      const result = await deps.runner.run(ws, {
        args: ["make", ...args],
        timeoutMs: Math.max(1, deadline - Date.now()),
        maxOutputBytes: config.max_log_bytes,
        signal,
        ...(onOutputLine ? { onLine: (stream, line) => onOutputLine(stream, scrub(line)) } : {}),
      });
      makeMs += result.durationMs;
      clock.lap(`make_${args[0] ?? ""}`);
      signal.throwIfAborted();
      if (result.timedOut) {
        throw new BuildError(`Error: Build timed out after ${config.job_timeout} s and was stopped.`, {
          userFault: false,
          retryable: false,
          ...logsOf(result),
        });
      }
      return result;
    };
    /** Build output the worker refused or could not read: never the user's fault. */
    const outputFault = (detail: string, logs: Logs): BuildError =>
      new BuildError(detail, { userFault: false, retryable: false, ...logs });

    await applyCustomRepositories(ws.dir, req);
    // Written before any make runs, by exclusive create: nothing the build planted is followed.
    if (req.defaults) {
      await writeNewFile(ws.filesDir, "etc/uci-defaults/99-asu-defaults", req.defaults);
    }
    // Read before the build first runs: from here on the workspace is the build's to change.
    const feedList = deps.feeds ? await readFeedList(ws) : undefined;
    clock.lap("prepare");

    await stage("validate_revision");
    // The tree's identity: which `make info` it printed, and for which tree the cached feed
    // indexes were last checked (a new snapshot's tree revalidates them).
    const tree = deps.makeInfoCache || deps.feeds ? await treeKey(imagebuilderRoot) : undefined;
    const infoRun = await makeInfo();
    const { info } = infoRun;
    checkRevision(info.revision, job, refreshed, logsOf(infoRun));

    async function makeInfo(): Promise<CachedMakeInfo> {
      const cache = deps.makeInfoCache;
      const cached = tree !== undefined ? cache?.get(tree) : undefined;
      if (cached) return cached;
      const run = await make(["info"]);
      if (run.code !== 0) {
        throw new BuildError("Error: The ImageBuilder could not list its profiles (make info failed).", {
          userFault: false,
          ...logsOf(run),
        });
      }
      const fresh = { info: parseMakeInfo(run.stdout), stdout: scrub(run.stdout), stderr: scrub(run.stderr) };
      // Only what the tree alone printed: custom repositories change the workspace's feed list.
      if (tree !== undefined && Object.keys(req.repositories).length === 0) cache?.set(tree, fresh);
      return fresh;
    }

    const requested = applyPackageChanges(req.packages, {
      version: req.version,
      target: req.target,
      profile: job.profile,
    });
    const buildPackages = req.diff_packages
      ? diffPackages(requested, [...info.defaultPackages, ...(info.profilePackages[job.profile] ?? [])])
      : requested;

    const failureContext = { customRepositories: Object.keys(req.repositories).length > 0 };
    clock.lap("packages");
    await stage("validate_manifest");
    if (deps.feeds && feedList) {
      const staged = await deps.feeds.stage(
        ws,
        feedList,
        [
          ...requested,
          ...info.defaultPackages,
          ...(info.profilePackages[job.profile] ?? []),
          ...BASE_PACKAGES,
        ],
        {
          dumpApkIndex: async (file) => {
            const run = await deps.runner.run(ws, {
              args: [`${ws.dir}/staging_dir/host/bin/apk`, "adbdump", "--format", "json", file],
              timeoutMs: Math.max(1, deadline - Date.now()),
              maxOutputBytes: APK_DUMP_MAX_BYTES,
              signal,
            });
            if (run.code !== 0 || run.timedOut) {
              throw new BuildError("Error: The ImageBuilder's apk could not read a package index.", {
                userFault: false,
                ...logsOf(run),
              });
            }
            return run.stdout;
          },
          customUrls: new Set(Object.values(req.repositories).map((u) => u.replace(/\/+$/, ""))),
          signal,
          ...(tree !== undefined ? { imagebuilder: tree } : {}),
        },
      );
      clock.lap("feeds");
      const parts = isRecord(staged) && isRecord(staged.timings) ? staged.timings : {};
      for (const [name, ms] of Object.entries(parts))
        if (typeof ms === "number") clock.add(`feeds.${name}`, ms);
    }
    const manifestRun = await make([
      "manifest",
      `PROFILE=${job.profile}`,
      `PACKAGES=${buildPackages.join(" ")}`,
      "STRIP_ABI=1",
    ]);
    if (manifestRun.code !== 0) {
      const failure = describePackageFailure(`${manifestRun.stdout}\n${manifestRun.stderr}`, failureContext);
      throw new BuildError(
        failure?.detail ??
          "Error: The package manager failed in a way the server does not recognise. See stderr for its own words; if the packages look right, tell the server operator.",
        {
          // Unrecognised output may be a broken feed: not cached for an hour as the user's doing.
          userFault: failure?.userFault ?? false,
          retryable: failure ? !failure.userFault : false,
          ...logsOf(manifestRun),
        },
      );
    }
    const manifest = parseManifest(manifestRun.stdout);
    // Every image holds at least base-files: an empty list means the ImageBuilder broke.
    if (Object.keys(manifest).length === 0) {
      throw new BuildError(
        "Error: The ImageBuilder printed an empty manifest, so the image cannot be described. Please try again later or tell the server operator.",
        { userFault: false, retryable: false, ...logsOf(manifestRun) },
      );
    }
    for (const [name, version] of Object.entries(req.packages_versions)) {
      if (name === "kernel" || name === "libc") continue; // pseudo-packages, see normalizeRequest
      const actual = manifest[name];
      if (actual === undefined) {
        throw new BuildError(`Error: Impossible package selection: ${name} is not in the manifest`, {
          userFault: true,
          ...logsOf(manifestRun),
        });
      }
      if (actual !== version) {
        throw new BuildError(
          `Error: Impossible package selection: ${name} version not as requested: ${version} vs. ${actual}`,
          { userFault: true, ...logsOf(manifestRun) },
        );
      }
    }

    await stage("calculate_packages_hash");
    const packagesHash = createHash("sha256")
      .update(
        Object.entries(manifest)
          .map(([n, v]) => `${n} ${v}`)
          .sort()
          .join("\n"),
      )
      .digest("hex");

    const imageArgs = [
      "image",
      `PROFILE=${job.profile}`,
      `PACKAGES=${buildPackages.join(" ")}`,
      `EXTRA_IMAGE_NAME=${packagesHash.slice(0, 12)}`,
      `BIN_DIR=${ws.binDir}`,
    ];
    if (req.rootfs_size_mb) imageArgs.push(`ROOTFS_PARTSIZE=${req.rootfs_size_mb}`);
    // OpenWrt's ImageBuilder has no such option; upstream ASU then ignores `filesystem`.
    if (req.filesystem && (await supportsOption(imagebuilderRoot, "ROOTFS_FILESYSTEM"))) {
      imageArgs.push(`ROOTFS_FILESYSTEM=${req.filesystem}`);
    }
    if (req.defaults) imageArgs.push(`FILES=${ws.filesDir}`);
    clock.lap("manifest_check");

    await stage("building_image");
    const imageRun = await make(imageArgs);
    const logs = logsOf(imageRun);
    const imageText = `${imageRun.stdout}\n${imageRun.stderr}`;
    if (exceedsStorage(imageText)) {
      throw new BuildError("Error: Selected packages exceed device storage", { userFault: true, ...logs });
    }
    if (imageRun.code !== 0) {
      const failure = describePackageFailure(imageText, failureContext);
      throw new BuildError(
        failure?.detail ?? "Error: The image build failed. See stderr for the ImageBuilder's output.",
        {
          userFault: failure?.userFault ?? false,
          ...(failure ? { retryable: !failure.userFault } : {}),
          ...logs,
        },
      );
    }

    // --- everything below reads hostile build output (issue #9) ----------------------------
    let output: OutputProfiles;
    try {
      // Its own time bound too: a few MB from local disk take milliseconds.
      const readSignal = AbortSignal.any([signal, AbortSignal.timeout(PROFILES_READ_TIMEOUT_MS)]);
      const text = await readRegularFile(ws.binDir, "profiles.json", limits.profilesJsonBytes, readSignal);
      output = JSON.parse(text.toString("utf8")) as OutputProfiles;
    } catch (err) {
      if (err instanceof UnsafeFileError && err.reason === "missing") {
        throw outputFault(
          "Error: The ImageBuilder wrote no profiles.json, so the images cannot be described.",
          logs,
        );
      }
      if (err instanceof UnsafeFileError && (err.reason !== "aborted" || !signal.aborted)) {
        throw outputFault(`Error: The build left an unusable profiles.json: ${err.message}.`, logs);
      }
      if (err instanceof SyntaxError) {
        throw outputFault("Error: The ImageBuilder's profiles.json is not valid JSON.", logs);
      }
      throw err;
    }
    const profile = isRecord(output) && isRecord(output.profiles) ? output.profiles[job.profile] : undefined;
    if (!isRecord(profile)) {
      throw outputFault(
        `Error: The ImageBuilder's profiles.json has no entry for profile ${job.profile}.`,
        logs,
      );
    }
    const images = Array.isArray(profile.images) ? (profile.images as unknown[]) : [];
    if (images.length === 0) {
      throw outputFault("Error: The build produced no images for this profile.", logs);
    }
    const names = new Set<string>();
    for (const image of images) {
      const name = isRecord(image) ? image.name : undefined;
      if (typeof name !== "string" || !isSafeName(name)) {
        throw outputFault(
          `Error: The ImageBuilder's profiles.json lists an unsafe image name ${JSON.stringify(String(name)).slice(0, 200)}.`,
          logs,
        );
      }
      if (!isRecord(image) || typeof image.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(image.sha256)) {
        throw outputFault(`Error: The ImageBuilder's profiles.json has no valid sha256 for ${name}.`, logs);
      }
      names.add(name);
    }
    const prefix = profile.image_prefix;
    const manifestName = `${typeof prefix === "string" && prefix !== "" ? prefix : `openwrt-${job.profile}`}.manifest`;
    if (!isSafeName(manifestName) || names.has(manifestName)) {
      throw outputFault(`Error: The ImageBuilder's profiles.json has an unsafe image_prefix.`, logs);
    }

    const opened: OpenedFile[] = [];
    // Images whose bytes changed when a signature was embedded: what images[] must now say.
    const servedImages = new Map<string, { sha256: string; sha256_unsigned: string; size: number }>();
    try {
      const files: StoreFile[] = [];
      const describedImages = images as ProfileImage[];
      for (const image of describedImages) {
        if (files.some((f) => f.name === image.name)) continue;
        let file: OpenedFile;
        try {
          file = await openRegularFile(ws.binDir, image.name, limits.imageBytes);
        } catch (err) {
          if (!(err instanceof UnsafeFileError)) throw err;
          throw outputFault(
            err.reason === "missing"
              ? `Error: profiles.json lists ${image.name}, but the build did not write it.`
              : `Error: The build left an unusable image: ${err.message}.`,
            logs,
          );
        }
        opened.push(file);
        files.push({ name: image.name, file, sha256: image.sha256, maxBytes: limits.imageBytes });
      }
      // The one manifest we publish is the one make manifest printed, written by us.
      const pm = branch.package_manager;
      files.push({
        name: manifestName,
        data: Object.entries(manifest)
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([n, v]) => (pm === "apk" ? `${n} ${v}\n` : `${n} - ${v}\n`))
          .join(""),
      });

      clock.lap("outputs");
      if (deps.signer) {
        await stage("signing_images");
        for (const image of describedImages) {
          if (!SIGNED_TYPES.has(image.type)) continue;
          const sigName = `${image.name}.sig`;
          if (!isSafeName(sigName) || names.has(sigName) || files.some((f) => f.name === sigName)) continue;
          const file = opened.find((f) => f.name === image.name) as OpenedFile;
          const bytes = await readOpened(file, limits.imageBytes, signal).catch((err: unknown) => {
            if (err instanceof UnsafeFileError && err.reason !== "aborted") {
              throw outputFault(`Error: The build left an unusable image: ${err.message}.`, logs);
            }
            throw err;
          });
          // What we sign must be what profiles.json, and so the client, expects.
          const digest = createHash("sha256").update(bytes).digest("hex");
          if (digest !== image.sha256) {
            throw outputFault(
              `Error: ${image.name} has sha256 ${digest}, but profiles.json says ${image.sha256}.`,
              logs,
            );
          }
          // Signed on a private copy; the results are stored as data: nothing is written into binDir.
          let signed: SignedImage;
          try {
            signed = await deps.signer.sign(bytes, { workDir: ws.privateDir, signal });
          } catch (err) {
            if (signal.aborted) throw err;
            throw new BuildError(
              `Error: Signing ${image.name} failed: ${err instanceof Error ? err.message : String(err)}. The server operator must check the signing setup (signing_key, signing_cert, signing_tools_dir).`,
              // A broken key, certificate or tool stays broken: retrying cannot help.
              { userFault: false, retryable: false, ...logs },
            );
          }
          if (signed.embedded) {
            const at = files.findIndex((f) => f.name === image.name);
            files[at] = { name: image.name, data: signed.image };
            servedImages.set(image.name, {
              sha256: signed.sha256,
              sha256_unsigned: signed.sha256Unsigned,
              size: signed.image.length,
            });
          }
          files.push({ name: sigName, data: signed.detachedSignature });
        }
      }

      clock.lap("sign");
      signal.throwIfAborted();
      try {
        await deps.storeFiles(hash, files, signal);
      } catch (err) {
        if (err instanceof StoreIntegrityError) throw outputFault(`Error: ${err.message}.`, logs);
        if (err instanceof UnsafeFileError && err.reason !== "aborted") {
          throw outputFault(`Error: The build left an unusable image: ${err.message}.`, logs);
        }
        throw err;
      }
    } finally {
      for (const file of opened) await file.handle.close().catch(() => undefined);
    }
    clock.lap("store");

    const { profiles: _profiles, ...targetFacts } = output;
    void _profiles;
    // As upstream: build_at is the release's SOURCE_DATE_EPOCH (int() of it: 21.02-era files
    // have it as a string), so identical builds describe themselves identically.
    const epoch = epochSeconds(targetFacts.source_date_epoch);
    const body: Record<string, unknown> = {
      ...targetFacts,
      ...(epoch !== undefined ? { source_date_epoch: epoch } : {}),
      ...profile,
      id: job.profile,
      // sha256 is what clients check the download against: that of the bytes served.
      images: images.map((image) => {
        const served = servedImages.get((image as ProfileImage).name);
        return served ? { ...(image as ProfileImage), ...served } : image;
      }),
      build_at: new Date(epoch !== undefined ? epoch * 1000 : Date.now()).toISOString(),
      bin_dir: hash,
      manifest,
      build_cmd: ["make", ...imageArgs.map((a) => scrub(a))],
      request: req,
      request_hash: hash,
      enqueued_at: new Date(job.enqueued_at).toISOString(),
      detail: "done",
      status: 200,
      imagebuilder_status: "done",
      stdout: logs.stdout,
      stderr: logs.stderr,
    };
    return { body };
  }
}

function epochSeconds(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value)) return Math.trunc(value);
  if (typeof value === "string" && /^\s*\d+\s*$/.test(value)) return Number.parseInt(value, 10);
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Replaces host paths (longest first) with the neutral names clients see in build_cmd. */
function scrubber(pairs: [string, string][]): (text: string) => string {
  const sorted = pairs.filter(([from]) => from.length > 1).sort(([a], [b]) => b.length - a.length);
  return (text) => {
    let out = text;
    for (const [from, to] of sorted) out = out.split(from).join(to);
    return out;
  };
}

/**
 * The last `maxBytes` of a command's output, with a first line saying how much was cut: a
 * request with 1,000 bogus packages must not become a 500 KB result (issue #9, finding 8).
 */
export function tail(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= maxBytes) return text;
  let start = bytes.length - maxBytes;
  // Start on a character boundary, not inside a multi-byte sequence.
  while (start < bytes.length && ((bytes[start] as number) & 0xc0) === 0x80) start++;
  return `[asu: output cut: the first ${start} bytes of ${bytes.length} were dropped]\n${bytes.subarray(start).toString("utf8")}`;
}

/**
 * With `diff_packages`, the device's default packages that the request does not list are
 * removed (`-pkg`), so an upgrade keeps exactly the packages the router has. The user's
 * packages keep their order.
 */
export function diffPackages(requested: string[], defaults: string[]): string[] {
  const wanted = new Set(requested.filter((p) => !p.startsWith("-")));
  // Device packages such as "-swconfig" are already removals the profile applies itself;
  // prefixing them again gave "--swconfig" (issue #11, item 8).
  const removals = [...new Set(defaults)]
    .filter((p) => !p.startsWith("-") && !wanted.has(p))
    .sort()
    .map((p) => `-${p}`);
  const explicitRemovals = new Set(requested.filter((p) => p.startsWith("-")));
  return [...requested, ...removals.filter((r) => !explicitRemovals.has(r))];
}

export function branchFor(config: AsuConfig, version: string): BranchConfig {
  const name = version === "SNAPSHOT" ? "SNAPSHOT" : (/^(\d+\.\d+)/.exec(version)?.[1] ?? version);
  const branch = config.branches[name];
  if (!branch) throw new BuildError(`Error: Unsupported branch for version ${version}.`, { userFault: true });
  return branch;
}

/**
 * Whether the ImageBuilder's Makefile documents a make variable. Read from the verified,
 * unpacked tree (never a build's workspace), whose Makefile lists its options in `make help`.
 */
async function supportsOption(imagebuilderRoot: string, variable: string): Promise<boolean> {
  const makefile = await readFile(path.join(imagebuilderRoot, "Makefile"), "utf8").catch(() => "");
  return new RegExp(`\\b${variable}=`).test(makefile);
}
