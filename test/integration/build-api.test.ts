import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  flushPrefix,
  request,
  startMirror,
  startTestServer,
  waitForBuild,
  type Mirror,
  type TestServer,
} from "./harness.js";

// Names from docs/mirror.md.
const RELEASE = "24.10.4";
const TARGET = "ath79/generic";
const PROFILE = "tplink_archer-c7-v5";
const DEVICE = "tplink,archer-c7-v5";

const base = { version: RELEASE, target: TARGET, profile: PROFILE };

let mirror: Mirror;
let api: TestServer;

beforeAll(async () => {
  mirror = await startMirror();
  // API only: builds stay queued, so queue answers can be checked without racing a worker.
  api = await startTestServer(mirror, { role: "api", overrides: { max_pending_jobs: 20 } });
});

afterAll(async () => {
  await api?.close();
  await flushPrefix(api.prefix);
  await mirror?.close();
});

async function post(body: unknown, path = "/api/v1/build") {
  return request(api.url, "POST", path, body);
}

describe("POST /api/v1/build while queued", () => {
  it("answers 202 with the fields and headers LuCI, owut and OFS read", async () => {
    const res = await post({ ...base, packages: ["tcpdump"], client: "luci/git-24.0" });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({
      status: 202,
      detail: "queued",
      imagebuilder_status: "queued",
      queue_position: expect.any(Number),
    });
    expect(res.body.request_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(typeof res.body.enqueued_at).toBe("string");
    expect(res.body.request).toMatchObject({
      version: RELEASE,
      target: TARGET,
      profile: PROFILE,
      packages: ["tcpdump"],
    });
    expect(res.headers.get("x-imagebuilder-status")).toBe("queued");
    expect(res.headers.get("x-queue-position")).toBe(String(res.body.queue_position));
    expect(res.headers.get("access-control-allow-origin")).toBe("*");

    const poll = await request(api.url, "GET", `/api/v1/build/${String(res.body.request_hash)}`);
    expect(poll.status).toBe(202);
    expect(poll.body).toMatchObject({ status: 202, detail: "queued", request_hash: res.body.request_hash });

    const head = await request(api.url, "HEAD", `/api/v1/build/${String(res.body.request_hash)}`);
    expect(head.status).toBe(202);
    expect(head.text).toBe("");
    expect(head.headers.get("x-imagebuilder-status")).toBe("queued");
  });

  it("ignores LuCI's ?<milliseconds> query string and maps a comma profile to its id", async () => {
    const res = await post({ ...base, profile: DEVICE, packages: ["curl"] }, "/api/v1/build?1696506154265");
    expect(res.status).toBe(202);
    expect((res.body.request as Record<string, unknown>).profile).toBe(PROFILE);
  });

  it("accepts rootfs_size_mb as a string or null, as LuCI sends it", async () => {
    const withString = await post({ ...base, packages: ["htop"], rootfs_size_mb: "256" });
    expect(withString.status).toBe(202);
    expect((withString.body.request as Record<string, unknown>).rootfs_size_mb).toBe(256);
    const withNull = await post({ ...base, packages: ["htop"], rootfs_size_mb: null });
    expect(withNull.status).toBe(202);
  });

  it("gives the same hash for reordered, duplicated and +prefixed packages", async () => {
    const a = await post({ ...base, packages: ["vim", "tcpdump", "curl"] });
    const b = await post({ ...base, packages: ["+curl", "tcpdump", "vim", "curl"] });
    const c = await post({ ...base, packages: ["vim", "tcpdump"] });
    expect(a.status).toBe(202);
    expect(b.body.request_hash).toBe(a.body.request_hash);
    expect(c.body.request_hash).not.toBe(a.body.request_hash);
  });

  it("creates exactly one job for 50 concurrent identical requests", async () => {
    const body = { ...base, packages: ["luci", "wireguard-tools"] };
    const answers = await Promise.all(Array.from({ length: 50 }, () => post(body)));
    const hashes = new Set(answers.map((a) => a.body.request_hash));
    expect(answers.every((a) => a.status === 202)).toBe(true);
    expect(hashes.size).toBe(1);
    const jobs = await api.server.queue.queue.getJobs(["waiting", "active", "completed", "failed"]);
    expect(jobs.filter((j) => j.id === [...hashes][0])).toHaveLength(1);
  });
});

describe("validation", () => {
  it("answers 400 with upstream's wording for an unknown target", async () => {
    const res = await post({ ...base, target: "foo/bar" });
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({
      status: 400,
      detail:
        "Unsupported target: foo/bar. The requested target was either dropped, is still being built or is not supported by the selected version. Please check the forums or try again later.",
    });
  });

  it("answers 400 for an unknown version, profile or distro", async () => {
    for (const body of [
      { ...base, version: "9.99.1" },
      { ...base, profile: "no_such_device" },
      { ...base, distro: "debian" },
    ]) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(typeof res.body.detail).toBe("string");
      expect(res.body.status).toBe(400);
    }
  });

  it("answers 400 for defaults when the server does not allow them, and for foreign repositories", async () => {
    const defaults = await post({ ...base, defaults: "echo hi" });
    expect(defaults.status).toBe(400);
    expect(String(defaults.body.detail)).toMatch(/defaults/i);
    const empty = await post({ ...base, defaults: "", packages: ["vim"] });
    expect(empty.status).toBe(202);
    for (const url of ["https://evil.example/feed", "https://downloads.openwrt.org.evil.com/x"]) {
      const repo = await post({ ...base, repositories: { custom: url } });
      expect(repo.status).toBe(400);
    }
  });

  it("answers 422 with a string detail for schema violations", async () => {
    for (const body of [
      { ...base, rootfs_size_mb: 99999 },
      { ...base, rootfs_size_mb: "lots" },
      { ...base, filesystem: "ntfs" },
      { ...base, target: "ath79" },
      { ...base, version: undefined },
    ]) {
      const res = await post(body);
      expect(res.status).toBe(422);
      expect(res.body.status).toBe(422);
      expect(typeof res.body.detail).toBe("string");
    }
  });

  it("rejects injection attempts in every field with 4xx before anything is queued", async () => {
    const before = await api.server.queue.queue.getJobCounts("waiting");
    const attacks = ["a\nb", "a b", "$(reboot)", "a;rm -rf /", "../../etc/passwd", "`id`", "a|b", "x&&y"];
    for (const bad of attacks) {
      for (const body of [
        { ...base, version: bad },
        { ...base, target: `ath79/${bad}` },
        { ...base, profile: bad },
        { ...base, packages: [bad] },
        { ...base, packages: ["vim"], packages_versions: { vim: bad } },
        { ...base, version_code: bad },
        { ...base, filesystem: bad },
        { ...base, repositories: { [bad]: "https://downloads.openwrt.org/x" } },
        { ...base, repositories: { feed: `https://x/${bad}` } },
      ]) {
        const res = await post(body);
        expect(res.status, `${JSON.stringify(body)}`).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        expect(typeof res.body.detail).toBe("string");
      }
    }
    const after = await api.server.queue.queue.getJobCounts("waiting");
    expect(after.waiting).toBe(before.waiting);
  });

  it("answers 422 for unknown packages, naming each with a suggestion", async () => {
    const res = await post({ ...base, packages: ["luci-app-wireguard", "tcpdump", "no-such-package-xyz"] });
    expect(res.status).toBe(422);
    expect(String(res.body.detail)).toContain("luci-app-wireguard");
    expect(String(res.body.detail)).toContain("luci-proto-wireguard");
    expect(String(res.body.detail)).toContain("no-such-package-xyz");
    expect(res.headers.get("x-unknown-package")).toContain("luci-app-wireguard");
  });

  it("accepts LuCI's kernel and libc pseudo-packages", async () => {
    const res = await post({
      ...base,
      packages: ["kernel", "libc", "base-files", "busybox", "tcpdump", "vim"],
    });
    expect(res.status).toBe(202);
  });
});

describe("other answers", () => {
  it("answers 404 with JSON for an unknown hash", async () => {
    const res = await request(api.url, "GET", `/api/v1/build/${"0".repeat(64)}`);
    expect(res.status).toBe(404);
    expect(res.body).toMatchObject({ status: 404, title: "Not Found" });
    expect(typeof res.body.detail).toBe("string");
  });

  it("answers CORS preflights", async () => {
    const res = await request(api.url, "OPTIONS", "/api/v1/build", undefined, {
      origin: "https://firmware-selector.openwrt.org",
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type",
    });
    expect(res.status).toBeGreaterThanOrEqual(200);
    expect(res.status).toBeLessThan(300);
    expect(res.headers.get("access-control-allow-origin")).toBe("*");
    expect(res.headers.get("access-control-allow-headers")).toContain("content-type");
  });

  it("keeps the seed API's /api/build paths as aliases", async () => {
    const body = { ...base, packages: ["tcpdump", "htop"] };
    const v1 = await post(body);
    const seed = await post(body, "/api/build");
    expect(seed.status).toBe(202);
    expect(seed.body.request_hash).toBe(v1.body.request_hash);
    const poll = await request(api.url, "GET", `/api/build/${String(v1.body.request_hash)}`);
    expect(poll.status).toBe(202);
    expect(poll.body.request_hash).toBe(v1.body.request_hash);
  });
});

describe("overload and cache", () => {
  it("answers 529 without enqueueing when max_pending_jobs are waiting", async () => {
    const small = await startTestServer(mirror, { role: "api", overrides: { max_pending_jobs: 2 } });
    try {
      const answers = [];
      for (const pkg of ["vim", "htop", "curl"]) {
        answers.push(await request(small.url, "POST", "/api/v1/build", { ...base, packages: [pkg] }));
      }
      expect(answers.map((a) => a.status)).toEqual([202, 202, 529]);
      expect(answers[2]?.body).toMatchObject({ status: 529, title: "Server overloaded" });
      expect(typeof answers[2]?.body.detail).toBe("string");
      expect(await small.server.queue.pendingCount()).toBe(2);
      // an already-queued request still gets its queue answer
      const again = await request(small.url, "POST", "/api/v1/build", { ...base, packages: ["vim"] });
      expect(again.status).toBe(202);
    } finally {
      await small.close();
      await flushPrefix(small.prefix);
    }
  });

  it("limits new builds per client address, but not polls", async () => {
    const limited = await startTestServer(mirror, { role: "api", overrides: { build_rate_limit: 2 } });
    try {
      const statuses = [];
      let hash = "";
      for (const [i, pkg] of ["vim", "htop", "curl"].entries()) {
        // a spoofed X-Forwarded-For must not buy a fresh limit (no proxy is configured)
        const res = await request(
          limited.url,
          "POST",
          "/api/v1/build",
          { ...base, packages: [pkg] },
          { "x-forwarded-for": `203.0.113.${i}` },
        );
        statuses.push(res.status);
        hash ||= String(res.body.request_hash);
      }
      expect(statuses).toEqual([202, 202, 429]);
      const poll = await request(limited.url, "GET", `/api/v1/build/${hash}`);
      expect(poll.status).toBe(202);
      const again = await request(limited.url, "POST", "/api/v1/build", { ...base, packages: ["vim"] });
      expect(again.status).toBe(202);
    } finally {
      await limited.close();
      await flushPrefix(limited.prefix);
    }
  });

  it("answers a cache hit from Redis without touching the upstream", async () => {
    const body = { ...base, packages: ["tcpdump"] };
    const first = await post(body);
    const hash = String(first.body.request_hash);
    // a real worker on the same Redis prefix builds it
    const worker = await startTestServer(mirror, { role: "worker", prefix: api.prefix });
    try {
      const done = await waitForBuild(api.url, hash);
      expect(done.status).toBe(200);
    } finally {
      await worker.close();
    }
    const before = mirror.requests.length;
    const hit = await post(body);
    expect(hit.status).toBe(200);
    expect(hit.body).toMatchObject({
      status: 200,
      detail: "done",
      imagebuilder_status: "done",
      request_hash: hash,
    });
    expect(hit.headers.get("x-imagebuilder-status")).toBe("done");
    expect(mirror.requests.length).toBe(before);
  });
});
