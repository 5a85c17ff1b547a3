import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { publishSnapshot } from "../../fixtures/mirror/generate-mirror.js";
import { snapshotRevision } from "../../fixtures/mirror/mirror-catalog.js";
import {
  build,
  flushPrefix,
  REDIS_URL,
  request,
  startMirror,
  startTestServer,
  type Mirror,
  type TestServer,
} from "./harness.js";

// Issue #11, "Snapshots: follow a new revision at once": right after upstream publishes a new
// snapshot, owut (sends the new version_code) and the Firmware Selector (sends none, and may
// hit a result cached before the publish) both get the new revision on their first try.

let mirror: Mirror;
const servers: TestServer[] = [];
const snapshot = { version: "SNAPSHOT", target: "x86/64", profile: "generic" };
const SUMS = "/snapshots/targets/x86/64/sha256sums";

beforeAll(async () => {
  mirror = await startMirror({ writable: true });
});

afterAll(async () => {
  for (const s of servers) await s.close();
  for (const prefix of new Set(servers.map((s) => s.prefix))) await flushPrefix(prefix);
  await mirror?.close();
});

/** What owut does: read version_code from upstream's profiles.json of the target. */
async function upstreamVersionCode(): Promise<string> {
  const res = await fetch(`${mirror.url}/snapshots/targets/x86/64/profiles.json`);
  return ((await res.json()) as { version_code: string }).version_code;
}

function sumsReads(): number {
  return mirror.requests.filter((p) => p === SUMS).length;
}

describe("owut: a request with the version_code of a snapshot published a moment ago", () => {
  let server: TestServer;

  beforeAll(async () => {
    // The default imagebuilder_check_interval (1m): the worker would not look at sha256sums
    // again on its own during this test.
    server = await startTestServer(mirror);
    servers.push(server);
  });

  it("is built at once with the new ImageBuilder", async () => {
    const before = await build(server.url, { ...snapshot, packages: ["vim"] });
    expect(before.status, before.text).toBe(200);
    expect(before.body.version_code).toBe(snapshotRevision(mirror.info.snapshotRevision));

    await publishSnapshot(mirror.info, 30042);
    const versionCode = await upstreamVersionCode();
    expect(versionCode).toBe(snapshotRevision(30042));

    const after = await build(server.url, { ...snapshot, packages: ["curl"], version_code: versionCode });
    expect(after.status, after.text).toBe(200);
    expect(after.body.version_code).toBe(versionCode);
    expect((after.body.request as { version_code: string }).version_code).toBe(versionCode);
    expect((after.body.manifest as Record<string, string>)["base-files"]).toMatch(/-r30042$/);
  });

  it("a revision upstream does not offer re-reads sha256sums at once, and its failure is kept a minute, not an hour", async () => {
    const reads = sumsReads();
    const res = await build(server.url, { ...snapshot, packages: ["htop"], version_code: "r1-0000000000" });
    expect(res.status, res.text).toBe(500);
    expect(String(res.body.detail)).toMatch(
      new RegExp(
        `^Error: Received incorrect version ${snapshotRevision(30042)} \\(requested r1-0000000000\\)\\. .*try again in a minute`,
      ),
    );
    expect(sumsReads()).toBeGreaterThan(reads);
    const redis = new Redis(REDIS_URL);
    try {
      const ttl = await redis.ttl(`${server.prefix}:result:${String(res.body.request_hash)}`);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60);
    } finally {
      redis.disconnect();
    }
  });
});

describe("Firmware Selector: an identical request without version_code after a publish", () => {
  let api: TestServer;

  beforeAll(async () => {
    // The API looks at the snapshot's profiles.json before answering from the cache (here
    // every time); the worker keeps the default interval, so only the API's pin can make it
    // fetch the new ImageBuilder at once.
    api = await startTestServer(mirror, {
      role: "api",
      overrides: { imagebuilder_check_interval: 0.001 },
    });
    servers.push(api);
    servers.push(await startTestServer(mirror, { role: "worker", prefix: api.prefix, workDir: api.workDir }));
  });

  it("gets a new build of the new revision, not the image cached before the publish", async () => {
    const body = { ...snapshot, packages: ["tcpdump"], client: "ofs/4.1.0" };
    const oldRevision = mirror.info.snapshotRevision;
    const first = await build(api.url, body);
    expect(first.status, first.text).toBe(200);
    expect(first.body.version_code).toBe(snapshotRevision(oldRevision));
    const hit = await request(api.url, "POST", "/api/v1/build", body);
    expect(hit.status).toBe(200);
    expect(hit.body.request_hash).toBe(first.body.request_hash);

    const newRevision = oldRevision + 1;
    await publishSnapshot(mirror.info, newRevision);
    const after = await build(api.url, body);
    expect(after.status, after.text).toBe(200);
    expect(after.body.version_code).toBe(snapshotRevision(newRevision));
    expect(after.body.request_hash).not.toBe(first.body.request_hash);
    expect((after.body.manifest as Record<string, string>)["base-files"]).toMatch(
      new RegExp(`-r${newRevision}$`),
    );
    // The request is echoed as the client sent it.
    expect((after.body.request as { version_code: string }).version_code).toBe("");

    const again = await request(api.url, "POST", "/api/v1/build", body);
    expect(again.status).toBe(200);
    expect(again.body.request_hash).toBe(after.body.request_hash);
  });

  it("releases are unaffected: the same request is the same cache entry", async () => {
    const body = { version: "24.10.4", target: "x86/64", profile: "generic", packages: ["tcpdump"] };
    const first = await build(api.url, body);
    expect(first.status, first.text).toBe(200);
    const hit = await request(api.url, "POST", "/api/v1/build", body);
    expect(hit.status).toBe(200);
    expect(hit.body.request_hash).toBe(first.body.request_hash);
    expect(hit.text).toBe(first.text);
  });
});
