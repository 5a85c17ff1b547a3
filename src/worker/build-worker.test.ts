import { requestHash } from "../request/request-hash.js";
import {
  FAKE_IMAGE,
  FAKE_PROFILE,
  FakeImageBuilders,
  FakeQueue,
  FakeRunner,
  FakeStore,
  fakeJob,
  fakeWorkspace,
} from "../../test/support/pipeline-fakes.js";
import {
  ImageBuilderUnavailableError,
  ImageBuilderVerificationError,
} from "../imagebuilder/imagebuilder-errors.js";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { loadConfig, type AsuConfig } from "../config/config.js";
import { UnrecoverableError, type BuildQueue, type BuildJobContext } from "../queue/build-queue.js";
import type { BuildJobData } from "../queue/build-job.js";
import type { Stats } from "../stats/stats.js";
import type { BuildRunner } from "../imagebuilder/runners/index.js";
import { BackgroundTasks } from "./background-tasks.js";
import { processJob, SERVER_FAULT_TTL_SECONDS, type BuildWorkerDeps } from "./build-worker.js";

/**
 * How the worker stores and logs failures: a server fault is never cached for an hour as the
 * user's, a stuck job frees the worker at job_timeout, and neither results nor log lines carry
 * unbounded build output (issue #8 and issue #9 findings 4 and 8).
 */

let tmp: string;
let config: AsuConfig;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "asu-worker-"));
  await mkdir(path.join(tmp, "ib"));
  config = { ...loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} }), job_timeout: 5 };
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

interface Harness {
  deps: BuildWorkerDeps;
  results: { hash: string; status: number; body: Record<string, unknown>; ttl: number }[];
  logs: { level: string; obj: object; msg: string }[];
}

function harness(
  manifest: { code: number; stdout: string; stderr: string },
  over: Partial<BuildWorkerDeps> = {},
  conf: AsuConfig = config,
): Harness {
  const results: Harness["results"] = [];
  const logs: Harness["logs"] = [];
  const deps = {
    config: conf,
    queue: {
      setResult: async (hash: string, status: number, body: string, ttl: number) => {
        results.push({ hash, status, body: JSON.parse(body) as Record<string, unknown>, ttl });
      },
    } as unknown as BuildQueue,
    stats: { recordBuild: async () => undefined } as unknown as Stats,
    logger: {
      info: (obj: object, msg: string) => logs.push({ level: "info", obj, msg }),
      warn: (obj: object, msg: string) => logs.push({ level: "warn", obj, msg }),
      error: (obj: object, msg: string) => logs.push({ level: "error", obj, msg }),
    },
    imagebuilders: {
      acquire: async () => ({
        root: path.join(tmp, "ib"),
        release: async () => undefined,
      }),
    },
    runner: {
      createWorkspace: () => fakeWorkspace(tmp),
      run: async (_ws: unknown, opts: { args: string[] }) => {
        const base = { signal: null, timedOut: false, aborted: false, truncated: false, durationMs: 1 };
        if (opts.args[1] === "info") {
          return {
            ...base,
            code: 0,
            stdout: 'Current Revision: "r1-abc"\nDefault Packages: base-files\n',
            stderr: "",
          };
        }
        return { ...base, ...manifest };
      },
    },
    storeFiles: async () => undefined,
    ...over,
  } as unknown as BuildWorkerDeps;
  return { deps, results, logs };
}

function jobContext(attemptsMade = 0, maxAttempts = 3): BuildJobContext & { stages: string[] } {
  const stages: string[] = [];
  const data: BuildJobData = fakeJob({ packages: ["base-files"] });

  return {
    // The worker refuses jobs whose id is not the hash of their request (job-check.ts).
    id: requestHash(data.request),
    data,
    attemptsMade,
    maxAttempts,
    stages,
    setStage: async (stage) => {
      stages.push(stage);
    },
  };
}

// opkg when the feed's Packages.sig does not verify: every package "cannot be installed".
const OPKG_BAD_SIGNATURE = [
  "Downloading file:packages/Packages.",
  "Signature check failed.",
  "Remove wrong Signature file.",
  "Collected errors:",
  " * opkg_install_cmd: Cannot install package base-files.",
  " * opkg_install_cmd: Cannot install package busybox.",
].join("\n");

describe("processJob", () => {
  it("does not cache a bad feed signature as the user's impossible selection; retries it", async () => {
    const h = harness({ code: 1, stdout: "", stderr: OPKG_BAD_SIGNATURE });
    // Not the last attempt: BullMQ retries, nothing is stored yet.
    await expect(processJob(jobContext(0, 3), h.deps)).rejects.toThrow(/signature/);
    expect(h.results).toEqual([]);
    // The last attempt stores the failure, briefly, with a detail that blames the server.
    await expect(processJob(jobContext(2, 3), h.deps)).rejects.toThrow(/signature/);
    expect(h.results).toHaveLength(1);
    const [result] = h.results;
    expect(result?.status).toBe(500);
    expect(String(result?.body.detail)).not.toMatch(/Impossible package selection|missing/);
    expect(String(result?.body.detail)).toMatch(
      /^Error: The server could not verify the signature of a package feed/,
    );
    expect(result?.ttl).toBeLessThanOrEqual(300);
    expect(result?.ttl).toBeLessThan(config.build_failure_ttl);
  });

  it("a full disk fails the build with a clear detail, tells the operator, and is not the user's fault", async () => {
    // What node:fs throws when the cache or the store runs out of space mid-write.
    const enospc = Object.assign(new Error("ENOSPC: no space left on device, write"), {
      code: "ENOSPC",
      syscall: "write",
      path: path.join(tmp, "cache", "imagebuilders", "x.tar.zst"),
    });
    const h = harness(
      { code: 0, stdout: "", stderr: "" },
      {
        imagebuilders: {
          acquire: async () => {
            throw enospc;
          },
        },
      },
    );
    await expect(processJob(jobContext(2, 3), h.deps)).rejects.toThrow(/ENOSPC/);
    const [result] = h.results;
    expect(result?.status).toBe(500);
    expect(result?.body.detail).toBe(
      "Error: The server ran out of disk space for this build. Please try again later; the server operator has been told.",
    );
    // A server fault: kept briefly, never for build_failure_ttl.
    expect(result?.ttl).toBeLessThanOrEqual(300);
    // The operator's log line names the problem and the place, at error level.
    const line = h.logs.find((l) => l.level === "error" && /disk full/.test(l.msg));
    expect(line?.obj).toMatchObject({ path: enospc.path });
    // Host paths stay out of what the user sees.
    expect(JSON.stringify(result?.body)).not.toContain(tmp);
  });

  it("caches a real impossible selection for build_failure_ttl", async () => {
    const h = harness({
      code: 1,
      stdout: "",
      stderr: "Collected errors:\n * opkg_install_cmd: Cannot install package no-such-pkg.\n",
    });
    await expect(processJob(jobContext(0, 3), h.deps)).rejects.toThrow();
    expect(h.results).toHaveLength(1);
    expect(h.results[0]?.body.detail).toBe("Error: Impossible package selection: missing (no-such-pkg)");
    expect(h.results[0]?.ttl).toBe(config.build_failure_ttl);
  });

  // Deterministic (issue #15, item 7): fake timers fire job_timeout, no wall-clock bound.
  it("frees the worker at job_timeout when a job is stuck, with a clear detail", async () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      let acquiring!: () => void;
      const acquireStarted = new Promise<void>((resolve) => (acquiring = resolve));
      const h = harness(
        { code: 0, stdout: "", stderr: "" },
        {
          imagebuilders: {
            acquire: () => {
              acquiring();
              return new Promise(() => undefined);
            },
          },
        },
        { ...config, job_timeout: 1 },
      );
      const job = jobContext(0, 3);
      const outcome = processJob(job, h.deps).then(
        () => undefined,
        (e: unknown) => e,
      );
      await acquireStarted;
      expect(h.results).toEqual([]);
      await vi.advanceTimersByTimeAsync(1000);
      expect(String(await outcome)).toMatch(/timed out/);
      expect(h.results).toHaveLength(1);
      expect(h.results[0]?.body.detail).toBe("Error: Build timed out after 1 s and was stopped.");
      expect(h.results[0]?.ttl).toBeLessThanOrEqual(300);
      expect(job.stages.at(-1)).toBe("failed");
    } finally {
      vi.useRealTimers();
    }
  });

  it("keeps results and log lines small for a request with 1,000 bogus packages", async () => {
    const bogus = Array.from({ length: 1000 }, (_, i) => `bogus-package-name-number-${i}`);
    const stderr = [
      "Collected errors:",
      ...bogus.map((p) => ` * opkg_install_cmd: Cannot install package ${p}.`),
      ...bogus.map((p) => ` * satisfy_dependencies_for: Cannot satisfy the following dependencies for ${p}:`),
    ].join("\n");
    const stdout = `${"Installing lots of things, verbosely.\n".repeat(20_000)}`;
    const h = harness({ code: 1, stdout, stderr });
    await expect(processJob(jobContext(0, 3), h.deps)).rejects.toThrow();
    const body = h.results[0]?.body ?? {};
    expect(Buffer.byteLength(String(body.stdout))).toBeLessThanOrEqual(64 * 1024 + 100);
    expect(Buffer.byteLength(String(body.stderr))).toBeLessThanOrEqual(64 * 1024 + 100);
    expect(String(body.stdout).split("\n")[0]).toMatch(
      /^\[asu: output cut: the first \d+ bytes of \d+ were dropped\]$/,
    );
    expect(JSON.stringify(body).length).toBeLessThan(200 * 1024);
    for (const line of h.logs) {
      const text = JSON.stringify(line.obj);
      expect(text.length).toBeLessThan(4096);
      expect(text).not.toContain("Installing lots of things");
      expect(text).not.toContain("Collected errors");
    }
  });
});

/** processJob over the shared fakes (test/support/pipeline-fakes.ts): one test per outcome. */
describe("processJob outcomes", () => {
  function worker(script: ConstructorParameters<typeof FakeRunner>[1] = {}, ibFail?: unknown) {
    const queue = new FakeQueue();
    const runner = new FakeRunner(tmp, script);
    const store = new FakeStore();
    const recorded: { ok: boolean; detail?: string }[] = [];
    const deps = {
      config,
      queue: queue.asQueue,
      stats: {
        recordBuild: async (b: { ok: boolean; detail?: string }) => {
          recorded.push(b);
        },
      } as unknown as Stats,
      logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
      imagebuilders: new FakeImageBuilders(
        path.join(tmp, "ib"),
        ibFail === undefined ? {} : { fail: ibFail },
      ),
      runner,
      storeFiles: store.storeFiles,
    } satisfies BuildWorkerDeps;
    return { queue, runner, store, recorded, deps };
  }

  function job(attemptsMade = 0): BuildJobContext & { stages: string[] } {
    const stages: string[] = [];
    const data = fakeJob({ profile: FAKE_PROFILE });
    return {
      id: requestHash(data.request),
      data,
      attemptsMade,
      maxAttempts: 3,
      stages,
      setStage: async (stage) => {
        stages.push(stage);
      },
    };
  }

  it("success: stores the result for the job's result_ttl and records the build", async () => {
    const w = worker();
    const j = job();
    await processJob(j, w.deps);
    const result = w.queue.results.get(j.id);
    expect(result?.status).toBe(200);
    expect(result?.ttl).toBe(j.data.result_ttl);
    expect(JSON.parse(result?.body ?? "{}")).toMatchObject({ status: 200, imagebuilder_status: "done" });
    expect(j.stages.at(-1)).toBe("done");
    expect(w.store.builds.get(j.id)?.has(FAKE_IMAGE)).toBe(true);
    expect(w.recorded).toEqual([expect.objectContaining({ ok: true })]);
  });

  it("user fault: stored for build_failure_ttl and never retried", async () => {
    const w = worker({
      manifest: { code: 1, stderr: " * opkg_install_cmd: Cannot install package nope.\n" },
    });
    const j = job();
    await expect(processJob(j, w.deps)).rejects.toBeInstanceOf(UnrecoverableError);
    expect(w.queue.results.get(j.id)).toMatchObject({ status: 500, ttl: config.build_failure_ttl });
    expect(j.stages.at(-1)).toBe("failed");
    expect(w.recorded).toEqual([expect.objectContaining({ ok: false })]);
  });

  it("retryable server fault: retried with nothing stored, then stored briefly on the last attempt", async () => {
    const w = worker({}, new ImageBuilderUnavailableError("mirror down"));
    const first = job(0);
    await expect(processJob(first, w.deps)).rejects.toBeInstanceOf(ImageBuilderUnavailableError);
    expect(w.queue.results.size).toBe(0);
    const last = job(2);
    await expect(processJob(last, w.deps)).rejects.toBeInstanceOf(ImageBuilderUnavailableError);
    const result = w.queue.results.get(last.id);
    expect(result?.ttl).toBe(SERVER_FAULT_TTL_SECONDS);
    expect(JSON.parse(result?.body ?? "{}").detail).toBe(
      "Error: Could not prepare the ImageBuilder: mirror down. Please try again later or tell the server operator.",
    );
  });

  it("server fault that retrying cannot fix: stored briefly and not retried", async () => {
    const w = worker({}, new ImageBuilderVerificationError("bad signature"));
    const j = job(0);
    await expect(processJob(j, w.deps)).rejects.toBeInstanceOf(UnrecoverableError);
    expect(w.queue.results.get(j.id)?.ttl).toBe(SERVER_FAULT_TTL_SECONDS);
  });

  it("refuses a job whose id is not its request's hash, writing no result", async () => {
    const w = worker();
    const j = { ...job(), id: "c".repeat(64) };
    await expect(processJob(j, w.deps)).rejects.toBeInstanceOf(UnrecoverableError);
    expect(w.queue.results.size).toBe(0);
    expect(w.runner.calls).toEqual([]);
  });
});

/**
 * A finished build's workspace goes after its result is stored (issue #13): the client does not
 * wait for it, a failure to remove it does not fail the build, and shutdown can wait for it.
 */
describe("processJob: the workspace goes after the result", () => {
  function worker(dispose: (remove: () => Promise<void>) => Promise<void>) {
    const events: string[] = [];
    const queue = new FakeQueue();
    const setResult = queue.setResult.bind(queue);
    queue.setResult = async (hash, status, body, ttl) => {
      events.push(`result ${status}`);
      await setResult(hash, status, body, ttl);
    };
    const fake = new FakeRunner(tmp);
    const runner: BuildRunner = {
      kind: "fake",
      run: fake.run,
      createWorkspace: async () => {
        const ws = await fake.createWorkspace();
        return {
          ...ws,
          dispose: async () => {
            events.push("dispose");
            await dispose(() => ws.dispose());
            events.push("disposed");
          },
        };
      },
    };
    const imagebuilders = new FakeImageBuilders(path.join(tmp, "ib"));
    const release = imagebuilders.acquire;
    const counted = {
      acquire: async () => {
        const lease = await release();
        return {
          root: lease.root,
          release: async () => {
            events.push("released");
            await lease.release();
          },
        };
      },
    };
    const warnings: string[] = [];
    const deps = {
      config,
      queue: queue.asQueue,
      stats: { recordBuild: async () => undefined } as unknown as Stats,
      logger: {
        info: () => undefined,
        // pino's warn(fields, msg) or warn(msg): keep the message
        warn: (...args: unknown[]) => warnings.push(String(args.length > 1 ? args[1] : args[0])),
        error: () => undefined,
      },
      imagebuilders: counted,
      runner,
      storeFiles: new FakeStore().storeFiles,
    } satisfies BuildWorkerDeps;
    return { deps, events, queue, fake, warnings };
  }

  function job(): BuildJobContext {
    const data = fakeJob({ profile: FAKE_PROFILE });
    return {
      id: requestHash(data.request),
      data,
      attemptsMade: 0,
      maxAttempts: 3,
      setStage: async () => undefined,
    };
  }

  it("stores the result first, then removes the workspace and gives the ImageBuilder back", async () => {
    const w = worker((remove) => remove());
    await processJob(job(), w.deps);
    expect(w.events).toEqual(["result 200", "dispose", "disposed", "released"]);
    expect(w.fake.workspaces.map((x) => x.disposed)).toEqual([true]);
  });

  it("with background tasks, the job ends before the workspace is gone and idle() waits for it", async () => {
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const w = worker(async (remove) => {
      await gate;
      await remove();
    });
    const background = new BackgroundTasks();
    const j = job();
    await processJob(j, { ...w.deps, background });
    expect(w.queue.results.get(j.id)?.status).toBe(200);
    expect(w.events).toEqual(["result 200", "dispose"]);
    expect(background.size).toBe(1);
    expect(await background.idle(0)).toBe(false);
    const idle = background.idle(10_000);
    open();
    expect(await idle).toBe(true);
    expect(w.events).toEqual(["result 200", "dispose", "disposed", "released"]);
    expect(w.fake.workspaces.map((x) => x.disposed)).toEqual([true]);
  });

  it("a workspace that cannot be removed does not fail the build; the ImageBuilder is given back", async () => {
    const w = worker(async () => {
      throw Object.assign(new Error("EBUSY: resource busy"), { code: "EBUSY" });
    });
    const background = new BackgroundTasks();
    const j = job();
    await processJob(j, { ...w.deps, background });
    expect(await background.idle(10_000)).toBe(true);
    expect(w.queue.results.get(j.id)?.status).toBe(200);
    expect(w.events).toEqual(["result 200", "dispose", "released"]);
    expect(w.warnings).toEqual(["could not remove a finished build's workspace"]);
  });

  it("a failed build removes its workspace before the failure is stored", async () => {
    const w = worker((remove) => remove());
    const manifestFails = new FakeRunner(tmp, {
      manifest: { code: 1, stderr: " * opkg_install_cmd: Cannot install package nope.\n" },
    });
    const j = job();
    await expect(
      processJob(j, { ...w.deps, runner: { ...w.deps.runner, run: manifestFails.run } }),
    ).rejects.toThrow();
    expect(w.events).toEqual(["dispose", "disposed", "released", "result 500"]);
  });
});
