import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  flushPrefix,
  request,
  startMirror,
  startTestServer,
  type Mirror,
  type TestServer,
} from "./harness.js";

/*
 * Attacks from the security audit (GitHub issue #9, items 3, 6, 7 and 8), sent over real
 * HTTP to an API-only server (nothing is built; what would queue stays queued).
 */

const base = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };
const base2305 = { ...base, version: "23.05.4" };
const ALLOWED = "http://downloads.openwrt.org/releases/24.10.4/packages";

let mirror: Mirror;
let api: TestServer;

beforeAll(async () => {
  mirror = await startMirror();
  api = await startTestServer(mirror, {
    role: "api",
    overrides: { max_pending_jobs: 10_000, repository_allow_list: [ALLOWED] },
  });
});

afterAll(async () => {
  await api?.close();
  if (api) await flushPrefix(api.prefix);
  await mirror?.close();
});

const post = (body: unknown, path = "/api/v1/build") => request(api.url, "POST", path, body);
const waiting = async () => (await api.server.queue.queue.getJobCounts("waiting")).waiting ?? 0;

describe("item 3: repository URLs that other URL parsers read differently", () => {
  it("refuses a backslash URL that wget, curl and opkg would fetch from another host", async () => {
    const before = await waiting();
    const attack = "http://downloads.openwrt.org\\releases\\24.10.4\\packages\\x@evil.example/evil";
    // The WHATWG parser sees host downloads.openwrt.org; curl sees userinfo and host evil.example.
    expect(new URL(attack).host).toBe("downloads.openwrt.org");
    const res = await post({ ...base, repositories: { evil: attack } });
    expect(res.status).toBe(422);
    expect(res.body.status).toBe(422);
    expect(String(res.body.detail)).toContain("backslash");
    expect(await waiting()).toBe(before);
  });

  it("refuses userinfo, encoded control characters, encoded slashes and spellings the parser repairs", async () => {
    const before = await waiting();
    const attacks: [string, string][] = [
      [`http://user:pw@downloads.openwrt.org/releases/24.10.4/packages/base`, "user name or password"],
      [`${ALLOWED}/base%0aevil`, "control character"],
      [`${ALLOWED}/base%00`, "control character"],
      [`${ALLOWED}/base%7F`, "control character"],
      [`${ALLOWED}/..%2f..%2f..%2fevil`, "encoded"],
      [`${ALLOWED}/..%5c..%5cevil`, "encoded"],
      [`${ALLOWED}/./x/../base`, "Write it as"],
      [`http://DOWNLOADS.openwrt.org/releases/24.10.4/packages/base`, "Write it as"],
      [`http://downloads.openwrt.org:80/releases/24.10.4/packages/base`, "Write it as"],
      [`${ALLOWED}/base?x=1`, "query"],
      [`${ALLOWED}/base#frag`, "fragment"],
    ];
    for (const [url, hint] of attacks) {
      const res = await post({ ...base, repositories: { feed: url } });
      expect(res.status, url).toBe(422);
      expect(res.body.status).toBe(422);
      expect(String(res.body.detail), url).toContain(hint);
    }
    expect(await waiting()).toBe(before);
  });

  it("hashes and echoes the server's own serialisation, so two spellings are one build", async () => {
    const plain = await post({ ...base, repositories: { feed: `${ALLOWED}/base` } });
    const slash = await post({ ...base, repositories: { feed: `${ALLOWED}/base/` } });
    expect([plain.status, slash.status]).toEqual([202, 202]);
    expect(slash.body.request_hash).toBe(plain.body.request_hash);
    expect((plain.body.request as { repositories: unknown }).repositories).toEqual({
      feed: `${ALLOWED}/base`,
    });
  });
});

describe("item 6: package, profile and target names that are JavaScript object properties", () => {
  const names = ["toString", "constructor", "valueOf", "hasOwnProperty", "__proto__", "__defineGetter__"];

  it("answers 422 unknown package, never 500 or a function's source, on opkg 24.10 and 23.05", async () => {
    for (const body of [base, base2305]) {
      for (const name of names) {
        const res = await post({ ...body, packages: [name] });
        expect(res.status, `${body.version} ${name}: ${res.text}`).toBe(422);
        expect(res.body.status).toBe(422);
        expect(String(res.body.detail)).toContain(`Unknown package: ${name}`);
        expect(String(res.body.detail)).not.toContain("native code");
        expect(res.headers.get("x-unknown-package")).toBe(name);
      }
    }
  });

  it("answers 422 for such names as packages_versions keys, also __proto__ in the JSON text", async () => {
    for (const name of ["constructor", "toString", "valueOf"]) {
      const res = await post({ ...base, packages_versions: { [name]: "1" } });
      expect(res.status, res.text).toBe(422);
      expect(String(res.body.detail)).toContain(`Unknown package: ${name}`);
    }
    const raw = `{"version":"24.10.4","target":"ath79/generic","profile":"tplink_archer-c7-v5","packages_versions":{"__proto__":"1"}}`;
    const res = await post(raw);
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(typeof res.body.detail).toBe("string");
  });

  it("answers 400 for such profile and target names, and 404 on the metadata routes (400 for a version)", async () => {
    for (const name of names) {
      const profile = await post({ ...base, profile: name });
      expect(profile.status, profile.text).toBe(400);
      expect(String(profile.body.detail)).toContain(`Unsupported profile: ${name}`);
      expect(String(profile.body.detail)).not.toContain("native code");
      const target = await post({ ...base, target: `${name}/${name}` });
      expect(target.status, target.text).toBe(400);
      for (const path of [
        `/json/v1/releases/24.10.4/targets/ath79/generic/${name}.json`,
        `/json/v1/releases/24.10.4/targets/${name}/${name}/index.json`,
        `/json/v1/releases/24.10.4/targets/${name}/generic/x.json`,
        `/json/v1/releases/24.10.4/packages/${name}-index.json`,
        `/api/v1/revision/24.10.4/${name}/${name}`,
      ]) {
        const res = await request(api.url, "GET", path);
        expect(res.status, `${path}: ${res.text}`).toBe(404);
        expect(typeof res.body.detail).toBe("string");
      }
      // A bad version on the revision route is a 400, as upstream (issue #11, item 5).
      const version = await request(api.url, "GET", `/api/v1/revision/${name}/ath79/generic`);
      expect(version.status, version.text).toBe(400);
      expect(String(version.body.detail)).not.toContain("native code");
    }
  });
});

describe("item 8: many unknown packages", () => {
  it("keeps X-Unknown-Package and detail short for 1000 unknown names", async () => {
    const packages = Array.from({ length: 1000 }, (_, i) => `no-such-package-with-a-long-name-${i}`);
    const res = await post({ ...base, packages });
    expect(res.status).toBe(422);
    const header = res.headers.get("x-unknown-package") ?? "";
    expect(header.length).toBeLessThan(2048);
    expect(header).toMatch(/^no-such-package-with-a-long-name-0, /);
    expect(header).toContain("and 980 more");
    expect(String(res.body.detail).length).toBeLessThan(4096);
    expect(String(res.body.detail)).toContain("980 more");
    expect(res.text.length).toBeLessThan(8192);
  });

  it("refuses more than 1000 packages with a clear 422", async () => {
    const packages = Array.from({ length: 1001 }, (_, i) => `pkg${i}`);
    const res = await post({ ...base, packages });
    expect(res.status).toBe(422);
    expect(String(res.body.detail)).toContain("at most 1000");
    const combined = await post({
      ...base,
      packages: Array.from({ length: 600 }, (_, i) => `a${i}`),
      packages_versions: Object.fromEntries(Array.from({ length: 600 }, (_, i) => [`b${i}`, "1"])),
    });
    expect(combined.status).toBe(422);
    expect(String(combined.body.detail)).toContain("at most 1000");
  });
});

describe("item 7: trust_proxy counts proxies from the right of X-Forwarded-For", () => {
  // The test client connects from 127.0.0.1, which plays the reverse proxy.
  async function statuses(
    trust: boolean | number | string[],
    forwardedFor: (i: number) => string,
    count = 3,
  ): Promise<number[]> {
    const server = await startTestServer(mirror, {
      role: "api",
      overrides: { build_rate_limit: 2, trust_proxy: trust as never },
    });
    try {
      const result: number[] = [];
      for (let i = 0; i < count; i++) {
        const res = await request(
          server.url,
          "POST",
          "/api/v1/build",
          { ...base, packages: [["vim", "htop", "curl", "tcpdump"][i] as string] },
          { "x-forwarded-for": forwardedFor(i) },
        );
        result.push(res.status);
      }
      return result;
    } finally {
      await server.close();
      await flushPrefix(server.prefix);
    }
  }

  it("true trusts exactly one proxy: a forged left entry does not buy a fresh limit", async () => {
    // An appending proxy turns the client's forged "10.9.i.1" into "10.9.i.1, <real client>".
    expect(await statuses(true, (i) => `10.9.${i}.1, 198.51.100.7`)).toEqual([202, 202, 429]);
    // Two real clients behind the proxy have a limit each.
    expect(await statuses(true, (i) => `198.51.100.${i}`)).toEqual([202, 202, 202]);
  });

  it("a number of proxies takes the address that many hops from the right", async () => {
    expect(await statuses(2, (i) => `10.9.${i}.1, 198.51.100.7, 192.0.2.1`)).toEqual([202, 202, 429]);
  });

  it("a list of proxy addresses skips only those, from the right", async () => {
    expect(
      await statuses(["127.0.0.1", "10.0.0.0/8"], (i) => `192.0.2.${i}, 198.51.100.7, 10.1.2.3`),
    ).toEqual([202, 202, 429]);
    // A client that is not behind a listed proxy gets no say at all.
    expect(await statuses(["192.0.2.99"], (i) => `198.51.100.${i}`)).toEqual([202, 202, 429]);
  });
});
