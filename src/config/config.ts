import { accessSync, constants as fsConstants, existsSync, readFileSync, statSync } from "node:fs";
import { isIP } from "node:net";
import path from "node:path";
import { parse as parseToml } from "smol-toml";
import Type, { type Static, type TOptional, type TSchema } from "typebox";
import { Value } from "typebox/value";
import { ConfigError } from "../shared/errors.js";
import { parseSecretKey } from "../shared/usign.js";
import { parseDuration } from "./duration.js";
import {
  loadPackageChanges,
  loadUsignKeys,
  packageChangesFor,
  type PackageChange,
} from "./package-changes.js";

const PackageChangeSchema = Type.Object(
  {
    source: Type.Optional(Type.String()),
    target: Type.Optional(Type.String()),
    revision: Type.Integer({ minimum: 0 }),
    mandatory: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

const BranchSchema = Type.Object(
  {
    path: Type.Optional(Type.String({ minLength: 1 })),
    path_packages: Type.Optional(Type.String({ minLength: 1 })),
    enabled: Type.Optional(Type.Boolean()),
    snapshot: Type.Optional(Type.Boolean()),
    branch_off_rev: Type.Optional(Type.Integer({ minimum: 0 })),
    package_changes: Type.Optional(Type.Array(PackageChangeSchema)),
    package_manager: Type.Optional(Type.Union([Type.Literal("opkg"), Type.Literal("apk")])),
    pubkey: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

const DurationSchema = () => Type.Union([Type.String(), Type.Number()]);

/**
 * How loadConfig turns a key's asu.toml value into its AsuConfig value: a duration becomes
 * seconds, a path is resolved against the working folder; anything else is used as written.
 */
type KeyKind = "duration" | "path";

/** An optional key with its default; the default is written as in asu.toml. */
type Defaulted<T extends TSchema, K extends KeyKind | undefined> = TOptional<T> & {
  default: Static<T>;
  "x-asu-kind": K;
};

function withDefault<T extends TSchema, K extends KeyKind | undefined = undefined>(
  schema: T,
  value: Static<T>,
  kind?: K,
): Defaulted<T, K> {
  const optional = Type.Optional(schema);
  return Object.assign(optional, { default: value, "x-asu-kind": kind }) as Defaulted<T, K>;
}

const duration = (value: string) => withDefault(DurationSchema(), value, "duration");

/**
 * The keys of asu.toml: upstream ASU's keys first, then asu-ts's own. A key with a default
 * (`withDefault`) appears in AsuConfig under its own name; adding one is one line here plus
 * its line in the README. Keys without a default are resolved by hand in loadConfig.
 */
export const RawConfigSchema = Type.Object(
  {
    upstream_url: withDefault(Type.String(), "https://downloads.openwrt.org"),
    public_path: withDefault(Type.String({ minLength: 1 }), "public", "path"),
    /** Unset means "use localhost:6379, or start an embedded redis-server if none answers". */
    redis_url: Type.Optional(Type.String()),
    allow_defaults: withDefault(Type.Boolean(), false),
    max_custom_rootfs_size_mb: withDefault(Type.Integer({ minimum: 1 }), 1024),
    max_defaults_length: withDefault(Type.Integer({ minimum: 0 }), 20480),
    repository_allow_list: withDefault(Type.Array(Type.String()), []),
    max_pending_jobs: withDefault(Type.Integer({ minimum: 0 }), 200),
    // Durations: "90s", "10m", "24h", "7d" or seconds; AsuConfig holds seconds.
    job_timeout: duration("10m"),
    build_ttl: duration("7d"),
    build_ttl_unversioned: duration("24h"),
    build_defaults_ttl: duration("30m"),
    build_failure_ttl: duration("1h"),
    server_stats: withDefault(Type.String(), "/stats"),
    log_level: withDefault(Type.String(), "info"),
    branches: Type.Optional(Type.Record(Type.String(), BranchSchema)),
    // asu-ts keys
    host: withDefault(Type.String({ minLength: 1 }), "127.0.0.1"),
    port: withDefault(Type.Integer({ minimum: 0, maximum: 65535 }), 8000),
    workers: withDefault(Type.Integer({ minimum: 0, maximum: 64 }), 1),
    runner: withDefault(Type.Union([Type.Literal("native"), Type.Literal("podman")]), "native"),
    allow_unsandboxed: withDefault(Type.Boolean(), false),
    require_signatures: withDefault(Type.Boolean(), false),
    cache_path: withDefault(Type.String({ minLength: 1 }), "var/cache", "path"),
    signing_key: Type.Optional(Type.String()),
    // The ucert certificate of signing_key (upstream's key-build.ucert). With it, images that
    // carry fwtool metadata get an embedded signature that the router's sysupgrade checks;
    // without it, images get only the detached <image>.sig (docs/decisions/002).
    signing_cert: Type.Optional(Type.String()),
    signing_tools_dir: Type.Optional(Type.String()),
    /** New (uncached) builds per client address per minute; 0 turns the limit off. */
    build_rate_limit: withDefault(Type.Integer({ minimum: 0 }), 30),
    /** Cap on captured stdout/stderr per command. */
    max_log_bytes: withDefault(Type.Integer({ minimum: 1024 }), 4 * 1024 * 1024),
    /** Disk budget for the store; 0 = none (expired builds are still removed). */
    store_max_bytes: withDefault(Type.Integer({ minimum: 0 }), 0),
    /** Bytes of upstream documents (indexes, profiles) kept in memory; the least recently fetched go first. */
    upstream_cache_max_bytes: withDefault(Type.Integer({ minimum: 1024 * 1024 }), 256 * 1024 * 1024),
    /** Prefix of every Redis key, so several servers can share one Redis. */
    redis_prefix: withDefault(Type.String({ pattern: "^[\\w.-]+$" }), "asu"),
    /** A worker that stops renewing a build's lock this long is presumed dead; another takes the build over. */
    worker_lock_duration: duration("30s"),
    /** On SIGTERM/SIGINT, running builds get this long to finish before they are killed and released. */
    shutdown_timeout: duration("30s"),
    // false, true (one proxy hop), a number of proxy hops, or proxy addresses/networks.
    trust_proxy: Type.Optional(
      Type.Union([Type.Boolean(), Type.Integer({ minimum: 0 }), Type.Array(Type.String())]),
    ),
    /** How often a worker asks upstream whether an ImageBuilder changed (a new snapshot). */
    imagebuilder_check_interval: duration("1m"),
    /** Seconds between ": heartbeat" comments on build event streams, so proxies keep them open. */
    events_heartbeat: duration("15s"),
    // Where finished builds go (upstream ASU's keys). "local": files under public_path/store,
    // served by the API itself (API and workers must share that folder). "s3": a bucket every
    // API server and worker reaches (decision 006).
    store_backend: withDefault(Type.Union([Type.Literal("local"), Type.Literal("s3")]), "local"),
    s3_endpoint: Type.Optional(Type.String()),
    s3_access_key: Type.Optional(Type.String()),
    s3_secret_key: Type.Optional(Type.String()),
    s3_bucket: Type.Optional(Type.String()),
    s3_region: Type.Optional(Type.String()),
    s3_public_url: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

export type RawConfig = Static<typeof RawConfigSchema>;

type ConfigKeys = typeof RawConfigSchema.properties;
/** The keys that have a default, and so always have a value in AsuConfig. */
type DefaultedKey = {
  [K in keyof ConfigKeys]: ConfigKeys[K] extends { default: unknown } ? K : never;
}[keyof ConfigKeys];
type DurationKey = {
  [K in keyof ConfigKeys]: ConfigKeys[K] extends { "x-asu-kind": "duration" } ? K : never;
}[keyof ConfigKeys];
/** Keys with a default whose AsuConfig value is not the asu.toml value as written. */
type ResolvedKey = DurationKey | "log_level";

export interface BranchConfig {
  name: string;
  path: string;
  path_packages: string;
  enabled: boolean;
  snapshot: boolean;
  branch_off_rev?: number;
  package_changes: PackageChange[];
  package_manager: "opkg" | "apk";
  /** usign public key (base64 line) that signs this branch's sha256sums; undefined = none known. */
  pubkey?: string;
}

/** Absolute paths of OpenWrt's host tools that embed image signatures. */
export interface SigningTools {
  usign: string;
  ucert: string;
  fwtool: string;
}

export const SIGNING_TOOL_NAMES = ["usign", "ucert", "fwtool"] as const;

export type TrustProxy = false | number | string[];

export type LogLevel = "trace" | "debug" | "info" | "warn" | "error" | "fatal" | "silent";

/** Keys with a default, as written in asu.toml (paths resolved). */
type PlainKeys = { [K in Exclude<DefaultedKey, ResolvedKey>]: NonNullable<RawConfig[K]> };
/** Durations, in seconds. */
type DurationKeys = { [K in DurationKey]: number };

/** The checked configuration: every key with a default, plus what loadConfig resolves by hand. */
export interface AsuConfig extends PlainKeys, DurationKeys {
  log_level: LogLevel;
  /** undefined means "use localhost:6379, or start an embedded redis-server if none answers". */
  redis_url?: string;
  branches: Record<string, BranchConfig>;
  signing_key?: string;
  /** See `signing_cert` in the schema. */
  signing_cert?: string;
  /** The folder from `signing_tools_dir`, if given; `signing_tools` holds what was found. */
  signing_tools_dir?: string;
  /** usign, ucert and fwtool, resolved at boot; set whenever `signing_cert` is. */
  signing_tools?: SigningTools;
  /**
   * Which X-Forwarded-For entries to believe, counted from the right (the entry the nearest
   * proxy appended): false = none (the socket address is the client); a number = that many
   * proxy hops (`true` in asu.toml means 1); a list = the proxies' addresses or networks.
   */
  trust_proxy: TrustProxy;
  /** The asu.toml that was read, if any; hidden from builds. */
  config_file?: string;
  /** Set when store_backend is "s3". */
  s3?: S3Config;
}

export interface S3Config {
  /** undefined = AWS; otherwise an S3-compatible server, addressed path-style. */
  endpoint?: string;
  access_key?: string;
  secret_key?: string;
  bucket: string;
  region: string;
  /** Public base URL of the bucket; without it downloads redirect to presigned URLs. */
  public_url?: string;
}

const LOG_LEVELS: Record<string, LogLevel> = {
  trace: "trace",
  debug: "debug",
  info: "info",
  warn: "warn",
  warning: "warn",
  error: "error",
  critical: "fatal",
  fatal: "fatal",
  silent: "silent",
};

export interface LoadConfigOptions {
  /** Path from `--config`; falls back to ASU_CONFIG, then ./asu.toml (optional). */
  file?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Values that win over file and environment (tests use this). */
  overrides?: Partial<RawConfig>;
}

/** Reads asu.toml and environment overrides, checks every key, and lists every problem at once. */
export function loadConfig(options: LoadConfigOptions = {}): AsuConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  const problems: string[] = [];

  const explicit = options.file ?? env.ASU_CONFIG;
  const file = path.resolve(cwd, explicit ?? "asu.toml");
  let raw: Record<string, unknown> = {};
  if (existsSync(file)) {
    try {
      raw = parseToml(readFileSync(file, "utf8")) as Record<string, unknown>;
    } catch (err) {
      throw new ConfigError([`${file}: not valid TOML: ${(err as Error).message.split("\n")[0]}`]);
    }
  } else if (explicit !== undefined) {
    throw new ConfigError([
      `config file ${file} does not exist (from ${options.file ? "--config" : "ASU_CONFIG"})`,
    ]);
  }

  for (const key of Object.keys(RawConfigSchema.properties)) {
    const value = env[key.toUpperCase()];
    if (value === undefined || value === "") continue;
    const coerced =
      key === "trust_proxy"
        ? coerceTrustProxyEnv(value)
        : coerceEnv(key, value, RawConfigSchema.properties[key as keyof RawConfig]);
    if (coerced.ok) raw[key] = coerced.value;
    else problems.push(`${key} (from env ${key.toUpperCase()}): ${coerced.error}`);
  }
  Object.assign(raw, options.overrides ?? {});

  for (const error of Value.Errors(RawConfigSchema, raw)) {
    problems.push(describeSchemaError(error.instancePath, error.message, error.params));
  }
  if (problems.length > 0) throw new ConfigError(problems);

  // Value.Default fills in every key that has a default (copies, so [] is never shared).
  const conf = Value.Default(RawConfigSchema, structuredClone(raw)) as RawConfig & {
    [K in DefaultedKey]: NonNullable<RawConfig[K]>;
  };

  const plain: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(RawConfigSchema.properties)) {
    if (!("default" in schema)) continue;
    const value = conf[key as DefaultedKey];
    switch (schema["x-asu-kind"]) {
      case "duration": {
        const seconds = parseDuration(value as RawConfig[DurationKey] & {});
        if (seconds === undefined) {
          problems.push(`${key}: "${value}" is not a duration; write it like "30m", "24h" or "7d"`);
        }
        plain[key] = seconds ?? 0;
        break;
      }
      case "path":
        plain[key] = path.resolve(cwd, value as string);
        break;
      default:
        plain[key] = value;
    }
  }

  const upstream = conf.upstream_url;
  if (!isHttpUrl(upstream)) problems.push(`upstream_url: "${upstream}" is not an http(s) URL`);

  for (const [i, entry] of conf.repository_allow_list.entries()) {
    if (!isHttpUrl(entry)) problems.push(`repository_allow_list[${i}]: "${entry}" is not an http(s) URL`);
  }
  if (conf.redis_url !== undefined && !/^rediss?:\/\/|^unix:\/\//.test(conf.redis_url)) {
    problems.push(`redis_url: "${conf.redis_url}" must start with redis://, rediss:// or unix://`);
  }

  const log_level = LOG_LEVELS[conf.log_level.toLowerCase()];
  if (!log_level) {
    problems.push(`log_level: "${conf.log_level}" is not one of ${Object.keys(LOG_LEVELS).join(", ")}`);
  }

  const config = {
    ...(plain as unknown as PlainKeys & DurationKeys),
    upstream_url: upstream.replace(/\/+$/, ""),
    log_level: log_level ?? "info",
    branches: buildBranches(conf.branches ?? {}, problems),
    trust_proxy: trustProxy(conf.trust_proxy, problems),
  } satisfies AsuConfig as AsuConfig;
  if (existsSync(file)) config.config_file = file;
  if (conf.redis_url !== undefined) config.redis_url = conf.redis_url;
  Object.assign(config, signingSetup(conf, cwd, env, problems));
  const s3 = s3Setup(conf, problems);
  if (s3) config.s3 = s3;

  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/** The s3_* keys, checked together when store_backend is "s3" so one boot message lists all. */
function s3Setup(conf: RawConfig, problems: string[]): S3Config | undefined {
  if (conf.store_backend !== "s3") return undefined;
  const given = (value: string | undefined): value is string => value !== undefined && value !== "";
  if (!given(conf.s3_bucket)) {
    problems.push(`s3_bucket: required when store_backend = "s3"`);
  } else if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(conf.s3_bucket)) {
    problems.push(
      `s3_bucket: "${conf.s3_bucket}" is not a valid bucket name (3 to 63 of a-z, 0-9, "." and "-")`,
    );
  }
  for (const key of ["s3_endpoint", "s3_public_url"] as const) {
    const value = conf[key];
    if (given(value) && !isHttpUrl(value)) problems.push(`${key}: "${value}" is not an http(s) URL`);
  }
  if (given(conf.s3_access_key) !== given(conf.s3_secret_key)) {
    problems.push(
      "s3_access_key, s3_secret_key: give both, or neither to use the AWS credential chain (env, profile, role)",
    );
  }
  const config: S3Config = {
    bucket: conf.s3_bucket ?? "",
    region: given(conf.s3_region) ? conf.s3_region : "us-east-1",
  };
  if (given(conf.s3_endpoint)) config.endpoint = conf.s3_endpoint.replace(/\/+$/, "");
  if (given(conf.s3_access_key)) config.access_key = conf.s3_access_key;
  if (given(conf.s3_secret_key)) config.secret_key = conf.s3_secret_key;
  if (given(conf.s3_public_url)) config.public_url = conf.s3_public_url.replace(/\/+$/, "");
  return config;
}

/**
 * `signing_key`, `signing_cert` and `signing_tools_dir`, checked together so that one boot
 * message names every problem: a key that is missing or not an unencrypted usign secret key,
 * a certificate that cannot be read, and each tool that cannot be found.
 */
function signingSetup(
  conf: RawConfig,
  cwd: string,
  env: NodeJS.ProcessEnv,
  problems: string[],
): Pick<AsuConfig, "signing_key" | "signing_cert" | "signing_tools_dir" | "signing_tools"> {
  const given = (value: string | undefined): value is string => value !== undefined && value !== "";
  if (!given(conf.signing_key)) {
    if (given(conf.signing_cert)) {
      problems.push("signing_cert: set, but signing_key is not; images are only signed with signing_key");
    }
    return {};
  }
  const key = path.resolve(cwd, conf.signing_key);
  const result: ReturnType<typeof signingSetup> = { signing_key: key };
  const keyText = readConfigFile(key, "signing_key", problems);
  if (keyText !== undefined) {
    try {
      parseSecretKey(keyText);
    } catch (err) {
      problems.push(
        `signing_key: ${key} is not a usable usign secret key (${(err as Error).message}); make one with \`usign -G\``,
      );
    }
  }

  // Upstream ASU (and OpenWrt's image build) take the certificate from <key>.ucert.
  let cert: string | undefined;
  if (given(conf.signing_cert)) {
    cert = path.resolve(cwd, conf.signing_cert);
    readConfigFile(cert, "signing_cert", problems);
  } else if (existsSync(`${key}.ucert`)) {
    cert = `${key}.ucert`;
    readConfigFile(cert, "signing_cert (default <signing_key>.ucert)", problems);
  }
  if (cert === undefined) return result;
  result.signing_cert = cert;

  let dirs: string[];
  if (given(conf.signing_tools_dir)) {
    const dir = path.resolve(cwd, conf.signing_tools_dir);
    result.signing_tools_dir = dir;
    dirs = [dir];
    if (!isDirectory(dir)) {
      problems.push(`signing_tools_dir: ${dir} is not a folder`);
      return result;
    }
  } else {
    dirs = (env.PATH ?? "")
      .split(path.delimiter)
      .filter((d) => d !== "")
      .map((d) => path.resolve(cwd, d));
  }
  const tools: Partial<SigningTools> = {};
  for (const name of SIGNING_TOOL_NAMES) {
    const found = dirs.map((d) => path.join(d, name)).find(isExecutableFile);
    if (found !== undefined) tools[name] = found;
    else {
      problems.push(
        `signing_tools_dir: no executable ${name} ${
          given(conf.signing_tools_dir) ? `in ${dirs[0]}` : "on PATH"
        }; signing_cert needs usign, ucert and fwtool (build them from OpenWrt's sources or take them from an ImageBuilder's staging_dir/host/bin)`,
      );
    }
  }
  if (tools.usign && tools.ucert && tools.fwtool) {
    result.signing_tools = { usign: tools.usign, ucert: tools.ucert, fwtool: tools.fwtool };
  }
  return result;
}

function readConfigFile(file: string, key: string, problems: string[]): string | undefined {
  try {
    if (!statSync(file).isFile()) {
      problems.push(`${key}: ${file} is not a file`);
      return undefined;
    }
    return readFileSync(file, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    problems.push(
      code === "ENOENT"
        ? `${key}: file ${file} does not exist`
        : `${key}: cannot read ${file} (${code ?? "error"})`,
    );
    return undefined;
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

function isExecutableFile(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The default branch table follows OpenWrt's (data/openwrt-package-changes.json); a
 * `[branches.NAME]` table in asu.toml overrides single fields of a known branch or adds a new one.
 */
function buildBranches(
  overrides: Record<string, Static<typeof BranchSchema>>,
  problems: string[],
): Record<string, BranchConfig> {
  const table = loadPackageChanges().branches;
  const keys = loadUsignKeys();
  const names = new Set([...Object.keys(table), ...Object.keys(overrides)]);
  const result: Record<string, BranchConfig> = {};
  for (const name of names) {
    const base = table[name];
    const over = overrides[name] ?? {};
    if (!base && !over.path) {
      problems.push(
        `branches.${name}.path: required for a branch OpenWrt does not publish, e.g. "releases/{version}"`,
      );
      continue;
    }
    if (!/^[\w.-]+$/.test(name)) {
      problems.push(`branches.${name}: branch names may contain only letters, digits, ".", "_" and "-"`);
      continue;
    }
    const snapshot = over.snapshot ?? base?.snapshot ?? false;
    const branchOffRev = over.branch_off_rev ?? base?.branch_off_rev;
    const branchPath = (over.path ?? base?.path) as string;
    const branch: BranchConfig = {
      name,
      path: branchPath,
      path_packages: over.path_packages ?? (snapshot ? "snapshots/packages" : `${branchPath}/packages`),
      enabled: over.enabled ?? true,
      snapshot,
      package_changes: over.package_changes ?? packageChangesFor(branchOffRev, snapshot),
      package_manager: over.package_manager ?? base?.package_manager ?? (snapshot ? "apk" : "opkg"),
    };
    if (branchOffRev !== undefined) branch.branch_off_rev = branchOffRev;
    const pubkey = over.pubkey ?? keys[name];
    if (pubkey !== undefined && pubkey !== "") {
      if (!isUsignPublicKey(pubkey)) {
        problems.push(
          `branches.${name}.pubkey: not a usign/signify public key; give the base64 line of the .pub file (it starts with "RW")`,
        );
      }
      branch.pubkey = pubkey.trim();
    }
    result[name] = branch;
  }
  return result;
}

/** A usign public key is base64 of "Ed" + 8-byte key id + 32-byte Ed25519 key. */
export function isUsignPublicKey(text: string): boolean {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed)) return false;
  const bytes = Buffer.from(trimmed, "base64");
  return bytes.length === 42 && bytes[0] === 0x45 && bytes[1] === 0x64;
}

/**
 * `true` keeps its old meaning, "behind one reverse proxy", as a hop count of 1: the client
 * is the entry that proxy appended, whatever the client wrote to the left of it (issue #9,
 * item 7). 0 is the same as false.
 */
function trustProxy(value: RawConfig["trust_proxy"], problems: string[]): TrustProxy {
  if (value === undefined || value === false || value === 0) return false;
  if (value === true) return 1;
  if (typeof value === "number") return value;
  for (const [i, entry] of value.entries()) {
    if (!isProxyAddress(entry)) {
      problems.push(
        `trust_proxy[${i}]: "${entry}" is not an IP address or network; write it like "10.0.0.1", "10.0.0.0/8", "fd00::/8" or "loopback"`,
      );
    }
  }
  return value.length === 0 ? false : value.map((entry) => entry.trim());
}

/** What Fastify's proxy-addr accepts: an address, address/prefix, IPv4 address/netmask, or a named range. */
export function isProxyAddress(text: string): boolean {
  const entry = text.trim();
  if (["loopback", "linklocal", "uniquelocal"].includes(entry)) return true;
  const slash = entry.indexOf("/");
  const address = slash === -1 ? entry : entry.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return false;
  if (slash === -1) return true;
  const range = entry.slice(slash + 1);
  if (/^\d{1,3}$/.test(range)) return Number(range) <= (version === 4 ? 32 : 128);
  return version === 4 && isIP(range) === 4;
}

/** TRUST_PROXY: a boolean word, a number of hops, a JSON list or comma-separated addresses. */
function coerceTrustProxyEnv(text: string): Coerced {
  const t = text.trim().toLowerCase();
  if (["true", "yes", "on"].includes(t)) return { ok: true, value: true };
  if (["false", "no", "off"].includes(t)) return { ok: true, value: false };
  if (/^\d+$/.test(t)) return { ok: true, value: Number(t) };
  if (t.startsWith("[")) return parseJson(text);
  return {
    ok: true,
    value: text
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
  };
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:";
  } catch {
    return false;
  }
}

type Coerced = { ok: true; value: unknown } | { ok: false; error: string };

function coerceEnv(key: string, text: string, schema: TSchema | undefined): Coerced {
  const kind = schemaKind(schema);
  switch (kind) {
    case "integer": {
      if (!/^-?\d+$/.test(text.trim())) return { ok: false, error: `"${text}" is not a whole number` };
      return { ok: true, value: Number(text) };
    }
    case "boolean": {
      const t = text.trim().toLowerCase();
      if (["1", "true", "yes", "on"].includes(t)) return { ok: true, value: true };
      if (["0", "false", "no", "off"].includes(t)) return { ok: true, value: false };
      return { ok: false, error: `"${text}" is not true or false` };
    }
    case "array": {
      if (text.trim().startsWith("[")) return parseJson(text);
      return {
        ok: true,
        value: text
          .split(",")
          .map((s) => s.trim())
          .filter(Boolean),
      };
    }
    case "object":
      return parseJson(text);
    default:
      void key;
      return { ok: true, value: text };
  }
}

function parseJson(text: string): Coerced {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false, error: "is not valid JSON" };
  }
}

function schemaKind(schema: TSchema | undefined): string {
  const s = schema as { type?: string; anyOf?: TSchema[] } | undefined;
  if (!s) return "string";
  if (s.type === "integer" || s.type === "number") return "integer";
  if (s.type === "boolean") return "boolean";
  if (s.type === "array") return "array";
  if (s.type === "object") return "object";
  return "string";
}

function describeSchemaError(instancePath: string, message: string, params: object): string {
  const key = instancePath.replace(/^\//, "").replace(/\//g, ".") || "(top level)";
  const extra = (params as { additionalProperties?: string[] }).additionalProperties;
  if (extra && extra.length > 0) {
    return extra.map((k) => `${key === "(top level)" ? k : `${key}.${k}`}: unknown key`).join("; ");
  }
  return `${key}: ${message}`;
}
