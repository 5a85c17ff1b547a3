import { describe, expect, it } from "vitest";
import { loadConfig } from "../config/config.js";
import { normalizeRequest } from "../request/normalize-request.js";
import { requestHash } from "../request/request-hash.js";
import { processJob, type BuildWorkerDeps } from "./build-worker.js";
import { checkJob } from "./job-check.js";

const config = loadConfig({ cwd: "/nonexistent-dir-for-defaults", env: {} });
const request = normalizeRequest({
  version: "24.10.4",
  target: "ath79/generic",
  profile: "tplink,archer-c7-v5",
  packages: ["luci"],
});
const hash = requestHash(request);
const job = { request, profile: "tplink_archer-c7-v5", enqueued_at: 1_700_000_000_000, result_ttl: 86400 };

describe("checkJob: a worker re-checks what it takes from Redis", () => {
  it("accepts a job the API queued", () => {
    expect(checkJob(hash, job, config)).toBeUndefined();
  });

  it("refuses a job whose id is not the hash of its request (a forged or poisoned result)", () => {
    const other = requestHash(normalizeRequest({ version: "24.10.4", target: "x86/64", profile: "generic" }));
    expect(checkJob(other, job, config)).toBe("the job id is not the hash of its request");
    expect(checkJob("../../etc", job, config)).toBe("the job id is not a request hash");
  });

  it("refuses requests the API would refuse: bad patterns, defaults or repositories this server does not allow", () => {
    const evil = { ...request, packages: ["luci; rm -rf /"] };
    expect(checkJob(requestHash(evil), { ...job, request: evil }, config)).toBe(
      "the job's request does not match the request schema",
    );
    const withDefaults = { ...request, defaults: "echo hi" };
    expect(checkJob(requestHash(withDefaults), { ...job, request: withDefaults }, config)).toBe(
      "the job carries defaults, which this server refuses",
    );
    const withRepo = { ...request, repositories: { evil: "http://10.0.0.1/feed" } };
    expect(checkJob(requestHash(withRepo), { ...job, request: withRepo }, config)).toBe(
      "the repository http://10.0.0.1/feed is not allowed",
    );
    expect(checkJob(hash, { ...job, profile: "$(id)" }, config)).toBe(
      "the job's profile is not a profile name",
    );
    expect(checkJob(hash, null, config)).toBe("the job has no data");
  });

  it("accepts a snapshot job pinned by the API only under the hash that includes the pin", () => {
    const snap = normalizeRequest({ version: "SNAPSHOT", target: "x86/64", profile: "generic" });
    const pin = "r30042-3b8f91c419";
    const pinned = { ...job, request: snap, profile: "generic", snapshot_revision: pin };
    expect(checkJob(requestHash(snap, pin), pinned, config)).toBeUndefined();
    // The pin decides which image the result key holds: it cannot be swapped under an id.
    expect(checkJob(requestHash(snap), pinned, config)).toBe("the job id is not the hash of its request");
    expect(checkJob(requestHash(snap, "r1-0"), pinned, config)).toBe(
      "the job id is not the hash of its request",
    );
    const withCode = { ...snap, version_code: pin };
    expect(checkJob(requestHash(withCode, pin), { ...pinned, request: withCode }, config)).toBe(
      "the job's snapshot revision is not one the API could have pinned",
    );
    expect(
      checkJob(requestHash(snap, "r1 $(id)"), { ...pinned, snapshot_revision: "r1 $(id)" }, config),
    ).toBe("the job's snapshot revision is not one the API could have pinned");
  });

  it("processJob builds nothing and writes no result for a refused job", async () => {
    const calls: string[] = [];
    const record = (name: string) => async () => {
      calls.push(name);
    };
    const deps = {
      config,
      queue: { setResult: record("setResult") },
      stats: { recordBuild: record("recordBuild") },
      logger: { info: () => undefined, warn: () => undefined, error: () => calls.push("logged") },
      imagebuilders: { acquire: record("acquire") },
      runner: {},
      storeFiles: record("storeFiles"),
    } as unknown as BuildWorkerDeps;
    const forged = {
      id: "f".repeat(64),
      data: job,
      attemptsMade: 0,
      maxAttempts: 3,
      setStage: record("setStage"),
    };
    await expect(processJob(forged, deps)).rejects.toThrow(
      "refused job: the job id is not the hash of its request",
    );
    expect(calls).toEqual(["logged"]);
  });
});
