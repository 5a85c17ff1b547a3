import { createServer } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { UpstreamError, ValidationError } from "../shared/errors.js";
import {
  apkIndex,
  opkgPackages,
  sampleUpstreamTree,
  startFixtureUpstream,
  type FixtureUpstream,
} from "../../test/support/fixture-upstream.js";
import { DEFAULT_FEEDS, UpstreamClient, type UpstreamClientOptions } from "./upstream-client.js";

let upstream: FixtureUpstream;
let clock: number;

function client(opts: Partial<UpstreamClientOptions> = {}): UpstreamClient {
  return new UpstreamClient({ baseUrl: upstream.url, now: () => clock, ...opts });
}

async function rejection(promise: Promise<unknown>): Promise<UpstreamError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UpstreamError);
  return err as UpstreamError;
}

beforeEach(async () => {
  clock = 1_000_000;
  upstream = await startFixtureUpstream(sampleUpstreamTree());
});

afterEach(async () => {
  await upstream.close();
});

describe("UpstreamClient documents", () => {
  it("reads a .versions.json whose upcoming_version is null, as downloads.openwrt.org publishes it", async () => {
    await upstream.close();
    upstream = await startFixtureUpstream({
      ...sampleUpstreamTree(),
      ".versions.json": {
        stable_version: "24.10.4",
        oldstable_version: null,
        upcoming_version: null,
        versions_list: ["24.10.4"],
      },
    });
    const versions = await client().getVersions();
    expect(versions.stable_version).toBe("24.10.4");
    expect(versions.upcoming_version).toBeNull();
  });
});

describe("UpstreamClient caching", () => {
  it("serves a fresh document from memory without asking again", async () => {
    const c = client();
    const first = await c.getVersions();
    const second = await c.getVersions();
    expect(first.stable_version).toBe("24.10.4");
    expect(second).toBe(first);
    expect(upstream.count(".versions.json")).toBe(1);
  });

  it("revalidates with If-None-Match after the TTL and keeps the body on 304", async () => {
    const c = client({ ttlMs: 60_000 });
    const first = await c.getVersions();
    clock += 60_000;
    const second = await c.getVersions();
    expect(second).toBe(first);
    expect(
      upstream.requests.filter((r) => r.path === ".versions.json").map((r) => [r.status, r.conditional]),
    ).toEqual([
      [200, false],
      [304, true],
    ]);
  });

  it("revalidates with If-Modified-Since when the server sends no ETag", async () => {
    upstream.etags = false;
    const c = client({ ttlMs: 1000 });
    await c.getVersions();
    clock += 1000;
    await c.getVersions();
    expect(upstream.requests.map((r) => r.status)).toEqual([200, 304]);
    expect(upstream.requests[1]?.conditional).toBe(true);
  });

  it("picks up a changed document after the TTL", async () => {
    const c = client({ ttlMs: 1000 });
    await c.getVersions();
    upstream.set(".versions.json", { stable_version: "24.10.5", versions_list: ["24.10.5"] });
    expect((await c.getVersions()).stable_version).toBe("24.10.4");
    clock += 1000;
    expect((await c.getVersions()).stable_version).toBe("24.10.5");
  });

  it("shares one request between concurrent identical fetches", async () => {
    upstream.delayMs = 50;
    const c = client();
    const results = await Promise.all(Array.from({ length: 10 }, () => c.getTargets("releases/23.05.4")));
    expect(new Set(results).size).toBe(1);
    expect(upstream.count("releases/23.05.4/.targets.json")).toBe(1);
  });

  it("caches a 404 too", async () => {
    const c = client();
    expect(await c.getTargets("releases/99.99.0")).toBeUndefined();
    expect(await c.getTargets("releases/99.99.0")).toBeUndefined();
    expect(upstream.count("releases/99.99.0/.targets.json")).toBe(1);
  });

  it("maxAgeMs revalidates a copy younger than the TTL; after a failure it waits reloadIntervalMs", async () => {
    const c = client({ ttlMs: 5 * 60_000, reloadIntervalMs: 10_000 });
    const path = "snapshots/targets/x86/64/profiles.json";
    const get = () => c.getProfiles("snapshots", "x86/64", { maxAgeMs: 1000 });
    expect((await get())?.version_code).toBe("r30000-0123456789");
    clock += 999;
    await get();
    expect(upstream.count(path)).toBe(1);
    clock += 1;
    await get();
    expect(upstream.requests.filter((r) => r.path === path).map((r) => r.conditional)).toEqual([false, true]);

    // Upstream fails: the copy is served, and a hit a second later does not ask again.
    upstream.fail(path, 503);
    clock += 1000;
    expect((await get())?.version_code).toBe("r30000-0123456789");
    clock += 1000;
    expect((await get())?.version_code).toBe("r30000-0123456789");
    expect(upstream.count(path)).toBe(3);
    clock += 10_000;
    await get();
    expect(upstream.count(path)).toBe(4);
  });
});

describe("UpstreamClient memory bound (issue #13)", () => {
  const p23 = "releases/23.05.4/targets/ath79/generic/packages/Packages";
  const p24 = "releases/24.10.4/targets/ath79/generic/packages/Packages";
  const size = (text: string | undefined) => Buffer.byteLength(text ?? "");

  it("drops the least recently fetched documents once their text passes maxBytes", async () => {
    const sizes = client();
    const a = size(await sizes.getText(p23));
    const b = size(await sizes.getText(p24));
    const v = size(await sizes.getText(".versions.json"));
    expect(sizes.cachedBytes).toBe(a + b + v);
    upstream.requests.length = 0;

    // Room for the two indexes, not for the third document as well.
    const c = client({ maxBytes: a + b + v - 1 });
    await c.getText(p23);
    await c.getText(p24);
    expect(c.cachedDocuments).toBe(2);
    await c.getText(".versions.json");
    expect(c.cachedDocuments).toBe(2);
    expect(c.cachedBytes).toBe(b + v);
    expect(c.cachedBytes).toBeLessThanOrEqual(a + b + v - 1);
    // The newer ones are served from memory, the dropped one is fetched again.
    await c.getText(p24);
    await c.getText(".versions.json");
    expect(upstream.count(p24)).toBe(1);
    expect(upstream.count(".versions.json")).toBe(1);
    await c.getText(p23);
    expect(upstream.count(p23)).toBe(2);
  });

  it("keeps the document just fetched even when it alone is larger than maxBytes", async () => {
    const c = client({ maxBytes: 10 });
    await c.getText(".versions.json");
    expect(c.cachedDocuments).toBe(1);
    await c.getText(p23);
    expect(c.cachedDocuments).toBe(1);
    await c.getText(p23);
    expect(upstream.count(p23)).toBe(1);
  });

  it("counts a changed document at its new size", async () => {
    const c = client({ ttlMs: 60_000 });
    await c.getVersions();
    const before = c.cachedBytes;
    upstream.set(".versions.json", { stable_version: "24.10.5", versions_list: ["24.10.5"] });
    clock += 60_000;
    await c.getVersions();
    expect(c.cachedDocuments).toBe(1);
    expect(c.cachedBytes).toBe(size(await c.getText(".versions.json")));
    expect(c.cachedBytes).not.toBe(before);
  });
});

describe("UpstreamClient reload on a miss", () => {
  it("forces one revalidation, then rate-limits further forced reloads of that URL", async () => {
    const c = client({ reloadIntervalMs: 10_000 });
    await c.getTargets("releases/23.05.4");
    clock += 10_000;
    await c.getTargets("releases/23.05.4", { reload: true });
    await c.getTargets("releases/23.05.4", { reload: true });
    clock += 5_000;
    await c.getTargets("releases/23.05.4", { reload: true });
    expect(upstream.count("releases/23.05.4/.targets.json")).toBe(2);
    clock += 5_000;
    await c.getTargets("releases/23.05.4", { reload: true });
    expect(upstream.count("releases/23.05.4/.targets.json")).toBe(3);
  });

  it("does not force a reload of a document fetched moments ago", async () => {
    const c = client();
    await c.getTargets("releases/23.05.4");
    await c.getTargets("releases/23.05.4", { reload: true });
    expect(upstream.count("releases/23.05.4/.targets.json")).toBe(1);
  });

  it("sees a target published after the first fetch", async () => {
    const c = client();
    expect(await c.getProfiles("releases/23.05.4", "ramips/mt7621")).toBeUndefined();
    upstream.set("releases/23.05.4/targets/ramips/mt7621/profiles.json", {
      arch_packages: "mipsel_24kc",
      target: "ramips/mt7621",
      version_code: "r1",
      version_number: "23.05.4",
      profiles: {},
    });
    clock += 10_000;
    expect((await c.getProfiles("releases/23.05.4", "ramips/mt7621", { reload: true }))?.target).toBe(
      "ramips/mt7621",
    );
  });

  it("lookupTargets reloads once only when the cached copy lacks what is asked for", async () => {
    const c = client();
    const path = "releases/23.05.4";
    await c.getTargets(path);
    clock += 10_000;
    expect(await c.lookupTargets(path, (t) => Object.hasOwn(t, "ath79/generic"))).toBeDefined();
    expect(upstream.count(`${path}/.targets.json`)).toBe(1);
    const targets = await c.lookupTargets(path, (t) => Object.hasOwn(t, "new/target"));
    expect(targets && Object.hasOwn(targets, "new/target")).toBe(false);
    expect(upstream.count(`${path}/.targets.json`)).toBe(2);
  });

  it("lookupProfiles finds a profile added since the first fetch", async () => {
    const c = client();
    const path = "releases/23.05.4";
    const doc = (profiles: object) => ({
      arch_packages: "mipsel_24kc",
      target: "ramips/mt7621",
      version_code: "r1",
      version_number: "23.05.4",
      profiles,
    });
    upstream.set(`${path}/targets/ramips/mt7621/profiles.json`, doc({}));
    const has = (p: { profiles: object }) => Object.hasOwn(p.profiles, "new_router");
    expect(await c.lookupProfiles(path, "ramips/mt7621", has)).toMatchObject({ profiles: {} });
    upstream.set(`${path}/targets/ramips/mt7621/profiles.json`, doc({ new_router: { images: [] } }));
    clock += 10_000;
    expect(await c.lookupProfiles(path, "ramips/mt7621", has)).toMatchObject({
      profiles: { new_router: {} },
    });
  });

  it("refresh() says whether it asked the server, invalidate() marks documents stale", async () => {
    const c = client();
    await c.getVersions();
    expect(await c.refresh(".versions.json")).toBe(false);
    clock += 10_000;
    expect(await c.refresh("/.versions.json")).toBe(true);
    expect(await c.refresh(".versions.json")).toBe(false);
    expect(upstream.count(".versions.json")).toBe(2);

    await c.getTargets("releases/23.05.4");
    c.invalidate("releases/");
    await c.getVersions();
    await c.getTargets("releases/23.05.4");
    expect(upstream.count(".versions.json")).toBe(2);
    expect(upstream.count("releases/23.05.4/.targets.json")).toBe(2);
    c.invalidate();
    await c.getVersions();
    expect(upstream.count(".versions.json")).toBe(3);
  });
});

describe("UpstreamClient errors", () => {
  it("turns a 5xx into 502 naming the path", async () => {
    upstream.fail("releases/23.05.4/.targets.json", 500);
    const err = await rejection(client().getTargets("releases/23.05.4"));
    expect(err.status).toBe(502);
    expect(err.detail).toBe(
      "The upstream download server answered HTTP 500 for /releases/23.05.4/.targets.json. Try again in a few minutes; if it persists, tell the server operator.",
    );
  });

  it("turns a 403 into 502 as well", async () => {
    upstream.fail(".versions.json", 403);
    expect((await rejection(client().getVersions())).status).toBe(502);
  });

  it("turns a timeout into 504", async () => {
    upstream.fail(".versions.json", "hang");
    const err = await rejection(client({ timeoutMs: 200 }).getVersions());
    expect(err.status).toBe(504);
    expect(err.detail).toBe(
      "The upstream download server did not answer within 200 ms for /.versions.json. Try again in a few minutes.",
    );
  });

  it("turns a dropped connection into 502", async () => {
    upstream.fail(".versions.json", "reset");
    const err = await rejection(client().getVersions());
    expect(err.status).toBe(502);
    expect(err.detail).toMatch(
      /^Could not reach the upstream download server for \/\.versions\.json \(.+\)\. Try again/,
    );
  });

  it("turns a refused connection into 502", async () => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const err = await rejection(new UpstreamClient({ baseUrl: `http://127.0.0.1:${port}` }).getVersions());
    expect(err.status).toBe(502);
    expect(err.detail).toContain("ECONNREFUSED");
  });

  it("serves the cached copy when revalidation fails, and retries only after the reload interval", async () => {
    const c = client({ ttlMs: 60_000, reloadIntervalMs: 10_000 });
    const first = await c.getVersions();
    upstream.fail(".versions.json", 503);
    clock += 60_000;
    expect(await c.getVersions()).toBe(first);
    expect(await c.getVersions()).toBe(first);
    expect(upstream.count(".versions.json")).toBe(2);
    clock += 10_000;
    upstream.fail(".versions.json", undefined);
    upstream.set(".versions.json", { stable_version: "24.10.5", versions_list: ["24.10.5"] });
    expect((await c.getVersions()).stable_version).toBe("24.10.5");
    expect(upstream.count(".versions.json")).toBe(3);
  });

  it("a missing /.versions.json is an upstream failure", async () => {
    upstream.set(".versions.json", undefined);
    const err = await rejection(client().getVersions());
    expect(err.status).toBe(502);
    expect(err.detail).toContain("has no /.versions.json");
  });

  it("rejects unreadable documents with 502", async () => {
    upstream.set("releases/23.05.4/.targets.json", "<html>oops</html>");
    const err = await rejection(client().getTargets("releases/23.05.4"));
    expect(err.detail).toBe(
      "The upstream download server sent an unreadable /releases/23.05.4/.targets.json (it is not valid JSON). Try again in a few minutes; if it persists, tell the server operator.",
    );
    upstream.set("releases/23.05.4/targets/x86/64/profiles.json", { profiles: "nope" });
    const err2 = await rejection(client().getProfiles("releases/23.05.4", "x86/64"));
    expect(err2.detail).toContain(`field "profiles" is missing or not an object`);
  });

  it("refuses paths that could leave the download tree", async () => {
    const c = client();
    await expect(c.getTargets("releases/../../etc")).rejects.toBeInstanceOf(ValidationError);
    await expect(c.getText("releases/23.05.4/x?y")).rejects.toBeInstanceOf(ValidationError);
    expect(upstream.requests).toHaveLength(0);
  });
});

describe("UpstreamClient typed getters", () => {
  it("reads versions, targets and profiles", async () => {
    const c = client();
    expect((await c.getVersions()).versions_list).toContain("23.05.4");
    expect(await c.getTargets("releases/23.05.4")).toEqual({
      "ath79/generic": "mips_24kc",
      "x86/64": "x86_64",
    });
    const profiles = await c.getProfiles("releases/23.05.4", "ath79/generic");
    expect(profiles?.arch_packages).toBe("mips_24kc");
    expect(profiles?.profiles["tplink_archer-c7-v5"]?.supported_devices).toEqual([
      "tplink,archer-c7-v5",
      "archer-c7-v5",
    ]);
    expect(await c.getProfiles("releases/23.05.4", "nope/nope")).toBeUndefined();
  });

  it("reads an opkg target index without kmods (23.05)", async () => {
    const index = await client().getTargetIndex("releases/23.05.4", "ath79/generic", "opkg");
    expect(index?.architecture).toBe("mips_24kc");
    expect(index?.packages.libubox).toBe("2024.03.29~eb9bcb64-1");
    expect(index?.packages["kmod-ath9k"]).toBe("5.15.162+6.1.97-1");
  });

  it("merges the kmods folder named by linux_kernel (24.10, opkg)", async () => {
    const c = client();
    const index = await c.getTargetIndex("releases/24.10.4", "ath79/generic", "opkg");
    expect(index?.architecture).toBe("mips_24kc");
    expect(index?.packages["kmod-ath10k-ct"]).toBe("6.6.86+2023-11-17-1");
    expect(index?.packages["base-files"]).toBe("1653-r28427-6df0e3d02a");
    expect(
      upstream.count(
        "releases/24.10.4/targets/ath79/generic/kmods/6.6.86-1-0123456789abcdef0123456789abcdef/Packages",
      ),
    ).toBe(1);
    // Unchanged documents give the same merged object (validation caches its name index on it).
    expect(await c.getTargetIndex("releases/24.10.4", "ath79/generic", "opkg")).toBe(index);
  });

  it("merges kmods for apk snapshots", async () => {
    const index = await client().getTargetIndex("snapshots", "x86/64", "apk");
    expect(index).toEqual({
      architecture: "x86_64",
      packages: expect.objectContaining({
        "base-files": "1700-r30000",
        "kmod-e1000": "6.6.86-r1",
      }) as unknown,
    });
  });

  it("serves targets/<t>/<s>/packages/ alone when the kmods folder is missing", async () => {
    upstream.set(
      "releases/24.10.4/targets/ath79/generic/kmods/6.6.86-1-0123456789abcdef0123456789abcdef/Packages",
      undefined,
    );
    const index = await client().getTargetIndex("releases/24.10.4", "ath79/generic", "opkg");
    expect(index?.architecture).toBe("mips_24kc");
    expect(index?.packages["base-files"]).toBe("1653-r28427-6df0e3d02a");
    expect(index?.kmodsMissing).toBe(true);
  });

  it("returns undefined for a target without a package index", async () => {
    expect(await client().getTargetIndex("releases/23.05.4", "nope/nope", "opkg")).toBeUndefined();
  });

  it("lists feeds from feeds.buildinfo, base first, or falls back to the usual five", async () => {
    const c = client();
    expect(await c.getFeeds("releases/23.05.4", "ath79/generic")).toEqual([
      "base",
      "packages",
      "luci",
      "routing",
      "telephony",
    ]);
    expect(await c.getFeeds("releases/24.10.4", "ath79/generic")).toEqual([...DEFAULT_FEEDS]);
  });

  it("reads one feed, and all feeds of an architecture as one index", async () => {
    const c = client();
    expect(
      (await c.getFeedIndex("releases/23.05.4/packages", "mips_24kc", "luci", "opkg"))?.[
        "luci-proto-wireguard"
      ],
    ).toBe("git-24.196.59693-4a4bc3c");
    expect(
      await c.getFeedIndex("releases/23.05.4/packages", "mips_24kc", "telephony", "opkg"),
    ).toBeUndefined();
    const all = await c.getArchIndex(
      "releases/23.05.4/packages",
      "releases/23.05.4",
      "ath79/generic",
      "mips_24kc",
      "opkg",
    );
    expect(all?.firewall4).toBe("2023-09-01-598d9fbb-1");
    expect(all?.tcpdump).toBe("4.99.4-1");
    expect(all?.babeld).toBe("1.13.1-1");
    expect(all?.["luci-app-opkg"]).toBeDefined();
    expect(
      await c.getArchIndex(
        "releases/23.05.4/packages",
        "releases/23.05.4",
        "ath79/generic",
        "mips_24kc",
        "opkg",
      ),
    ).toBe(all);
    const apk = await c.getArchIndex("snapshots/packages", "snapshots", "x86/64", "x86_64", "apk");
    expect({ ...apk }).toEqual({ owut: "2025.02.01-r1", tcpdump: "4.99.5-r1" });
    expect(
      await c.getArchIndex("releases/23.05.4/packages", "releases/23.05.4", "x86/64", "nope", "opkg"),
    ).toBeUndefined();
  });

  it("earlier feeds win when two publish the same name, and a changed feed is re-read", async () => {
    upstream.set(
      "releases/23.05.4/packages/mips_24kc/routing/Packages",
      opkgPackages({ firewall4: "0-from-routing" }),
    );
    const c = client({ ttlMs: 1000 });
    const path = [
      "releases/23.05.4/packages",
      "releases/23.05.4",
      "ath79/generic",
      "mips_24kc",
      "opkg",
    ] as const;
    expect((await c.getArchIndex(...path))?.firewall4).toBe("2023-09-01-598d9fbb-1");
    upstream.set("releases/23.05.4/packages/mips_24kc/packages/Packages", opkgPackages({ tcpdump: "5.0-1" }));
    clock += 1000;
    expect((await c.getArchIndex(...path))?.tcpdump).toBe("5.0-1");
  });

  it("rejects an apk index of another format version", async () => {
    upstream.set(
      "snapshots/packages/x86_64/base/index.json",
      apkIndex("x86_64", {}).replace('"version":2', '"version":3'),
    );
    const err = await rejection(client().getFeedIndex("snapshots/packages", "x86_64", "base", "apk"));
    expect(err.status).toBe(502);
    expect(err.detail).toContain("only version 2 is understood");
  });
});
