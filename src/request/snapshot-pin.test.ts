import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  sampleUpstreamTree,
  startFixtureUpstream,
  type FixtureUpstream,
} from "../../test/support/fixture-upstream.js";
import { loadConfig } from "../config/config.js";
import { Catalog } from "../upstream/catalog.js";
import { UpstreamClient } from "../upstream/upstream-client.js";
import type { BuildRequestBody } from "./build-request-schema.js";
import { normalizeRequest } from "./normalize-request.js";
import { requestHash } from "./request-hash.js";
import { snapshotPin } from "./snapshot-pin.js";

let upstream: FixtureUpstream;
let clock: number;
const PROFILES = "snapshots/targets/x86/64/profiles.json";

function deps() {
  const config = loadConfig({
    cwd: mkdtempSync(path.join(tmpdir(), "asu-pin-")),
    env: {},
    overrides: { upstream_url: upstream.url, imagebuilder_check_interval: "1m" },
  });
  const client = new UpstreamClient({ baseUrl: config.upstream_url, now: () => clock });
  return {
    config,
    upstream: client,
    catalog: new Catalog(config, client),
  };
}

const snapshot: BuildRequestBody = { version: "SNAPSHOT", target: "x86/64", profile: "generic" };

/** A new snapshot: profiles.json names another revision. */
function publish(revision: string): void {
  const profiles = JSON.parse(upstream.files.get(PROFILES) as string) as Record<string, unknown>;
  upstream.set(PROFILES, { ...profiles, version_code: revision });
}

beforeEach(async () => {
  clock = 1_000_000;
  upstream = await startFixtureUpstream(sampleUpstreamTree());
});

afterEach(async () => {
  await upstream.close();
});

describe("snapshotPin", () => {
  it("pins a snapshot request without version_code to upstream's current revision", async () => {
    expect(await snapshotPin(normalizeRequest(snapshot), deps())).toBe("r30000-0123456789");
  });

  it("leaves releases, requests with a version_code and unlisted targets alone, without asking upstream for them", async () => {
    const d = deps();
    expect(await snapshotPin(normalizeRequest({ ...snapshot, version: "24.10.4" }), d)).toBeUndefined();
    expect(await snapshotPin(normalizeRequest({ ...snapshot, version_code: "r1-0" }), d)).toBeUndefined();
    expect(await snapshotPin(normalizeRequest({ ...snapshot, target: "x86/65" }), d)).toBeUndefined();
    expect(upstream.requests.map((r) => r.path)).toEqual(["snapshots/.targets.json"]);
  });

  it("answers from memory within imagebuilder_check_interval, and sees a new snapshot after it", async () => {
    const d = deps();
    const request = normalizeRequest(snapshot);
    expect(await snapshotPin(request, d)).toBe("r30000-0123456789");
    publish("r30042-abcdef0123");
    clock += 59_000;
    expect(await snapshotPin(request, d)).toBe("r30000-0123456789");
    expect(upstream.count(PROFILES)).toBe(1);
    clock += 1_000;
    expect(await snapshotPin(request, d)).toBe("r30042-abcdef0123");
    expect(upstream.count(PROFILES)).toBe(2);
  });

  it("does not keep a request waiting on a hung upstream: it is then hashed unpinned", async () => {
    const d = deps();
    const request = normalizeRequest(snapshot);
    expect(await snapshotPin(request, d)).toBe("r30000-0123456789");
    upstream.fail(PROFILES, "hang");
    clock += 60_000;
    expect(await snapshotPin(request, { ...d, pinWaitMs: 50 })).toBeUndefined();
  });

  it("gives each revision its own cache key, apart from the unpinned request", () => {
    const request = normalizeRequest(snapshot);
    const hashes = new Set([
      requestHash(request),
      requestHash(request, "r30000-0123456789"),
      requestHash(request, "r30042-abcdef0123"),
      requestHash(normalizeRequest({ ...snapshot, version_code: "r30042-abcdef0123" })),
    ]);
    expect(hashes.size).toBe(4);
    expect(requestHash(request, undefined)).toBe(requestHash(request));
  });
});
