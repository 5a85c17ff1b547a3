import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../shared/errors.js";
import { generateKeyPair } from "../shared/usign.js";
import { loadConfig, RawConfigSchema } from "./config.js";
import { parseDuration } from "./duration.js";

function tempDir(): string {
  return mkdtempSync(path.join(tmpdir(), "asu-config-"));
}

function writeToml(text: string): { dir: string; file: string } {
  const dir = tempDir();
  const file = path.join(dir, "asu.toml");
  writeFileSync(file, text);
  return { dir, file };
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig", () => {
  it("uses upstream ASU's defaults when there is no file", () => {
    const dir = tempDir();
    const config = loadConfig({ cwd: dir, env: {} });
    expect(config).toMatchObject({
      upstream_url: "https://downloads.openwrt.org",
      public_path: path.join(dir, "public"),
      allow_defaults: false,
      max_custom_rootfs_size_mb: 1024,
      max_defaults_length: 20480,
      repository_allow_list: [],
      max_pending_jobs: 200,
      job_timeout: 600,
      build_ttl: 7 * 86400,
      build_ttl_unversioned: 86400,
      build_defaults_ttl: 1800,
      build_failure_ttl: 3600,
      port: 8000,
      workers: 1,
      runner: "native",
      log_level: "info",
    });
    expect(config.redis_url).toBeUndefined();
  });

  it("gives every key with a default in the schema a value, so a new key needs no assembly code", () => {
    const config = loadConfig({ cwd: tempDir(), env: {} }) as unknown as Record<string, unknown>;
    const defaulted = Object.entries(RawConfigSchema.properties).filter(([, schema]) => "default" in schema);
    expect(defaulted.length).toBeGreaterThan(20);
    for (const [key] of defaulted) expect(config[key], key).toBeDefined();
    expect(config.store_backend).toBe("local");
    expect(config.shutdown_timeout).toBe(30);
  });

  it("reads the Python server's keys from asu.toml", () => {
    const { dir, file } = writeToml(`
upstream_url = "http://127.0.0.1:8001/"
public_path = "srv/public"
allow_defaults = true
max_pending_jobs = 5
job_timeout = "2m"
build_ttl = "3h"
repository_allow_list = ["https://feed.example.org/openwrt"]
log_level = "DEBUG"
port = 9000
`);
    const config = loadConfig({ file, cwd: dir, env: {} });
    expect(config.upstream_url).toBe("http://127.0.0.1:8001");
    expect(config.public_path).toBe(path.join(dir, "srv/public"));
    expect(config.allow_defaults).toBe(true);
    expect(config.max_pending_jobs).toBe(5);
    expect(config.job_timeout).toBe(120);
    expect(config.build_ttl).toBe(3 * 3600);
    expect(config.repository_allow_list).toEqual(["https://feed.example.org/openwrt"]);
    expect(config.log_level).toBe("debug");
    expect(config.port).toBe(9000);
  });

  it("finds the file through ASU_CONFIG", () => {
    const { dir, file } = writeToml("port = 8123\n");
    expect(loadConfig({ cwd: tempDir(), env: { ASU_CONFIG: file } }).port).toBe(8123);
    expect(loadConfig({ cwd: dir, env: {} }).port).toBe(8123);
  });

  it("lets upper-case environment variables override every top-level key", () => {
    const { dir, file } = writeToml(
      'port = 9000\nupstream_url = "http://a.example"\nallow_defaults = false\n',
    );
    const config = loadConfig({
      file,
      cwd: dir,
      env: {
        PORT: "9100",
        UPSTREAM_URL: "http://b.example",
        ALLOW_DEFAULTS: "true",
        REDIS_URL: "redis://127.0.0.1:6390/2",
        REPOSITORY_ALLOW_LIST: "https://x.example/a, https://y.example/b",
        JOB_TIMEOUT: "90s",
        WORKERS: "3",
        BRANCHES: JSON.stringify({ "24.10": { enabled: false } }),
      },
    });
    expect(config.port).toBe(9100);
    expect(config.upstream_url).toBe("http://b.example");
    expect(config.allow_defaults).toBe(true);
    expect(config.redis_url).toBe("redis://127.0.0.1:6390/2");
    expect(config.repository_allow_list).toEqual(["https://x.example/a", "https://y.example/b"]);
    expect(config.job_timeout).toBe(90);
    expect(config.workers).toBe(3);
    expect(config.branches["24.10"]?.enabled).toBe(false);
  });

  it("builds the default branch table from OpenWrt's data, with package changes and known keys", () => {
    const config = loadConfig({ cwd: tempDir(), env: {} });
    expect(Object.keys(config.branches).sort()).toEqual([
      "21.02",
      "22.03",
      "23.05",
      "24.10",
      "25.12",
      "SNAPSHOT",
    ]);
    const b2305 = config.branches["23.05"];
    expect(b2305).toMatchObject({
      path: "releases/{version}",
      branch_off_rev: 23069,
      snapshot: false,
      enabled: true,
    });
    expect(b2305?.package_manager).toBe("opkg");
    expect(b2305?.path_packages).toBe("releases/{version}/packages");
    // renames up to the branch-off revision only
    expect(b2305?.package_changes.map((c) => c.source)).toEqual([
      "firewall",
      "kmod-nft-nat6",
      "libustream-wolfssl",
      "px5g-wolfssl",
      "wpad-basic-wolfssl",
    ]);
    const snapshot = config.branches.SNAPSHOT;
    expect(snapshot?.snapshot).toBe(true);
    expect(snapshot?.package_manager).toBe("apk");
    expect(snapshot?.package_changes.length).toBe(9);
    expect(snapshot?.pubkey).toBe("RWS1BD5w+adc3j2Hqg9+b66CvLR7NlHbsj7wjNVj0XGt/othDgIAOJS+");
    expect(config.branches["21.02"]?.pubkey).toBe("RWQviwuY4IMGvwLfs6842A0m4EZU1IjczTxKMSk3BQP8DAQLHBwdQiaU");
    expect(config.branches["24.10"]?.pubkey).toBeUndefined();
  });

  it("merges [branches.NAME] over the defaults and adds new branches", () => {
    const key = generateKeyPair();
    const { dir, file } = writeToml(`
[branches."24.10"]
pubkey = "${key.publicLine}"

[branches.testing]
path = "testing/{version}"
snapshot = false
`);
    const config = loadConfig({ file, cwd: dir, env: {} });
    expect(config.branches["24.10"]).toMatchObject({
      path: "releases/{version}",
      branch_off_rev: 27990,
      pubkey: key.publicLine,
    });
    expect(config.branches.testing).toMatchObject({
      path: "testing/{version}",
      enabled: true,
      package_manager: "opkg",
    });
  });

  it("lists every bad key in one error", () => {
    const { dir, file } = writeToml(`
upstream_url = "ftp://nope"
port = "eighty"
job_timeout = "soon"
max_pending_jobs = -1
runner = "docker"
log_level = "loud"
unknown_key = 1
repository_allow_list = ["not a url"]
redis_url = "localhost:6379"

[branches."24.10"]
pubkey = "not-a-key"
colour = "red"

[branches.mine]
enabled = true
`);
    const problems = problemsOf(() => loadConfig({ file, cwd: dir, env: {} }));
    const text = problems.join("\n");
    expect(text).toContain("port: ");
    expect(text).toContain("max_pending_jobs: ");
    expect(text).toContain("runner: ");
    expect(text).toContain("unknown_key: unknown key");
    expect(text).toContain("branches.24.10.colour: unknown key");
    // schema problems are reported first; then the checks that need valid types
    const fixed = writeToml(`
upstream_url = "ftp://nope"
job_timeout = "soon"
log_level = "loud"
repository_allow_list = ["not a url"]
redis_url = "localhost:6379"

[branches."24.10"]
pubkey = "not-a-key"

[branches.mine]
enabled = true
`);
    const second = problemsOf(() => loadConfig({ file: fixed.file, cwd: fixed.dir, env: {} }));
    expect(second).toEqual(
      expect.arrayContaining([
        'job_timeout: "soon" is not a duration; write it like "30m", "24h" or "7d"',
        'upstream_url: "ftp://nope" is not an http(s) URL',
        'repository_allow_list[0]: "not a url" is not an http(s) URL',
        'redis_url: "localhost:6379" must start with redis://, rediss:// or unix://',
        'branches.mine.path: required for a branch OpenWrt does not publish, e.g. "releases/{version}"',
        'branches.24.10.pubkey: not a usign/signify public key; give the base64 line of the .pub file (it starts with "RW")',
      ]),
    );
    expect(second.some((p) => p.startsWith("log_level: "))).toBe(true);
    expect(second).toHaveLength(7);
  });

  it("reports bad environment values by variable name", () => {
    const problems = problemsOf(() =>
      loadConfig({ cwd: tempDir(), env: { PORT: "http", ALLOW_DEFAULTS: "maybe", BRANCHES: "{not json" } }),
    );
    expect([...problems].sort()).toEqual([
      'allow_defaults (from env ALLOW_DEFAULTS): "maybe" is not true or false',
      "branches (from env BRANCHES): is not valid JSON",
      'port (from env PORT): "http" is not a whole number',
    ]);
  });

  it("refuses a config file named explicitly that does not exist, and invalid TOML", () => {
    expect(problemsOf(() => loadConfig({ file: "/nonexistent/asu.toml", env: {} }))[0]).toContain(
      "config file /nonexistent/asu.toml does not exist (from --config)",
    );
    const { dir, file } = writeToml("port = [");
    expect(problemsOf(() => loadConfig({ file, cwd: dir, env: {} }))[0]).toContain("not valid TOML");
  });
});

describe("parseDuration", () => {
  it("reads upstream's duration strings", () => {
    expect(parseDuration("10m")).toBe(600);
    expect(parseDuration("24h")).toBe(86400);
    expect(parseDuration("7d")).toBe(604800);
    expect(parseDuration("1h30m")).toBe(5400);
    expect(parseDuration("45")).toBe(45);
    expect(parseDuration(30)).toBe(30);
    expect(parseDuration("soon")).toBeUndefined();
    expect(parseDuration("0m")).toBeUndefined();
    expect(parseDuration("-5")).toBeUndefined();
  });

  it("reads events_heartbeat: 15 s by default, fractions for tests, a bad value refused by name", () => {
    expect(loadConfig({ cwd: "/nonexistent", env: {} }).events_heartbeat).toBe(15);
    expect(loadConfig({ cwd: "/nonexistent", env: { EVENTS_HEARTBEAT: "0.2" } }).events_heartbeat).toBe(0.2);
    expect(() => loadConfig({ cwd: "/nonexistent", env: { EVENTS_HEARTBEAT: "soon" } })).toThrow(
      'events_heartbeat: "soon" is not a duration',
    );
  });
});

describe("trust_proxy", () => {
  const load = (toml: string, env: Record<string, string> = {}) => {
    const { dir, file } = writeToml(toml);
    return loadConfig({ file, cwd: dir, env }).trust_proxy;
  };

  it("keeps reading booleans: false trusts nobody, true exactly one proxy hop", () => {
    expect(loadConfig({ cwd: tempDir(), env: {} }).trust_proxy).toBe(false);
    expect(load("trust_proxy = false")).toBe(false);
    expect(load("trust_proxy = true")).toBe(1);
  });

  it("reads a number of proxies and a list of proxy addresses or networks", () => {
    expect(load("trust_proxy = 2")).toBe(2);
    expect(load("trust_proxy = 0")).toBe(false);
    expect(load('trust_proxy = ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8", "loopback"]')).toEqual([
      "127.0.0.1",
      "10.0.0.0/8",
      "::1",
      "fd00::/8",
      "loopback",
    ]);
  });

  it("reads TRUST_PROXY from the environment as a boolean, a number or a list", () => {
    const env = (value: string) => loadConfig({ cwd: tempDir(), env: { TRUST_PROXY: value } }).trust_proxy;
    expect(env("true")).toBe(1);
    expect(env("off")).toBe(false);
    expect(env("3")).toBe(3);
    expect(env("127.0.0.1, 10.0.0.0/8")).toEqual(["127.0.0.1", "10.0.0.0/8"]);
    expect(env('["192.0.2.1"]')).toEqual(["192.0.2.1"]);
  });

  it("refuses what is not an address, a network or a hop count, naming each", () => {
    const { dir, file } = writeToml('trust_proxy = ["10.0.0.0/33", "proxy.example", "1.2.3.4"]');
    const problems = problemsOf(() => loadConfig({ file, cwd: dir, env: {} }));
    expect(problems.join("\n")).toContain('trust_proxy[0]: "10.0.0.0/33"');
    expect(problems.join("\n")).toContain('trust_proxy[1]: "proxy.example"');
    expect(problems.join("\n")).not.toContain("trust_proxy[2]");
    expect(problemsOf(() => load("trust_proxy = -1")).join("\n")).toContain("trust_proxy");
    expect(problemsOf(() => load('trust_proxy = "yes please"')).join("\n")).toContain("trust_proxy");
  });
});

describe("image signing keys", () => {
  /** A folder with executable stand-ins for the three tools (config only checks they exist). */
  function toolsDir(dir: string, names = ["usign", "ucert", "fwtool"]): string {
    const tools = path.join(dir, "host-bin");
    mkdirSync(tools, { recursive: true });
    for (const name of names) writeFileSync(path.join(tools, name), "#!/bin/sh\n", { mode: 0o755 });
    return tools;
  }

  it("takes <signing_key>.ucert as the certificate and finds the tools on PATH, as upstream does", () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "key-build"), generateKeyPair().secretFile);
    writeFileSync(path.join(dir, "key-build.ucert"), "cert");
    const tools = toolsDir(dir);
    const config = loadConfig({ cwd: dir, env: { SIGNING_KEY: "key-build", PATH: `/nonexistent:${tools}` } });
    expect(config.signing_key).toBe(path.join(dir, "key-build"));
    expect(config.signing_cert).toBe(path.join(dir, "key-build.ucert"));
    expect(config.signing_tools).toEqual({
      usign: path.join(tools, "usign"),
      ucert: path.join(tools, "ucert"),
      fwtool: path.join(tools, "fwtool"),
    });
  });

  it("reads signing_cert and signing_tools_dir from asu.toml or the environment", () => {
    const { dir } = writeToml('signing_key = "k"\nsigning_cert = "certs/build.ucert"\n');
    writeFileSync(path.join(dir, "k"), generateKeyPair().secretFile);
    mkdirSync(path.join(dir, "certs"));
    writeFileSync(path.join(dir, "certs", "build.ucert"), "cert");
    const tools = toolsDir(dir);
    const config = loadConfig({ cwd: dir, env: { SIGNING_TOOLS_DIR: tools, PATH: "" } });
    expect(config.signing_cert).toBe(path.join(dir, "certs", "build.ucert"));
    expect(config.signing_tools_dir).toBe(tools);
    expect(config.signing_tools?.fwtool).toBe(path.join(tools, "fwtool"));
  });

  it("without a certificate, signs detached only and needs no tools", () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "k"), generateKeyPair().secretFile);
    const config = loadConfig({ cwd: dir, env: { SIGNING_KEY: "k", PATH: "" } });
    expect(config.signing_key).toBe(path.join(dir, "k"));
    expect(config.signing_cert).toBeUndefined();
    expect(config.signing_tools).toBeUndefined();
  });

  it("lists every signing problem in one message at boot", () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "not-a-key"), "secret\n");
    const tools = toolsDir(dir, ["usign"]);
    const problems = problemsOf(() =>
      loadConfig({
        cwd: dir,
        env: { SIGNING_KEY: "not-a-key", SIGNING_CERT: "missing.ucert", SIGNING_TOOLS_DIR: tools },
      }),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^signing_key: .*not-a-key is not a usable usign secret key .*usign -G/),
      `signing_cert: file ${path.join(dir, "missing.ucert")} does not exist`,
      expect.stringMatching(
        /^signing_tools_dir: no executable ucert in .*host-bin; .*staging_dir\/host\/bin/,
      ),
      expect.stringMatching(/^signing_tools_dir: no executable fwtool in /),
    ]);
  });

  it("reports a missing key, a tools folder that is not one, and a certificate without a key", () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "k.ucert"), "cert");
    expect(
      problemsOf(() => loadConfig({ cwd: dir, env: { SIGNING_KEY: "k", SIGNING_TOOLS_DIR: "nope" } })),
    ).toEqual([
      `signing_key: file ${path.join(dir, "k")} does not exist`,
      `signing_tools_dir: ${path.join(dir, "nope")} is not a folder`,
    ]);
    expect(problemsOf(() => loadConfig({ cwd: dir, env: { SIGNING_CERT: "k.ucert" } }))).toEqual([
      "signing_cert: set, but signing_key is not; images are only signed with signing_key",
    ]);
  });

  it("finds no tools on an empty PATH", () => {
    const dir = tempDir();
    writeFileSync(path.join(dir, "k"), generateKeyPair().secretFile);
    writeFileSync(path.join(dir, "k.ucert"), "cert");
    const problems = problemsOf(() => loadConfig({ cwd: dir, env: { SIGNING_KEY: "k", PATH: "" } }));
    expect(problems).toHaveLength(3);
    expect(problems[0]).toMatch(/^signing_tools_dir: no executable usign on PATH; signing_cert needs/);
  });
});

describe("store_backend and the s3_* keys", () => {
  it("defaults to the local store", () => {
    const config = loadConfig({ cwd: tempDir(), env: {} });
    expect(config.store_backend).toBe("local");
    expect(config.s3).toBeUndefined();
  });

  it("reads upstream ASU's S3 keys from asu.toml, with environment overrides", () => {
    const { dir } = writeToml(
      [
        'store_backend = "s3"',
        's3_endpoint = "http://127.0.0.1:9000/"',
        's3_bucket = "asu-images"',
        's3_access_key = "from-file"',
        's3_secret_key = "secret"',
        's3_public_url = "https://dl.example.org/asu/"',
      ].join("\n"),
    );
    const config = loadConfig({ cwd: dir, env: { S3_ACCESS_KEY: "from-env", S3_REGION: "eu-central-1" } });
    expect(config.store_backend).toBe("s3");
    expect(config.s3).toEqual({
      endpoint: "http://127.0.0.1:9000",
      bucket: "asu-images",
      access_key: "from-env",
      secret_key: "secret",
      region: "eu-central-1",
      public_url: "https://dl.example.org/asu",
    });
  });

  it("lists every bad S3 key in one boot error", () => {
    const problems = problemsOf(() =>
      loadConfig({
        cwd: tempDir(),
        env: { STORE_BACKEND: "s3", S3_ENDPOINT: "minio:9000", S3_PUBLIC_URL: "ftp://x", S3_ACCESS_KEY: "k" },
      }),
    );
    expect(problems).toEqual([
      's3_bucket: required when store_backend = "s3"',
      's3_endpoint: "minio:9000" is not an http(s) URL',
      's3_public_url: "ftp://x" is not an http(s) URL',
      "s3_access_key, s3_secret_key: give both, or neither to use the AWS credential chain (env, profile, role)",
    ]);
    expect(problemsOf(() => loadConfig({ cwd: tempDir(), env: { STORE_BACKEND: "gcs" } }))[0]).toMatch(
      /^store_backend: /,
    );
  });
});

describe("upstream_cache_max_bytes (issue #13)", () => {
  it("defaults to 256 MiB, is read from the environment and refuses less than 1 MiB", () => {
    const dir = tempDir();
    expect(loadConfig({ cwd: dir, env: {} }).upstream_cache_max_bytes).toBe(256 * 1024 * 1024);
    const env = { UPSTREAM_CACHE_MAX_BYTES: "67108864" };
    expect(loadConfig({ cwd: dir, env }).upstream_cache_max_bytes).toBe(64 * 1024 * 1024);
    const problems = problemsOf(() => loadConfig({ cwd: dir, env: { UPSTREAM_CACHE_MAX_BYTES: "1000" } }));
    expect(problems.join("\n")).toMatch(/upstream_cache_max_bytes/);
  });
});
