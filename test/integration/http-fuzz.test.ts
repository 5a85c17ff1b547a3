import fc from "fast-check";
import type { FastifyInstance } from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startStack, stopStack, type Stack } from "./harness.js";

/*
 * Generated and mutated requests against the real app (Fastify inject(), real Redis on a
 * prefix of this file, the synthetic mirror as upstream, no worker). Whatever a client
 * sends, the answer is a 4xx or a 2xx/3xx, never a 5xx, and the server still answers.
 * A 5xx found here is a bug: fix it and add a regression test beside the code.
 * Runs are seeded from FUZZ_SEED when set (to replay a failure), and counted below.
 */

const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : Date.now() % 2 ** 31;
/** Runs per property; FUZZ_RUNS raises it for a longer local session. */
const RUNS = process.env.FUZZ_RUNS ? Number(process.env.FUZZ_RUNS) : 1;

let stack: Stack;
let app: FastifyInstance;
const statuses = new Map<number, number>();
let cases = 0;

beforeAll(async () => {
  stack = await startStack({
    role: "api",
    overrides: {
      max_pending_jobs: 1_000_000,
      allow_defaults: true,
      repository_allow_list: ["https://downloads.openwrt.org/releases", "http://127.0.0.1:1/feed"],
    },
  });
  app = stack.api.server.app as FastifyInstance;
});

afterAll(async () => {
  const summary = [...statuses.entries()].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`);
  console.log(`http-fuzz: ${cases} requests (seed ${SEED}); statuses ${summary.join(", ")}`);
  await stopStack(stack);
});

// --- building blocks ------------------------------------------------------------------------

const PROTO_NAMES = [
  "toString",
  "constructor",
  "valueOf",
  "hasOwnProperty",
  "__proto__",
  "__defineGetter__",
  "prototype",
  "isPrototypeOf",
];
const VERSIONS = ["24.10.4", "23.05.4", "SNAPSHOT", "24.10-SNAPSHOT", "24.10.3", "22.03.7", "25.12.0-rc1"];
const TARGETS = ["ath79/generic", "x86/64", "mediatek/filogic", "ramips/mt7621"];
const PROFILES = ["tplink_archer-c7-v5", "tplink,archer-c7-v5", "generic", "netgear_wndr3700"];
const PACKAGES = ["luci", "tcpdump", "vim", "htop", "curl", "-ppp", "+luci", "kernel", "libc", "auc"];

/** Strings with the characters that break parsers: separators, controls, unicode, escapes. */
const nasty = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.string({ unit: "binary", maxLength: 20 }),
  fc.constantFrom(
    ...PROTO_NAMES,
    "",
    " ",
    "..",
    "../..",
    "%00",
    "\\",
    "a\nb",
    "𝕏",
    "\u0000",
    "a".repeat(300),
  ),
);

const oneOfOr = <T, U>(values: readonly T[], other: fc.Arbitrary<U>): fc.Arbitrary<T | U> =>
  fc.oneof({ arbitrary: fc.constantFrom(...values), weight: 3 }, { arbitrary: other, weight: 1 });

const repositoryUrl = fc.oneof(
  fc.constantFrom(
    "https://downloads.openwrt.org/releases/24.10.4/packages/x",
    "https://downloads.openwrt.org\\releases\\x@evil.example/",
    "https://DOWNLOADS.openwrt.org/releases/x/",
    "https://downloads.openwrt.org/releases/%0a",
    "https://u:p@downloads.openwrt.org/releases",
    "http://127.0.0.1:1/feed/x",
    "https://[::1]/releases",
    "https://xn--n3h.example/releases",
  ),
  fc.webUrl({ withQueryParameters: true, withFragments: true }),
  nasty.map((s) => `https://downloads.openwrt.org/releases/${s}`),
);

const buildBody = fc.record(
  {
    version: oneOfOr(VERSIONS, fc.oneof(nasty, fc.anything())),
    target: oneOfOr(
      TARGETS,
      fc.oneof(
        nasty,
        nasty.map((s) => `${s}/${s}`),
        fc.anything(),
      ),
    ),
    profile: oneOfOr(PROFILES, fc.oneof(nasty, fc.constantFrom(...PROTO_NAMES), fc.anything())),
    packages: fc.oneof(
      fc.array(oneOfOr([...PACKAGES, ...PROTO_NAMES], nasty), { maxLength: 30 }),
      fc.array(fc.constantFrom(...PROTO_NAMES), { maxLength: 5 }),
      fc.anything(),
    ),
    packages_versions: fc.oneof(
      fc.dictionary(oneOfOr([...PACKAGES, ...PROTO_NAMES], nasty), oneOfOr(["1.0-1", ""], nasty), {
        maxKeys: 8,
      }),
      fc.anything(),
    ),
    diff_packages: fc.oneof(fc.boolean(), fc.anything()),
    version_code: fc.oneof(fc.constantFrom("", "r28959-29397011cc"), nasty, fc.anything()),
    rootfs_size_mb: fc.oneof(
      fc.integer(),
      fc.double(),
      fc.constantFrom("512", "", null, "1e3", "-1", "0x10", "99999999999999999999"),
      nasty,
    ),
    filesystem: fc.oneof(fc.constantFrom("squashfs", "ext4", null, "ntfs"), nasty, fc.anything()),
    defaults: fc.oneof(fc.constantFrom("", null, "echo hi"), nasty, fc.anything()),
    repositories: fc.oneof(
      fc.dictionary(oneOfOr(["feed", ...PROTO_NAMES], nasty), repositoryUrl),
      fc.anything(),
    ),
    repositories_mode: fc.oneof(fc.constantFrom("", "append", "replace"), nasty),
    repository_keys: fc.oneof(fc.array(nasty, { maxLength: 3 }), fc.anything()),
    client: fc.oneof(fc.constantFrom("luci/1", "owut/2024.07.01~r1", "ofs/4.2"), nasty, fc.anything()),
    distro: fc.oneof(fc.constant("openwrt"), nasty),
  },
  { requiredKeys: [] },
);

const FIELDS = [
  "version",
  "target",
  "profile",
  "packages",
  "packages_versions",
  "diff_packages",
  "version_code",
  "rootfs_size_mb",
  "filesystem",
  "defaults",
  "repositories",
  "repositories_mode",
  "repository_keys",
  "client",
  "distro",
];

/** A request real clients could send, with one or two fields swapped for generated ones. */
const nearlyValidBody = fc
  .tuple(
    fc.record({
      version: fc.constantFrom(...VERSIONS.slice(0, 4)),
      target: fc.constant("ath79/generic"),
      profile: fc.constantFrom(...PROFILES),
      packages: fc.array(fc.constantFrom(...PACKAGES, ...PROTO_NAMES, "luci-app-wireguard", "tcpdum"), {
        maxLength: 12,
      }),
      diff_packages: fc.boolean(),
      client: fc.constantFrom("luci/1", "owut/2024.07.01~r1", "ofs/4.2"),
    }),
    buildBody,
    fc.uniqueArray(fc.constantFrom(...FIELDS), { maxLength: 2 }),
  )
  .map(([good, generated, swap]) => {
    const body: Record<string, unknown> = { ...good };
    for (const key of swap) if (key in generated) body[key] = (generated as Record<string, unknown>)[key];
    return body;
  });

/** JSON text with a few characters inserted, deleted or replaced. */
const mutatedJson = fc
  .tuple(
    buildBody.map((body) => JSON.stringify(body) ?? "null"),
    fc.array(fc.tuple(fc.nat(), fc.nat({ max: 3 }), fc.string({ maxLength: 3 })), {
      minLength: 1,
      maxLength: 4,
    }),
  )
  .map(([text, edits]) => {
    let out = text;
    for (const [at, cut, insert] of edits) {
      const i = out.length === 0 ? 0 : at % out.length;
      out = out.slice(0, i) + insert + out.slice(i + cut);
    }
    return out;
  });

const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "application/json; charset=latin1",
  "APPLICATION/JSON",
  "text/plain",
  "text/plain; charset=utf-8",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/octet-stream",
  "application/json-patch+json",
  "",
  ";;;",
  "application/json; boundary=\u0000",
];

const segment = fc.oneof(
  fc.constantFrom(
    ...VERSIONS,
    "releases",
    "snapshots",
    "targets",
    "packages",
    "ath79",
    "generic",
    "x86",
    "64",
    "index.json",
    "profiles.json",
    "tplink_archer-c7-v5.json",
    "mips_24kc-index.json",
    ...PROTO_NAMES,
    ...PROTO_NAMES.map((n) => `${n}.json`),
    ...PROTO_NAMES.map((n) => `${n}-index.json`),
    "..",
    ".",
    "%2e%2e",
    "%2F",
    "%00",
    "a".repeat(600),
  ),
  nasty.map((s) => encodeURIComponent(s)),
  fc.stringMatching(/^[\w.,~-]{0,20}$/),
);

const getPath = fc.oneof(
  fc.tuple(fc.constantFrom("/api/v1/build/", "/api/build/"), segment).map(([p, s]) => p + s),
  fc.array(segment, { maxLength: 8 }).map((s) => `/json/v1/${s.join("/")}`),
  fc.tuple(segment, segment).map(([a, b]) => `/store/${a}/${b}`),
  fc.array(segment, { minLength: 1, maxLength: 5 }).map((s) => `/api/v1/revision/${s.join("/")}`),
  fc.array(segment, { maxLength: 4 }).map((s) => `/${s.join("/")}`),
  fc.constantFrom(
    "/",
    "/api/v1/overview",
    "/api/overview",
    "/api/v1/latest",
    "/api/latest",
    "/api/branches",
    "/api/versions",
    "/api/v1/stats",
    "/api/v1/stats/summary",
    "/api/v1/builds-per-day",
    "/api/v1/builds-by-version",
    "/api/v1/top-packages",
    "/api/v1/top-targets",
    "/api/v1/build-errors",
    "/stats",
    "/stats/stats.js",
    "/json/v1/overview.json",
    "/json/v1/branches.json",
    "/json/v1/latest.json",
    "/openapi.json",
    "/metrics",
  ),
);
const queryString = fc.oneof(
  fc.constant(""),
  fc.nat().map((n) => `?${n}`),
  fc.dictionary(segment, segment, { maxKeys: 4 }).map((q) => `?${new URLSearchParams(q).toString()}`),
  nasty.map((s) => `?${encodeURIComponent(s)}`),
  fc.constantFrom("?", "??", "?&&", "?a=1&a=2", "?__proto__[x]=1", "?constructor=1"),
  // The stats endpoints' own parameters, with any value.
  fc
    .tuple(
      fc.subarray(["version", "target", "branch", "limit", "n_entries"]),
      fc.oneof(segment, nasty, fc.nat()),
    )
    .map(([keys, value]) => `?${keys.map((k) => `${k}=${encodeURIComponent(String(value))}`).join("&")}`),
);

// --- the properties -------------------------------------------------------------------------

async function send(opts: {
  method: "GET" | "HEAD" | "POST" | "OPTIONS";
  url: string;
  payload?: string | Buffer;
  headers?: Record<string, string>;
}): Promise<number> {
  const res = await app.inject(opts);
  cases += 1;
  statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
  if (res.statusCode >= 500) {
    throw new Error(
      `${opts.method} ${opts.url} → ${res.statusCode}: ${res.body.slice(0, 500)}\n` +
        `payload: ${String(opts.payload).slice(0, 500)}`,
    );
  }
  return res.statusCode;
}

const params = (numRuns: number) => ({ numRuns: numRuns * RUNS, seed: SEED, endOnFailure: true });
const buildPaths = fc.constantFrom("/api/v1/build", "/api/build", "/api/v1/build?1696506154265");

describe("HTTP fuzz: no request gets a 5xx", () => {
  it("POST build with nearly valid bodies", async () => {
    await fc.assert(
      fc.asyncProperty(buildPaths, nearlyValidBody, async (url, body) => {
        const status = await send({
          method: "POST",
          url,
          payload: JSON.stringify(body),
          headers: { "content-type": "application/json" },
        });
        expect(status).toBeLessThan(500);
      }),
      params(1000),
    );
  });

  it("POST build with generated bodies", async () => {
    await fc.assert(
      fc.asyncProperty(buildPaths, buildBody, async (url, body) => {
        const status = await send({
          method: "POST",
          url,
          payload: JSON.stringify(body),
          headers: { "content-type": "application/json" },
        });
        expect(status).toBeLessThan(500);
      }),
      params(2500),
    );
  });

  it("POST build with mutated JSON text and odd content types", async () => {
    await fc.assert(
      fc.asyncProperty(
        buildPaths,
        fc.oneof(mutatedJson, fc.json(), fc.string({ unit: "binary", maxLength: 200 })),
        fc.constantFrom(...CONTENT_TYPES),
        async (url, payload, type) => {
          const headers: Record<string, string> = type === "" ? {} : { "content-type": type };
          expect(await send({ method: "POST", url, payload, headers })).toBeLessThan(500);
        },
      ),
      params(2500),
    );
  });

  it("GET and HEAD with random paths and query strings", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "HEAD", "OPTIONS"),
        getPath,
        queryString,
        async (method, path, q) => {
          const headers: Record<string, string> =
            method === "OPTIONS"
              ? { origin: "https://firmware-selector.openwrt.org", "access-control-request-method": "POST" }
              : {};
          expect(await send({ method: method as "GET", url: path + q, headers })).toBeLessThan(500);
        },
      ),
      params(3000),
    );
  });

  it("huge, deep and oversized JSON", async () => {
    const base = { version: "24.10.4", target: "ath79/generic", profile: "tplink_archer-c7-v5" };
    const deep = (n: number, open: string, close: string, inner = "1") =>
      open.repeat(n) + inner + close.repeat(n);
    const payloads = [
      deep(10_000, "[", "]"),
      deep(100_000, "[", "]"),
      deep(50_000, '{"a":', "}"),
      `{"version":"24.10.4","target":"ath79/generic","profile":"x","packages":${deep(20_000, "[", "]", '"luci"')}}`,
      `{"version":"24.10.4","target":"ath79/generic","profile":"x","packages_versions":${deep(20_000, '{"a":', "}", '"1"')}}`,
      JSON.stringify({ ...base, packages: Array.from({ length: 1000 }, (_, i) => `p${i}`) }),
      JSON.stringify({ ...base, packages: Array.from({ length: 1000 }, () => "x".repeat(128)) }),
      JSON.stringify({ ...base, packages: Array.from({ length: 5000 }, (_, i) => `p${i}`) }),
      JSON.stringify({
        ...base,
        packages_versions: Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`p${i}`, "1"])),
      }),
      JSON.stringify({ ...base, defaults: "x".repeat(1000 * 1000 - 200) }),
      JSON.stringify({ ...base, client: "x".repeat(900_000) }),
      JSON.stringify({ ...base, extra: "x".repeat(2 * 1024 * 1024) }),
      `{"version":"24.10.4","__proto__":{"polluted":1},"target":"ath79/generic","profile":"x"}`,
      `{"version":"24.10.4","constructor":{"prototype":{"polluted":1}},"target":"ath79/generic","profile":"x"}`,
      `{"version":"24.10.4","target":"ath79/generic","profile":"x","packages_versions":{"__proto__":"1"}}`,
      `{"version":"24.10.4","target":"ath79/generic","profile":"x","repositories":{"__proto__":"https://downloads.openwrt.org/releases/x"}}`,
      `{"version":"24.10.4","version":"SNAPSHOT","target":"ath79/generic","profile":"x"}`,
      `{"version":"24.10.4","target":"ath79/generic","profile":"x","rootfs_size_mb":1e309}`,
      `{"version":"24.10.4","target":"ath79/generic","profile":"x","rootfs_size_mb":-0}`,
      "\uFEFF" + JSON.stringify(base),
      JSON.stringify(base) + "garbage",
      Buffer.from([0xff, 0xfe, 0x7b, 0x00, 0x7d, 0x00]),
    ];
    for (const payload of payloads) {
      for (const url of ["/api/v1/build", "/api/build"]) {
        const status = await send({
          method: "POST",
          url,
          payload,
          headers: { "content-type": "application/json" },
        });
        expect(status).toBeGreaterThanOrEqual(200);
      }
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("still answers afterwards", async () => {
    const overview = await app.inject({ method: "GET", url: "/json/v1/overview.json" });
    expect(overview.statusCode).toBe(200);
    const build = await app.inject({
      method: "POST",
      url: "/api/v1/build",
      payload: {
        version: "24.10.4",
        target: "ath79/generic",
        profile: "tplink_archer-c7-v5",
        packages: ["vim"],
      },
    });
    expect([200, 202]).toContain(build.statusCode);
    // and over the network too, not only through inject()
    const res = await fetch(`${stack.api.url}/api/v1/stats`);
    expect(res.status).toBe(200);
  });
});
