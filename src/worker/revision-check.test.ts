import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fakeJob, fakeWorkspace } from "../../test/support/pipeline-fakes.js";
import { loadConfig, type AsuConfig } from "../config/config.js";
import type { BuildJobData } from "../queue/build-job.js";
import type { BuildJobContext, BuildQueue } from "../queue/build-queue.js";
import { requestHash } from "../request/request-hash.js";
import { BuildError } from "../shared/errors.js";
import type { Stats } from "../stats/stats.js";
import { processJob, type BuildWorkerDeps } from "./build-worker.js";
import {
  checkRevision,
  ImageBuilderBehindError,
  STALE_REVISION_TTL_SECONDS,
  StaleRevisionError,
} from "./revision-check.js";

const OLD = "r30000-30b6181a89";
const NEW = "r30042-3b8f91c419";
const logs = { stdout: "", stderr: "" };
const snapshot = { version: "SNAPSHOT", target: "x86/64" };

describe("checkRevision", () => {
  it("lets a build go on when the revision is the one asked for, or none was asked for", () => {
    expect(() => checkRevision(OLD, fakeJob({ ...snapshot, version_code: OLD }), false, logs)).not.toThrow();
    expect(() => checkRevision(OLD, fakeJob(snapshot), false, logs)).not.toThrow();
  });

  it("a snapshot tree behind the version_code is refreshed once, then fails as the server's, not the user's", () => {
    const job = fakeJob({ ...snapshot, version_code: NEW });
    expect(() => checkRevision(OLD, job, false, logs)).toThrow(ImageBuilderBehindError);
    const err = catchError(() => checkRevision(OLD, job, true, logs));
    expect(err).toBeInstanceOf(StaleRevisionError);
    expect((err as StaleRevisionError).userFault).toBe(false);
    expect((err as StaleRevisionError).retryable).toBe(false);
    expect((err as StaleRevisionError).detail).toMatch(
      new RegExp(
        `^Error: Received incorrect version ${OLD} \\(requested ${NEW}\\)\\. .*try again in a minute\\.$`,
      ),
    );
  });

  it("a pinned snapshot (no version_code) accepts a newer tree, and refreshes an older one", () => {
    const pinned = (pin: string): BuildJobData => ({ ...fakeJob(snapshot), snapshot_revision: pin });
    expect(() => checkRevision(NEW, pinned(OLD), false, logs)).not.toThrow();
    expect(() => checkRevision(OLD, pinned(NEW), false, logs)).toThrow(ImageBuilderBehindError);
    const err = catchError(() => checkRevision(OLD, pinned(NEW), true, logs)) as StaleRevisionError;
    expect(err).toBeInstanceOf(StaleRevisionError);
    expect(err.detail).toBe(
      `Error: Upstream's profiles.json names snapshot ${NEW}, but the newest ImageBuilder upstream offers has ${OLD}: the snapshot is still being published. Please try again in a minute.`,
    );
  });

  it("releases keep upstream's detail and remain the client's error, without a refresh", () => {
    const err = catchError(() => checkRevision(OLD, fakeJob({ version_code: "r1-0" }), false, logs));
    expect(err).toBeInstanceOf(BuildError);
    expect(err).not.toBeInstanceOf(StaleRevisionError);
    expect((err as BuildError).userFault).toBe(true);
    expect((err as BuildError).detail).toBe(`Error: Received incorrect version ${OLD} (requested r1-0)`);
  });
});

// ---- processJob with a fake ImageBuilder cache: the refresh happens, and its failure is brief ----

let tmp: string;
let config: AsuConfig;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), "asu-revision-"));
  await mkdir(path.join(tmp, "old"));
  await mkdir(path.join(tmp, "new"));
  config = { ...loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} }), job_timeout: 30 };
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** A cache that hands out the old tree until a refresh finds `published` upstream. */
function harness(published: "old" | "new") {
  const acquires: (boolean | undefined)[] = [];
  const results: { status: number; body: Record<string, unknown>; ttl: number }[] = [];
  const deps = {
    config,
    queue: {
      setResult: async (_hash: string, status: number, body: string, ttl: number) => {
        results.push({ status, body: JSON.parse(body) as Record<string, unknown>, ttl });
      },
    } as unknown as BuildQueue,
    stats: { recordBuild: async () => undefined } as unknown as Stats,
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
    imagebuilders: {
      acquire: async (req: { refresh?: boolean }) => {
        acquires.push(req.refresh);
        return { root: path.join(tmp, req.refresh ? published : "old"), release: async () => undefined };
      },
    },
    runner: {
      createWorkspace: async (root: string) => ({ ...(await fakeWorkspace(tmp)), ibRoot: root }),
      run: async (ws: { ibRoot: string }, opts: { args: string[] }) => {
        const base = { signal: null, timedOut: false, aborted: false, truncated: false, durationMs: 1 };
        if (opts.args[1] === "info") {
          const revision = ws.ibRoot.endsWith("new") ? NEW : OLD;
          return { ...base, code: 0, stdout: `Current Revision: "${revision}"\n`, stderr: "" };
        }
        // Past the revision check: the rest of the build is not this test's business.
        return { ...base, code: 1, stdout: "", stderr: "stop here" };
      },
    },
    storeFiles: async () => undefined,
  } as unknown as BuildWorkerDeps;
  return { deps, acquires, results };
}

function context(data: BuildJobData): BuildJobContext {
  return {
    id: requestHash(data.request, data.snapshot_revision),
    data,
    attemptsMade: 2,
    maxAttempts: 3,
    setStage: async () => undefined,
  };
}

describe("processJob and a snapshot published a moment ago", () => {
  it("re-reads sha256sums at once and builds with the newer ImageBuilder", async () => {
    const h = harness("new");
    await expect(processJob(context(fakeJob({ ...snapshot, version_code: NEW })), h.deps)).rejects.toThrow();
    expect(h.acquires).toEqual([undefined, true]);
    expect(String(h.results[0]?.body.detail)).not.toMatch(/incorrect version/);
  });

  it("a pinned request (no version_code) gets the newer ImageBuilder too", async () => {
    const h = harness("new");
    await expect(
      processJob(context({ ...fakeJob(snapshot), snapshot_revision: NEW }), h.deps),
    ).rejects.toThrow();
    expect(h.acquires).toEqual([undefined, true]);
    expect(String(h.results[0]?.body.detail)).not.toMatch(/profiles\.json names snapshot/);
  });

  it("when upstream has not moved, the failure is stored for a minute, not build_failure_ttl", async () => {
    const h = harness("old");
    await expect(processJob(context(fakeJob({ ...snapshot, version_code: NEW })), h.deps)).rejects.toThrow(
      /incorrect version/,
    );
    expect(h.acquires).toEqual([undefined, true]);
    expect(h.results).toHaveLength(1);
    expect(h.results[0]?.status).toBe(500);
    expect(h.results[0]?.ttl).toBe(STALE_REVISION_TTL_SECONDS);
    expect(STALE_REVISION_TTL_SECONDS).toBeLessThan(config.build_failure_ttl);
  });

  it("a release's wrong version_code is not refreshed and is kept for build_failure_ttl", async () => {
    const h = harness("new");
    await expect(processJob(context(fakeJob({ version_code: "r1-0" })), h.deps)).rejects.toThrow(
      /incorrect version/,
    );
    expect(h.acquires).toEqual([undefined]);
    expect(h.results[0]?.ttl).toBe(config.build_failure_ttl);
  });
});

function catchError(fn: () => void): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected an error");
}
