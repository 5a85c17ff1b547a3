import { createHash } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { RunResult } from "../../src/imagebuilder/process-runner.js";
import type { BuildRunner, RunnerRunOptions, Workspace } from "../../src/imagebuilder/runners/index.js";
import type { BuildJobData, StoredResult } from "../../src/queue/build-job.js";
import type { BuildQueue, JobStatus } from "../../src/queue/build-queue.js";
import type { NormalizedRequest } from "../../src/request/normalize-request.js";
import { readOpened } from "../../src/shared/safe-fs.js";
import type { StoreFile } from "../../src/store/store.js";
import { UpstreamClient } from "../../src/upstream/upstream-client.js";

/**
 * Fakes for the middle test tier (docs/architecture.md, "Seams"): the runner, the ImageBuilder
 * cache, the store, the upstream client and the queue, so pipeline, worker and BuildService
 * tests drive every branch without a sandbox, a mirror, sockets or Redis.
 */

/** A workspace laid out as the runners lay it out, in a fresh folder under `parent`. */
export async function fakeWorkspace(parent: string): Promise<Workspace> {
  const root = await mkdtemp(path.join(parent, "ws-"));
  const ws: Workspace = {
    root,
    dir: path.join(root, "ib"),
    binDir: path.join(root, "bin"),
    filesDir: path.join(root, "files"),
    privateDir: path.join(root, "private"),
    feedsDir: path.join(root, "feeds"),
    readOnlyDirs: [],
    dispose: () => rm(root, { recursive: true, force: true }),
  };
  for (const d of [ws.dir, ws.binDir, ws.filesDir, ws.privateDir, ws.feedsDir]) {
    await mkdir(d, { recursive: true });
  }
  return ws;
}

/** A command's result: exit 0, no output, unless `over` says otherwise. */
export function runResult(over: Partial<RunResult> = {}): RunResult {
  return {
    code: 0,
    signal: null,
    stdout: "",
    stderr: "",
    timedOut: false,
    aborted: false,
    truncated: false,
    durationMs: 1,
    ...over,
  };
}

/**
 * A runner that makes fake workspaces under `parent` and answers each command with `run`
 * (the same BuildRunner interface as the native runner).
 */
export function fakeRunner(
  parent: string,
  run: (ws: Workspace, opts: RunnerRunOptions) => Promise<Partial<RunResult>>,
): BuildRunner {
  return {
    kind: "fake",
    createWorkspace: () => fakeWorkspace(parent),
    run: async (ws, opts) => runResult(await run(ws, opts)),
  };
}

/** A queued job as the API would queue it: ath79/generic on 24.10.4, nothing optional set. */
export function fakeJob(
  over: Partial<NormalizedRequest> = {},
  profile = over.profile ?? "test_device",
): BuildJobData {
  return {
    request: {
      distro: "openwrt",
      version: "24.10.4",
      version_code: "",
      target: "ath79/generic",
      profile,
      packages: [],
      packages_versions: {},
      diff_packages: false,
      defaults: null,
      rootfs_size_mb: null,
      filesystem: null,
      repositories: {},
      repositories_mode: "append",
      repository_keys: [],
      client: null,
      ...over,
    },
    profile,
    enqueued_at: Date.now(),
    result_ttl: 60,
  };
}

// --- the runner -------------------------------------------------------------------------------

type MakeTarget = "info" | "manifest" | "image";

/** What one scripted `make` answers; `hang` runs until the build is killed (its signal aborts). */
export type FakeStep =
  { code?: number | null; stdout?: string; stderr?: string; signal?: NodeJS.Signals | null } | "hang";

export const FAKE_REVISION = "r28427-6df0e3d02a";
export const FAKE_PROFILE = "test_device";
export const FAKE_IMAGE = "openwrt-24.10.4-ath79-generic-test_device-squashfs-sysupgrade.bin";
export const FAKE_FIRMWARE = Buffer.from("firmware bytes\n");

/** `make info` of an ImageBuilder with one profile, FAKE_PROFILE. */
export const FAKE_MAKE_INFO = [
  'Current Target: "ath79/generic"',
  `Current Revision: "${FAKE_REVISION}"`,
  "Default Packages: base-files busybox",
  "Available Profiles:",
  "",
  `${FAKE_PROFILE}:`,
  "    Test Device",
  "    Packages: ",
].join("\n");

/** What an honest `make image` leaves in BIN_DIR: one image and its profiles.json. */
export async function writeHonestImage(ws: Workspace): Promise<void> {
  const sha256 = createHash("sha256").update(FAKE_FIRMWARE).digest("hex");
  await writeFile(path.join(ws.binDir, FAKE_IMAGE), FAKE_FIRMWARE);
  await writeFile(
    path.join(ws.binDir, "profiles.json"),
    JSON.stringify({
      target: "ath79/generic",
      version_code: FAKE_REVISION,
      version_number: "24.10.4",
      metadata_version: 1,
      source_date_epoch: 1720000000,
      profiles: {
        [FAKE_PROFILE]: {
          image_prefix: "openwrt-24.10.4-ath79-generic-test_device",
          titles: [{ vendor: "Test", model: "Device" }],
          supported_devices: ["test,device"],
          images: [
            { name: FAKE_IMAGE, type: "sysupgrade", filesystem: "squashfs", sha256, sha256_unsigned: sha256 },
          ],
        },
      },
    }),
  );
}

/**
 * A runner that plays an ImageBuilder without a sandbox or a real `make`: each make target
 * answers as scripted (by default an honest build of FAKE_PROFILE), and it records what ran,
 * which workspaces were made and disposed, and whether a build was killed. Tests wait on
 * `started(target)` instead of sleeping.
 */
export class FakeRunner implements BuildRunner {
  readonly kind = "fake";
  readonly calls: string[][] = [];
  readonly workspaces: { ws: Workspace; disposed: boolean }[] = [];
  killed = 0;
  private readonly script: Partial<Record<MakeTarget, FakeStep>>;
  private readonly waiters = new Map<string, (() => void)[]>();

  constructor(
    private readonly parent: string,
    script: Partial<Record<MakeTarget, FakeStep>> = {},
  ) {
    this.script = script;
  }

  /** Resolves once `make <target>` has started (at once if it already has). */
  started(target: MakeTarget): Promise<void> {
    if (this.calls.some((args) => args[1] === target)) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiters.set(target, [...(this.waiters.get(target) ?? []), resolve]);
    });
  }

  readonly createWorkspace = async (): Promise<Workspace> => {
    const ws = await fakeWorkspace(this.parent);
    const entry = { ws, disposed: false };
    this.workspaces.push(entry);
    return {
      ...ws,
      dispose: async () => {
        entry.disposed = true;
        await ws.dispose();
      },
    };
  };

  readonly run = async (ws: Workspace, opts: RunnerRunOptions): Promise<RunResult> => {
    this.calls.push(opts.args);
    const target = opts.args[1] as MakeTarget;
    for (const wake of this.waiters.get(target) ?? []) wake();
    this.waiters.delete(target);
    const step = this.script[target];
    const base = { timedOut: false, aborted: false, truncated: false, durationMs: 1 };
    if (step === "hang") {
      // A build that never ends by itself: it ends when the worker kills it.
      await new Promise<void>((resolve) => {
        if (opts.signal?.aborted) resolve();
        opts.signal?.addEventListener("abort", () => resolve(), { once: true });
      });
      this.killed += 1;
      return { ...base, aborted: true, code: null, signal: "SIGKILL", stdout: "", stderr: "" };
    }
    if (target === "image" && step === undefined) await writeHonestImage(ws);
    const defaults: Record<MakeTarget, string> = {
      info: FAKE_MAKE_INFO,
      manifest: "base-files - 1\nbusybox - 2\n",
      image: "Building images for ath79\n",
    };
    return {
      ...base,
      code: step?.code === undefined ? 0 : step.code,
      signal: step?.signal ?? null,
      stdout: step?.stdout ?? defaults[target] ?? "",
      stderr: step?.stderr ?? "",
    };
  };
}

// --- the ImageBuilder cache -------------------------------------------------------------------

/** An ImageBuilder source whose lease is a folder; counts leases and can fail or hang instead. */
export class FakeImageBuilders {
  acquired = 0;
  released = 0;
  constructor(
    private readonly root: string,
    private readonly behaviour: { fail?: unknown; hang?: boolean } = {},
  ) {}

  readonly acquire = async (): Promise<{ root: string; release(): Promise<void> }> => {
    if (this.behaviour.hang) return new Promise(() => undefined);
    if (this.behaviour.fail !== undefined) throw this.behaviour.fail;
    this.acquired += 1;
    return {
      root: this.root,
      release: async () => {
        this.released += 1;
      },
    };
  };
}

// --- the store --------------------------------------------------------------------------------

/** A store in memory: `storeFiles` reads each file's bytes as the real stores do. */
export class FakeStore {
  readonly builds = new Map<string, Map<string, Buffer>>();
  fail: unknown;

  readonly storeFiles = async (hash: string, files: StoreFile[]): Promise<void> => {
    if (this.fail !== undefined) throw this.fail;
    const stored = new Map<string, Buffer>();
    for (const f of files) {
      stored.set(
        f.name,
        "data" in f ? Buffer.from(f.data) : await readOpened(f.file, f.maxBytes, AbortSignal.timeout(10_000)),
      );
    }
    this.builds.set(hash, stored);
  };
}

// --- the upstream client ----------------------------------------------------------------------

/**
 * An UpstreamClient over an in-memory tree (see fixture-upstream.ts for the layout): the
 * real client's caching and parsing, with its fetch answered from `files`, no sockets.
 */
export function fakeUpstreamClient(tree: Record<string, string | object>): {
  client: UpstreamClient;
  files: Map<string, string>;
  fetched: string[];
} {
  const files = new Map(
    Object.entries(tree).map(([p, body]) => [p, typeof body === "string" ? body : JSON.stringify(body)]),
  );
  const fetched: string[] = [];
  const fakeFetch = (async (input: string | URL | Request) => {
    const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
    const key = decodeURIComponent(url.pathname).replace(/^\/+/, "");
    fetched.push(key);
    const body = files.get(key);
    return body === undefined ? new Response("not found", { status: 404 }) : new Response(body);
  }) as typeof fetch;
  return {
    client: new UpstreamClient({ baseUrl: "http://upstream.invalid", fetch: fakeFetch }),
    files,
    fetched,
  };
}

// --- the queue --------------------------------------------------------------------------------

/**
 * The parts of BuildQueue that BuildService and processJob use, in memory: results, job
 * states, what was enqueued, and switches for overload and rate limiting.
 */
export class FakeQueue {
  readonly results = new Map<string, StoredResult & { ttl: number }>();
  readonly jobs = new Map<string, JobStatus>();
  readonly enqueued: { hash: string; data: BuildJobData }[] = [];
  pending = 0;
  rateLimited = false;
  /** Runs inside status(), before the job is looked up: lets a test finish a job "between" reads. */
  beforeStatus: (() => void) | undefined;

  async getResult(hash: string): Promise<StoredResult | undefined> {
    return Promise.resolve(this.results.get(hash));
  }

  async setResult(hash: string, status: number, body: string, ttl: number): Promise<void> {
    this.results.set(hash, { status, body, ttl });
    return Promise.resolve();
  }

  async status(hash: string): Promise<JobStatus> {
    this.beforeStatus?.();
    return Promise.resolve(this.jobs.get(hash) ?? { state: "unknown" });
  }

  async hitRateLimit(): Promise<boolean> {
    return Promise.resolve(this.rateLimited);
  }

  async pendingCount(): Promise<number> {
    return Promise.resolve(this.pending);
  }

  async enqueue(hash: string, data: BuildJobData): Promise<void> {
    this.enqueued.push({ hash, data });
    this.jobs.set(hash, {
      state: "queued",
      position: this.pending + 1,
      enqueuedAt: data.enqueued_at,
      request: data.request,
    });
    return Promise.resolve();
  }

  /** An event hub that never wakes anyone: the fake queue has no event streams. */
  createEventHub(): { size: number; subscribe(): () => void; close(): Promise<void> } {
    return { size: 0, subscribe: () => () => undefined, close: () => Promise.resolve() };
  }

  /** Typed as the real queue for the code under test. */
  get asQueue(): BuildQueue {
    return this as unknown as BuildQueue;
  }
}
