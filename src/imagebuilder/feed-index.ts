import { parseOpkgStanzas } from "../upstream/opkg-index.js";

/**
 * One package of a feed index, reduced to what the worker needs to know which files a build
 * may install: names it answers to, what it depends on, and where its file is.
 */
export interface FeedPackage {
  name: string;
  version: string;
  /** Each entry is a list of alternatives (`a | b`); any one satisfies it. */
  depends: string[][];
  /** Names this package also answers to (opkg `Provides:`, apk `provides`, without versions). */
  provides: string[];
  /** apk `install-if`: installed automatically once all of these are. */
  installIf: string[];
  /** The file name next to the index. */
  filename: string;
  /** sha256 of the whole file, when the index says it (opkg `SHA256sum:`). */
  sha256?: string;
  /** File size in bytes, when the index says it. */
  size?: number;
  /** A stable identity when the index has no file hash (apk's `hashes`). */
  identity?: string;
}

// A package or provided name as opkg and apk write them (also `so:libc.so.6`, `cmd:sh`).
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+:~-]{0,127}$/;
// What may be joined to a folder path: a plain file name, nothing that climbs or hides.
const FILE_NAME = /^[A-Za-z0-9_+][A-Za-z0-9_.+~%-]{0,254}$/;

/** `name (>= 1.0)`, `name>=1.0`, `name=1.0` → `name`; undefined for anything else. */
export function dependencyName(spec: string): string | undefined {
  const name = spec.trim().split(/[\s(<>=~]/, 1)[0] ?? "";
  return NAME.test(name) ? name : undefined;
}

/** Whether a string may be used as a file name inside a feed folder. */
export function isSafeFileName(name: string): boolean {
  return FILE_NAME.test(name) && name !== "." && name !== "..";
}

/** An opkg `Packages` file: every stanza with a name, a version and a safe `Filename`. */
export function parseOpkgFeed(text: string): FeedPackage[] {
  const out: FeedPackage[] = [];
  for (const stanza of parseOpkgStanzas(text)) {
    const name = stanza.Package;
    const version = stanza.Version;
    const filename = stanza.Filename;
    if (!name || !NAME.test(name) || version === undefined || !filename || !isSafeFileName(filename))
      continue;
    const pkg: FeedPackage = {
      name,
      version,
      depends: splitList(stanza.Depends).map((alt) =>
        alt
          .split("|")
          .map(dependencyName)
          .filter((n): n is string => n !== undefined),
      ),
      provides: splitList(stanza.Provides)
        .map(dependencyName)
        .filter((n): n is string => n !== undefined),
      installIf: [],
      filename,
    };
    const sha = stanza.SHA256sum?.toLowerCase();
    if (sha && /^[0-9a-f]{64}$/.test(sha)) pkg.sha256 = sha;
    const size = Number(stanza.Size);
    if (Number.isSafeInteger(size) && size >= 0) pkg.size = size;
    out.push(pkg);
  }
  return out;
}

function splitList(value: string | undefined): string[] {
  if (!value) return [];
  return value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * The JSON of `apk adbdump --format json packages.adb` (apk-tools 3): `{packages: [{name,
 * version, depends, provides, install-if, hashes, file-size}]}`. apk names a package's file
 * `<name>-<version>.apk` next to the index. Dependencies starting with `!` are conflicts.
 */
export function parseApkDump(json: string): FeedPackage[] {
  let data: unknown;
  try {
    data = JSON.parse(json);
  } catch {
    throw new Error("apk adbdump did not print JSON");
  }
  const list = isRecord(data) && Array.isArray(data.packages) ? data.packages : undefined;
  if (list === undefined) throw new Error("apk adbdump printed no package list");
  const out: FeedPackage[] = [];
  for (const entry of list) {
    if (!isRecord(entry)) continue;
    const { name, version } = entry;
    if (typeof name !== "string" || !NAME.test(name) || typeof version !== "string") continue;
    const filename = `${name}-${version}.apk`;
    if (!isSafeFileName(filename)) continue;
    const pkg: FeedPackage = {
      name,
      version,
      depends: strings(entry.depends)
        .filter((d) => !d.startsWith("!"))
        .map(dependencyName)
        .filter((n): n is string => n !== undefined)
        .map((n) => [n]),
      provides: strings(entry.provides)
        .map(dependencyName)
        .filter((n): n is string => n !== undefined),
      installIf: strings(entry["install-if"])
        .map(dependencyName)
        .filter((n): n is string => n !== undefined),
      filename,
    };
    const size = entry["file-size"];
    if (typeof size === "number" && Number.isSafeInteger(size) && size >= 0) pkg.size = size;
    if (typeof entry.hashes === "string" && /^[0-9a-f]{16,128}$/.test(entry.hashes))
      pkg.identity = entry.hashes;
    out.push(pkg);
  }
  return out;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((s): s is string => typeof s === "string") : [];
}

/**
 * Every package a build may install when asked for `wanted`: the packages named (by name or
 * by what they provide), everything they depend on through any alternative, and apk's
 * install-if packages whose conditions the selection meets. It over-approximates on purpose:
 * the package manager inside the build makes the real choice, and it must never miss a file.
 * Names that no feed has are left out; the package manager then says so in its own words.
 */
export function packageClosure<T extends FeedPackage>(
  packages: T[],
  wanted: string[],
  opts: { maxPackages: number },
): T[] {
  const byName = new Map<string, T[]>();
  const add = (key: string, pkg: T) => {
    const list = byName.get(key);
    if (list) list.push(pkg);
    else byName.set(key, [pkg]);
  };
  for (const pkg of packages) {
    add(pkg.name, pkg);
    for (const p of pkg.provides) add(p, pkg);
  }
  const selected = new Set<T>();
  const seenNames = new Set<string>();
  const queue: string[] = [];
  const want = (name: string) => {
    if (seenNames.has(name)) return;
    seenNames.add(name);
    queue.push(name);
  };
  const drain = () => {
    while (queue.length > 0) {
      const name = queue.pop() as string;
      for (const pkg of byName.get(name) ?? []) {
        if (selected.has(pkg)) continue;
        selected.add(pkg);
        if (selected.size > opts.maxPackages) {
          throw new Error(`the selection needs more than ${opts.maxPackages} packages`);
        }
        for (const alternatives of pkg.depends) for (const alt of alternatives) want(alt);
      }
    }
  };
  for (const raw of wanted) {
    const name = dependencyName(raw.replace(/^[+]/, ""));
    if (name !== undefined && !raw.startsWith("-")) want(name);
  }
  drain();
  const conditional = packages.filter((p) => p.installIf.length > 0);
  for (let changed = true; changed;) {
    changed = false;
    const names = new Set<string>();
    for (const pkg of selected) {
      names.add(pkg.name);
      for (const p of pkg.provides) names.add(p);
    }
    for (const pkg of conditional) {
      if (!selected.has(pkg) && pkg.installIf.every((n) => names.has(n))) {
        seenNames.delete(pkg.name);
        want(pkg.name);
        drain();
        changed = true;
      }
    }
  }
  return [...selected];
}
