import { createHash } from "node:crypto";
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import type { AsuConfig, BranchConfig } from "../config/config.js";
import { readFeedList, type FeedList } from "../imagebuilder/feed-stager.js";
import type { BuildRunner, Workspace as BuildWorkspace } from "../imagebuilder/runners/build-runner.js";
import type { BuildJobData, BuildStage } from "../queue/build-job.js";
import { applyPackageChanges } from "../request/package-changes.js";
import { BuildError } from "../shared/errors.js";
import { applyCustomRepositories } from "./custom-repositories.js";
import {
  exceedsStorage,
  impossibleSelectionDetail,
  parseMakeInfo,
  parseManifest,
  parsePackageErrors,
} from "./imagebuilder-output.js";

/** What the pipeline needs from the ImageBuilder cache (see src/imagebuilder). */
export interface ImageBuilderSource {
  acquire(req: {
    version: string;
    target: string;
    branch: BranchConfig;
    onStage?: (stage: "download_imagebuilder" | "unpack_imagebuilder") => void;
  }): Promise<{ root: string; release(): Promise<void> }>;
}

export type { BuildRunner, BuildWorkspace };

export interface ImageSigner {
  /** Writes `<image>.sig` beside each image; returns the files written. */
  sign(files: string[]): Promise<string[]>;
}

/** What the pipeline needs to give a network-less build its packages (FeedStager). */
export interface PackageFeeds {
  stage(
    ws: BuildWorkspace,
    list: FeedList,
    wanted: string[],
    opts: { dumpApkIndex: (file: string) => Promise<string>; customUrls?: Set<string>; signal?: AbortSignal },
  ): Promise<unknown>;
}

export interface PipelineDeps {
  config: AsuConfig;
  imagebuilders: ImageBuilderSource;
  runner: BuildRunner;
  /** Stages the packages a build needs; without it the build must reach its feeds itself. */
  feeds?: PackageFeeds;
  /** Copies finished files into the store under the request hash. */
  storeFiles(hash: string, files: { name: string; path: string }[]): Promise<void>;
  signer?: ImageSigner;
}

export interface PipelineResult {
  body: Record<string, unknown>;
  /** Milliseconds spent inside make (info, manifest, image). */
  makeMs: number;
  /** Milliseconds spent getting the ImageBuilder (download and unpack, when needed). */
  imagebuilderMs: number;
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

// Installed into every image by the ImageBuilder itself (apk pins them, opkg installs them first).
const BASE_PACKAGES = ["base-files", "libc", "kernel"];
// `apk adbdump --format json` of a whole snapshot feed runs to several MiB.
const APK_DUMP_MAX_BYTES = 256 * 1024 * 1024;

// Image types that a router flashes; these get signatures when a key is configured.
const SIGNED_TYPES = new Set(["sysupgrade", "factory", "combined", "combined-efi", "sdcard"]);

/**
 * One build: make info → revision check → package changes → diff_packages → make manifest →
 * version check → make image → profiles.json → sign → store. Stages are reported as the
 * `imagebuilder_status` values LuCI knows.
 */
export async function runBuildPipeline(
  hash: string,
  job: BuildJobData,
  deps: PipelineDeps,
  setStage: (stage: BuildStage) => Promise<void>,
): Promise<PipelineResult> {
  const { config } = deps;
  const req = job.request;
  const branch = branchFor(config, req.version);
  const started = Date.now();
  let makeMs = 0;
  const stageUpdates: Promise<void>[] = [];

  await setStage("init");
  const lease = await deps.imagebuilders.acquire({
    version: req.version,
    target: req.target,
    branch,
    onStage: (stage) => {
      stageUpdates.push(setStage(stage));
    },
  });
  await Promise.all(stageUpdates);
  const imagebuilderMs = Date.now() - started;

  const timeoutMs = config.job_timeout * 1000;
  const deadline = started + timeoutMs;
  const make = async (args: string[]) => {
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new BuildError(`Error: Build timed out after ${config.job_timeout} s. Try again later.`, {
        userFault: false,
        retryable: false,
      });
    }
    const result = await deps.runner.run(ws, {
      args: ["make", ...args],
      timeoutMs: remaining,
      maxOutputBytes: config.max_log_bytes,
    });
    makeMs += result.durationMs;
    if (result.timedOut) {
      // A hung build hangs again: no retry.
      throw new BuildError(`Error: Build timed out after ${config.job_timeout} s and was stopped.`, {
        userFault: false,
        retryable: false,
        stdout: result.stdout,
        stderr: result.stderr,
      });
    }
    return result;
  };

  const ws = await deps.runner.createWorkspace(lease.root, {});
  try {
    await applyCustomRepositories(ws.dir, req);
    // Read before the build first runs: from here on the workspace is the build's to change.
    const feedList = deps.feeds ? await readFeedList(ws) : undefined;
    await setStage("validate_revision");
    const infoRun = await make(["info"]);
    if (infoRun.code !== 0) {
      throw new BuildError("Error: The ImageBuilder could not list its profiles (make info failed).", {
        userFault: false,
        stdout: infoRun.stdout,
        stderr: infoRun.stderr,
      });
    }
    const info = parseMakeInfo(infoRun.stdout);
    if (req.version_code && info.revision !== req.version_code) {
      throw new BuildError(
        `Error: Received incorrect version ${info.revision} (requested ${req.version_code})`,
        {
          userFault: true,
          stdout: infoRun.stdout,
          stderr: infoRun.stderr,
        },
      );
    }

    const requested = applyPackageChanges(req.packages, {
      version: req.version,
      target: req.target,
      profile: job.profile,
    });
    const buildPackages = req.diff_packages
      ? diffPackages(requested, [...info.defaultPackages, ...(info.profilePackages[job.profile] ?? [])])
      : requested;

    await setStage("validate_manifest");
    if (deps.feeds && feedList) {
      const remaining = Math.max(1, deadline - Date.now());
      await deps.feeds.stage(
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
              args: [
                path.join(ws.dir, "staging_dir", "host", "bin", "apk"),
                "adbdump",
                "--format",
                "json",
                file,
              ],
              timeoutMs: Math.max(1, deadline - Date.now()),
              maxOutputBytes: APK_DUMP_MAX_BYTES,
            });
            if (run.code !== 0 || run.timedOut) {
              throw new BuildError("Error: The ImageBuilder's apk could not read a package index.", {
                userFault: false,
                stdout: run.stdout,
                stderr: run.stderr,
              });
            }
            return run.stdout;
          },
          customUrls: new Set(Object.values(req.repositories).map((u) => u.replace(/\/+$/, ""))),
          signal: AbortSignal.timeout(remaining),
        },
      );
    }
    const manifestRun = await make([
      "manifest",
      `PROFILE=${job.profile}`,
      `PACKAGES=${buildPackages.join(" ")}`,
      "STRIP_ABI=1",
    ]);
    if (manifestRun.code !== 0) {
      const text = `${manifestRun.stdout}\n${manifestRun.stderr}`;
      const problems = parsePackageErrors(text);
      const detail =
        problems.missing.length + problems.conflicts.length > 0
          ? impossibleSelectionDetail(problems)
          : "Error: Impossible package selection. See stderr for what the package manager said.";
      throw new BuildError(detail, {
        userFault: true,
        stdout: manifestRun.stdout,
        stderr: manifestRun.stderr,
      });
    }
    const manifest = parseManifest(manifestRun.stdout);
    for (const [name, version] of Object.entries(req.packages_versions)) {
      if (name === "kernel" || name === "libc") continue; // pseudo-packages, see normalizeRequest
      const actual = manifest[name];
      if (actual === undefined) {
        throw new BuildError(`Error: Impossible package selection: ${name} is not in the manifest`, {
          userFault: true,
          stdout: manifestRun.stdout,
          stderr: manifestRun.stderr,
        });
      }
      if (actual !== version) {
        throw new BuildError(
          `Error: Impossible package selection: ${name} version not as requested: ${version} vs. ${actual}`,
          { userFault: true, stdout: manifestRun.stdout, stderr: manifestRun.stderr },
        );
      }
    }

    await setStage("calculate_packages_hash");
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
    if (req.filesystem) imageArgs.push(`ROOTFS_FILESYSTEM=${req.filesystem}`);
    if (req.defaults) {
      if (!config.allow_defaults) {
        throw new BuildError("Error: This server does not accept `defaults`. Remove them from the request.", {
          userFault: true,
        });
      }
      const target = path.join(ws.filesDir, "etc", "uci-defaults");
      await mkdir(target, { recursive: true });
      await writeFile(path.join(target, "99-asu-defaults"), req.defaults, { mode: 0o644 });
      imageArgs.push(`FILES=${ws.filesDir}`);
    }

    await setStage("building_image");
    const imageRun = await make(imageArgs);
    const logs = { stdout: imageRun.stdout, stderr: imageRun.stderr };
    if (exceedsStorage(`${imageRun.stdout}\n${imageRun.stderr}`)) {
      throw new BuildError("Error: Selected packages exceed device storage", { userFault: true, ...logs });
    }
    if (imageRun.code !== 0) {
      throw new BuildError("Error: The image build failed. See stderr for the ImageBuilder's output.", {
        userFault: false,
        ...logs,
      });
    }

    const profilesPath = path.join(ws.binDir, "profiles.json");
    let output: OutputProfiles;
    try {
      output = JSON.parse(await readFile(profilesPath, "utf8")) as OutputProfiles;
    } catch {
      throw new BuildError(
        "Error: The ImageBuilder wrote no profiles.json, so the images cannot be described.",
        {
          userFault: false,
          ...logs,
        },
      );
    }
    const profile = output.profiles?.[job.profile];
    if (!profile) {
      throw new BuildError(
        `Error: The ImageBuilder's profiles.json has no entry for profile ${job.profile}.`,
        {
          userFault: false,
          ...logs,
        },
      );
    }
    const images = profile.images ?? [];
    if (images.length === 0) {
      throw new BuildError("Error: The build produced no images for this profile.", {
        userFault: false,
        ...logs,
      });
    }

    const produced = new Set(await readdir(ws.binDir));
    const storeNames = new Set<string>(["profiles.json"]);
    for (const image of images) {
      if (!produced.has(image.name)) {
        throw new BuildError(`Error: profiles.json lists ${image.name}, but the build did not write it.`, {
          userFault: false,
          ...logs,
        });
      }
      storeNames.add(image.name);
    }
    for (const name of produced) if (name.endsWith(".manifest")) storeNames.add(name);

    if (deps.signer) {
      await setStage("signing_images");
      const toSign = images.filter((i) => SIGNED_TYPES.has(i.type)).map((i) => path.join(ws.binDir, i.name));
      for (const sig of await deps.signer.sign(toSign)) storeNames.add(path.basename(sig));
    }

    await deps.storeFiles(
      hash,
      [...storeNames].map((name) => ({ name, path: path.join(ws.binDir, name) })),
    );

    const { profiles: _profiles, ...targetFacts } = output;
    void _profiles;
    const body: Record<string, unknown> = {
      ...targetFacts,
      ...profile,
      id: job.profile,
      images,
      build_at: new Date().toISOString(),
      bin_dir: hash,
      manifest,
      build_cmd: [
        "make",
        ...imageArgs.map((a) =>
          a.startsWith("BIN_DIR=")
            ? "BIN_DIR=/builder/bin"
            : a.startsWith("FILES=")
              ? "FILES=/builder/files"
              : a,
        ),
      ],
      request: req,
      request_hash: hash,
      enqueued_at: new Date(job.enqueued_at).toISOString(),
      detail: "done",
      status: 200,
      imagebuilder_status: "done",
      stdout: imageRun.stdout,
      stderr: imageRun.stderr,
    };
    // Not read by any client; lets operators and bench/ see where a build's time went.
    body.timings = { imagebuilder_ms: imagebuilderMs, make_ms: makeMs, total_ms: Date.now() - started };
    return { body, makeMs, imagebuilderMs };
  } finally {
    await ws.dispose().catch(() => undefined);
    await lease.release().catch(() => undefined);
  }
}

/**
 * With `diff_packages`, the device's default packages that the request does not list are
 * removed (`-pkg`), so an upgrade keeps exactly the packages the router has. The user's
 * packages keep their order.
 */
export function diffPackages(requested: string[], defaults: string[]): string[] {
  const wanted = new Set(requested.filter((p) => !p.startsWith("-")));
  const removals = [...new Set(defaults)]
    .filter((p) => !wanted.has(p))
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
