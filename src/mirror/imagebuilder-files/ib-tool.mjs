#!/usr/bin/env node
// Stand-in for OpenWrt's own binaries inside the synthetic ImageBuilder of asu-ts's test mirror:
// opkg/apk (index download, signature check, dependency resolution, install, manifest),
// mksquashfs/make_ext4fs (size limits) and the image recipes. The Makefile next to it keeps
// OpenWrt's targets and variables; this file does the work.
//
// It ships inside the ImageBuilder archive, so it is plain Node.js with no dependencies and no
// imports from asu-ts. The mirror generator imports the same functions (package archives,
// index formats, images), so upstream metadata and what the ImageBuilder builds agree byte for byte.

import { createHash, createPublicKey, verify as ed25519Verify } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import zlib from "node:zlib";

// ---------------------------------------------------------------------------------------------
// small helpers

export function sha256(data) {
  return createHash("sha256").update(data).digest("hex");
}

/** OpenWrt's `sanitize` (rules.mk): spaces and "_" become "-", then lower case. */
export function sanitize(text) {
  return text.replace(/ /g, "-").replace(/_/g, "-").toLowerCase();
}

/** GNU make's $(sort): lexical order, duplicates dropped. */
function makeSort(list) {
  return [...new Set(list)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The IB Makefile's `filter-out` step: "-pkg" removes "pkg" and itself from the list. */
function filterMinus(list) {
  const minus = list.filter((p) => p.startsWith("-"));
  const drop = new Set([...minus, ...minus.map((p) => p.slice(1))]);
  return list.filter((p) => !drop.has(p));
}

function words(text) {
  return (text ?? "").split(/\s+/).filter((w) => w !== "");
}

function byName(a, b) {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// tar (ustar), deterministic: numeric owner 0 ("root"), fixed mtime, given order

const BLOCK = 512;

function writeString(buf, offset, length, text) {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length > length) throw new Error(`tar: field too long: ${text}`);
  bytes.copy(buf, offset);
}

function writeOctal(buf, offset, length, value) {
  writeString(buf, offset, length, value.toString(8).padStart(length - 1, "0") + "\0");
}

function splitTarName(name) {
  if (Buffer.byteLength(name) <= 100) return { name, prefix: "" };
  for (let i = name.length - 1; i > 0; i--) {
    if (name[i] !== "/") continue;
    const prefix = name.slice(0, i);
    const rest = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(rest) <= 100 && rest !== "") {
      return { name: rest, prefix };
    }
  }
  throw new Error(`tar: path too long: ${name}`);
}

function tarHeader(entry, mtime) {
  const header = Buffer.alloc(BLOCK);
  const fullName = entry.type === "dir" ? `${entry.path.replace(/\/$/, "")}/` : entry.path;
  const { name, prefix } = splitTarName(fullName);
  const size = entry.type === "file" ? entry.data.length : 0;
  writeString(header, 0, 100, name);
  writeOctal(header, 100, 8, entry.mode ?? (entry.type === "dir" ? 0o755 : 0o644));
  writeOctal(header, 108, 8, 0);
  writeOctal(header, 116, 8, 0);
  writeOctal(header, 124, 12, size);
  writeOctal(header, 136, 12, mtime);
  header.fill(0x20, 148, 156);
  header[156] = (entry.type === "dir" ? "5" : entry.type === "symlink" ? "2" : "0").charCodeAt(0);
  if (entry.type === "symlink") writeString(header, 157, 100, entry.target);
  writeString(header, 257, 6, "ustar\0");
  writeString(header, 263, 2, "00");
  writeString(header, 265, 32, "root");
  writeString(header, 297, 32, "root");
  writeOctal(header, 329, 8, 0);
  writeOctal(header, 337, 8, 0);
  writeString(header, 345, 155, prefix);
  let sum = 0;
  for (const byte of header) sum += byte;
  writeString(header, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return header;
}

/** Tar members for `entries` (no end-of-archive blocks), in the order given. */
export function tarMembers(entries, mtime) {
  const chunks = [];
  for (const entry of entries) {
    chunks.push(tarHeader(entry, mtime));
    if (entry.type === "file" && entry.data.length > 0) {
      chunks.push(entry.data);
      const pad = (BLOCK - (entry.data.length % BLOCK)) % BLOCK;
      if (pad) chunks.push(Buffer.alloc(pad));
    }
  }
  return Buffer.concat(chunks);
}

export const TAR_END = Buffer.alloc(2 * BLOCK);

/** A whole tar archive: entries in the order given, fixed mtime, owner root (0). */
export function createTar(entries, mtime) {
  return Buffer.concat([tarMembers(entries, mtime), TAR_END]);
}

function readString(buf, offset, length) {
  const end = buf.indexOf(0, offset);
  return buf.toString("utf8", offset, end === -1 || end > offset + length ? offset + length : end);
}

/** Reads a ustar/GNU tar archive into entries {path, type, mode, data?, target?}. */
export function parseTar(buf) {
  const entries = [];
  let offset = 0;
  let longName;
  while (offset + BLOCK <= buf.length) {
    const header = buf.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) break;
    const size = parseInt(readString(header, 124, 12).trim() || "0", 8);
    const typeFlag = String.fromCharCode(header[156] || 0x30);
    const data = buf.subarray(offset + BLOCK, offset + BLOCK + size);
    offset += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (typeFlag === "L") {
      longName = readString(data, 0, data.length);
      continue;
    }
    if (typeFlag === "x" || typeFlag === "g") continue;
    const prefix = readString(header, 345, 155);
    let name = longName ?? (prefix ? `${prefix}/${readString(header, 0, 100)}` : readString(header, 0, 100));
    longName = undefined;
    name = name.replace(/^\.\//, "").replace(/\/$/, "");
    if (name === "" || name === ".") continue;
    const mode = parseInt(readString(header, 100, 8).trim() || "0", 8) & 0o7777;
    if (typeFlag === "5") entries.push({ path: name, type: "dir", mode });
    else if (typeFlag === "2")
      entries.push({ path: name, type: "symlink", mode, target: readString(header, 157, 100) });
    else if (typeFlag === "0" || typeFlag === "\0")
      entries.push({ path: name, type: "file", mode, data: Buffer.from(data) });
  }
  return entries;
}

/** Rejects member paths that would land outside the folder they are unpacked into. */
function assertSafeMember(member) {
  if (member.startsWith("/") || member.split("/").includes("..")) {
    throw new Error(`refusing unsafe path in package archive: ${member}`);
  }
}

// gzip with a fixed header (mtime 0), so archives are reproducible
export function gzip(data) {
  return zlib.gzipSync(data, { level: 9 });
}

export function gunzip(data) {
  return zlib.gunzipSync(data);
}

// ---------------------------------------------------------------------------------------------
// usign (signify) signatures, as opkg-key and usign -V check them

function usignPayload(text) {
  const line = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => l !== "" && !l.startsWith("untrusted comment:"));
  if (!line || !/^[A-Za-z0-9+/]+={0,2}$/.test(line)) return undefined;
  return Buffer.from(line, "base64");
}

/** Checks `signatureText` over `message` with the key in `keysDir` named by the signature's key id. */
export function usignVerify(message, signatureText, keysDir) {
  const sig = usignPayload(signatureText);
  if (!sig || sig.length !== 74 || sig.toString("latin1", 0, 2) !== "Ed") {
    return { ok: false, reason: "Failed to decode signature" };
  }
  const keyId = sig.subarray(2, 10).toString("hex");
  const keyFile = path.join(keysDir, keyId);
  if (!fs.existsSync(keyFile)) return { ok: false, reason: `no key ${keyId} in ${keysDir}` };
  const pub = usignPayload(fs.readFileSync(keyFile, "utf8"));
  if (!pub || pub.length !== 42 || !pub.subarray(2, 10).equals(sig.subarray(2, 10))) {
    return { ok: false, reason: `bad public key file ${keyFile}` };
  }
  const key = createPublicKey({
    format: "jwk",
    key: { kty: "OKP", crv: "Ed25519", x: pub.subarray(10).toString("base64url") },
  });
  return ed25519Verify(null, Buffer.from(message), key, sig.subarray(10))
    ? { ok: true }
    : { ok: false, reason: "signature mismatch" };
}

// ---------------------------------------------------------------------------------------------
// package archives
//
// .ipk: gzip'd tar of ./debian-binary, ./control.tar.gz, ./data.tar.gz (as OpenWrt's ipkg-build).
// .apk: gzip'd tar of .PKGINFO followed by the data files (the apk v2 layout; real v3 packages
//       are ADB files, which nothing outside the ImageBuilder reads).

/**
 * @param {object} pkg {name, version, arch, depends[], provides[], conflicts[], abi, installedSize, description, section}
 * @param {Array<{path,type,mode,data?,target?}>} files installed files, paths without leading "/"
 * @param {"opkg"|"apk"} format
 */
export function buildPackageArchive(pkg, files, format, mtime) {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  if (format === "apk") {
    const info = [
      `pkgname = ${pkg.name}`,
      `pkgver = ${pkg.version}`,
      `pkgdesc = ${pkg.description}`,
      `arch = ${pkg.arch}`,
      `size = ${pkg.installedSize}`,
      ...pkg.depends.map((d) => `depend = ${d}`),
      ...pkg.provides.map((p) => `provides = ${p}`),
      ...pkg.conflicts.map((c) => `depend = !${c}`),
      "",
    ].join("\n");
    return gzip(
      createTar(
        [{ path: ".PKGINFO", type: "file", mode: 0o644, data: Buffer.from(info) }, ...withDirs(sorted)],
        mtime,
      ),
    );
  }
  const control = Buffer.from(formatControl(pkg, { withFileFields: false }));
  const controlTar = gzip(
    createTar([{ path: "./control", type: "file", mode: 0o644, data: control }], mtime),
  );
  const dataTar = gzip(
    createTar(
      withDirs(sorted).map((e) => ({ ...e, path: `./${e.path}` })),
      mtime,
    ),
  );
  return gzip(
    createTar(
      [
        { path: "./debian-binary", type: "file", mode: 0o644, data: Buffer.from("2.0\n") },
        { path: "./data.tar.gz", type: "file", mode: 0o644, data: dataTar },
        { path: "./control.tar.gz", type: "file", mode: 0o644, data: controlTar },
      ],
      mtime,
    ),
  );
}

const packageFilesCache = new WeakMap();

/** The files a package archive installs: [{path, type, mode, data?, target?}] without directories. */
export function readPackageFiles(archive, format) {
  const cached = packageFilesCache.get(archive);
  if (cached) return cached;
  const files = unpackPackageFiles(archive, format);
  packageFilesCache.set(archive, files);
  return files;
}

function unpackPackageFiles(archive, format) {
  const outer = parseTar(gunzip(archive));
  let members;
  if (format === "apk") {
    members = outer.filter((e) => e.path !== ".PKGINFO");
  } else {
    const data = outer.find((e) => e.path === "data.tar.gz");
    if (!data) throw new Error("not an ipk: data.tar.gz missing");
    members = parseTar(gunzip(data.data));
  }
  for (const m of members) assertSafeMember(m.path);
  return members.filter((m) => m.type !== "dir");
}

/** The given entries plus every parent folder, sorted by path. */
export function withDirs(entries) {
  const dirs = new Set();
  for (const e of entries) {
    const parts = e.path.split("/");
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
    if (e.type === "dir") dirs.add(e.path);
  }
  const all = [
    ...[...dirs].map((d) => ({ path: d, type: "dir", mode: 0o755 })),
    ...entries.filter((e) => e.type !== "dir"),
  ];
  return all.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

// ---------------------------------------------------------------------------------------------
// package indexes

function formatControl(pkg, { withFileFields, status }) {
  const lines = [`Package: ${pkg.name}`, `Version: ${pkg.version}`];
  if (pkg.depends.length) lines.push(`Depends: ${pkg.depends.join(", ")}`);
  if (pkg.provides.length) lines.push(`Provides: ${pkg.provides.join(", ")}`);
  if (pkg.conflicts.length) lines.push(`Conflicts: ${pkg.conflicts.join(", ")}`);
  if (status) lines.push(`Status: ${status}`);
  lines.push(`License: GPL-2.0-only`, `Section: ${pkg.section}`);
  if (pkg.abi) lines.push(`ABIVersion: ${pkg.abi}`);
  lines.push(`Architecture: ${pkg.arch}`, `Installed-Size: ${pkg.installedSize}`);
  if (withFileFields) {
    lines.push(`Filename: ${pkg.filename}`, `Size: ${pkg.size}`, `SHA256sum: ${pkg.sha256}`);
  }
  lines.push(`Description:  ${pkg.description}`);
  return lines.join("\n") + "\n";
}

/** opkg's `Packages` index (what ipkg-make-index.sh writes), sorted by package name. */
export function formatOpkgIndex(packages) {
  return [...packages]
    .sort(byName)
    .map((p) => formatControl(p, { withFileFields: true }))
    .join("\n");
}

function splitDepends(text) {
  return (text ?? "")
    .split(",")
    .map((d) => d.trim().split(/\s|\||\(/)[0])
    .filter((d) => d !== "");
}

/** Parses a `Packages` index (or opkg `status` file) into package objects. */
export function parseOpkgIndex(text) {
  const packages = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = {};
    let last;
    for (const line of stanza.split("\n")) {
      if (/^\s/.test(line) && last) {
        fields[last] += `\n${line.trim()}`;
        continue;
      }
      const m = /^([A-Za-z0-9-]+):\s?(.*)$/.exec(line);
      if (!m) continue;
      last = m[1];
      fields[last] = m[2];
    }
    if (!fields.Package) continue;
    packages.push({
      name: fields.Package,
      version: fields.Version ?? "",
      arch: fields.Architecture ?? "",
      depends: splitDepends(fields.Depends),
      provides: splitDepends(fields.Provides),
      conflicts: splitDepends(fields.Conflicts),
      abi: fields.ABIVersion ?? "",
      installedSize: Number(fields["Installed-Size"] ?? 0),
      filename: fields.Filename ?? "",
      size: Number(fields.Size ?? 0),
      sha256: fields.SHA256sum ?? "",
      section: fields.Section ?? "",
      description: (fields.Description ?? "").trim(),
      status: fields.Status ?? "",
    });
  }
  return packages;
}

// The apk index (packages.adb). Real ones are binary ADB files with an embedded signature;
// ours is a text envelope with the same property: the signature travels inside the file.
//   line 1: "ASU-FAKE-ADB 1"
//   line 2-3: a usign signature file ("untrusted comment: ..." + base64) over the payload
//   rest: the JSON payload {architecture, packages: [...]}
const ADB_MAGIC = "ASU-FAKE-ADB 1";

export function adbPayload(architecture, packages) {
  const list = [...packages].sort(byName).map((p) => ({
    name: p.name,
    version: p.version,
    arch: p.arch,
    depends: p.depends,
    provides: p.provides,
    conflicts: p.conflicts,
    installed_size: p.installedSize,
    filename: p.filename,
    size: p.size,
    sha256: p.sha256,
    section: p.section,
    description: p.description,
  }));
  return Buffer.from(JSON.stringify({ architecture, packages: list }, null, 1) + "\n");
}

export function formatAdb(payload, signatureText) {
  const sigLines = signatureText.trim().split("\n");
  if (sigLines.length !== 2) throw new Error("expected a two-line usign signature");
  return Buffer.concat([Buffer.from(`${ADB_MAGIC}\n${sigLines.join("\n")}\n`), payload]);
}

/** Splits packages.adb into {payload, signature}; undefined when it is not one of ours. */
export function splitAdb(buf) {
  let offset = 0;
  const lines = [];
  for (let i = 0; i < 3; i++) {
    const nl = buf.indexOf(0x0a, offset);
    if (nl === -1) return undefined;
    lines.push(buf.toString("utf8", offset, nl));
    offset = nl + 1;
  }
  if (lines[0] !== ADB_MAGIC) return undefined;
  return { signature: `${lines[1]}\n${lines[2]}\n`, payload: buf.subarray(offset) };
}

export function parseAdbPayload(payload) {
  const json = JSON.parse(payload.toString("utf8"));
  return json.packages.map((p) => ({
    name: p.name,
    version: p.version,
    arch: p.arch,
    depends: p.depends ?? [],
    provides: (p.provides ?? []).map((x) => x.split("=")[0]),
    providesRaw: p.provides ?? [],
    conflicts: p.conflicts ?? [],
    abi: "",
    installedSize: p.installed_size ?? 0,
    filename: p.filename,
    size: p.size ?? 0,
    sha256: p.sha256 ?? "",
    section: p.section ?? "",
    description: p.description ?? "",
    status: "",
  }));
}

// ---------------------------------------------------------------------------------------------
// package selection and dependency resolution (opkg and apk semantics)

/**
 * The package list the IB Makefile hands to opkg/apk: user packages first, then the sorted
 * default, profile and kernel packages; "-pkg" removes pkg (OpenWrt's BUILD_PACKAGES).
 */
export function buildPackageList(defaultPackages, profilePackages, userPackages) {
  let list = makeSort([...defaultPackages, ...profilePackages, "kernel"]);
  list = filterMinus(list);
  list = [...userPackages, ...list];
  return filterMinus(list);
}

/** Index of available packages: exact names, then providers. */
export function makeCatalog(packages) {
  const byNameMap = new Map();
  const providers = new Map();
  for (const p of packages) {
    if (!byNameMap.has(p.name)) byNameMap.set(p.name, p);
    for (const prov of p.provides) {
      if (!providers.has(prov)) providers.set(prov, []);
      providers.get(prov).push(p);
    }
  }
  for (const list of providers.values()) list.sort(byName);
  return {
    find(name) {
      return byNameMap.get(name) ?? providers.get(name)?.[0];
    },
    size: byNameMap.size,
  };
}

/**
 * Resolves `requested` (BUILD_PACKAGES order) with dependencies.
 * Returns {installed: [{pkg, user}] in install order (dependencies first), errors: [...]}.
 */
export function resolvePackages(catalog, requested) {
  const selected = new Map(); // name -> {pkg, user, requiredBy}
  const order = [];
  const errors = [];
  for (const name of requested) {
    const pkg = catalog.find(name);
    if (!pkg) {
      errors.push({ kind: "missing", name, requiredBy: "world" });
      continue;
    }
    // one transaction per requested package, as `opkg install a b c` handles each name
    const closure = new Map();
    const closureOrder = [];
    const unsatisfied = [];
    const visit = (p, requiredBy, asName) => {
      if (selected.has(p.name) || closure.has(p.name)) return;
      closure.set(p.name, { pkg: p, user: false, requiredBy, asName });
      for (const dep of p.depends) {
        const d = catalog.find(dep);
        if (!d) unsatisfied.push({ dep, parent: p });
        else visit(d, p, dep);
      }
      closureOrder.push(p.name);
    };
    visit(pkg, "world", name);
    if (selected.has(pkg.name)) {
      selected.get(pkg.name).user = true;
      continue;
    }
    if (unsatisfied.length) {
      errors.push({ kind: "unsatisfied", name: pkg.name, missing: unsatisfied });
      continue;
    }
    closure.get(pkg.name).user = true;
    for (const n of closureOrder) {
      selected.set(n, closure.get(n));
      order.push(n);
    }
  }
  // conflicts: reported on the package that declares them (dnsmasq-full declares dnsmasq)
  const reported = new Set();
  for (const n of order) {
    const { pkg } = selected.get(n);
    for (const c of pkg.conflicts) {
      for (const other of order) {
        if (other === n) continue;
        const o = selected.get(other).pkg;
        if (o.name === c || o.provides.includes(c)) {
          const key = `${pkg.name}\0${o.name}`;
          if (reported.has(key)) continue;
          reported.add(key);
          errors.push({ kind: "conflict", pkg, other: o, via: c });
        }
      }
    }
  }
  return { installed: order.map((n) => selected.get(n)), errors, selected };
}

function apkRef(entry) {
  if (entry.requiredBy === "world") return `world[${entry.asName}]`;
  return `${entry.requiredBy.name}-${entry.requiredBy.version}[${entry.asName}]`;
}

/** opkg's "Collected errors:" block, or apk's "unable to select packages" block. */
export function formatResolveErrors(errors, manager, selected) {
  if (manager === "apk") {
    const lines = ["ERROR: unable to select packages:"];
    const printed = new Set();
    for (const e of errors) {
      if (e.kind === "missing") {
        lines.push(`  ${e.name} (no such package):`, `    required by: world[${e.name}]`);
      } else if (e.kind === "unsatisfied") {
        for (const m of e.missing) {
          lines.push(
            `  ${m.dep} (no such package):`,
            `    required by: ${m.parent.name}-${m.parent.version}[${m.dep}]`,
          );
        }
      }
    }
    const conflicts = errors.filter((e) => e.kind === "conflict");
    const blocks = new Map();
    for (const e of conflicts) {
      const providedVersion = (p, name) => {
        const raw = (p.providesRaw ?? []).find((x) => x.split("=")[0] === name);
        return raw && raw.includes("=") ? raw.split("=")[1] : p.version;
      };
      const add = (p, other, ref) => {
        if (!blocks.has(p.name)) blocks.set(p.name, { p, conflicts: [] });
        blocks.get(p.name).conflicts.push(`${other.name}-${other.version}[${ref}]`);
      };
      add(e.pkg, e.other, `${e.via}=${e.other.version}`);
      add(e.other, e.pkg, `${e.via}=${providedVersion(e.pkg, e.via)}`);
    }
    const order = [...selected.keys()];
    for (const name of order) {
      const block = blocks.get(name);
      if (!block || printed.has(name)) continue;
      printed.add(name);
      lines.push(`  ${block.p.name}-${block.p.version}:`);
      lines.push(`    conflicts: ${block.conflicts.join(" ")}`);
      lines.push(`    satisfies: ${apkRef(selected.get(name))}`);
    }
    return lines.join("\n") + "\n";
  }
  const lines = ["Collected errors:"];
  for (const e of errors) {
    if (e.kind === "missing") {
      lines.push(` * opkg_install_cmd: Cannot install package ${e.name}.`);
    } else if (e.kind === "unsatisfied") {
      lines.push(` * satisfy_dependencies_for: Cannot satisfy the following dependencies for ${e.name}:`);
      for (const m of e.missing) lines.push(` * \t${m.dep}`);
      lines.push(` * opkg_install_cmd: Cannot install package ${e.name}.`);
    } else if (e.kind === "conflict") {
      lines.push(` * check_conflicts_for: The following packages conflict with ${e.pkg.name}:`);
      lines.push(` * check_conflicts_for: \t${e.other.name} *`);
      lines.push(` * opkg_install_cmd: Cannot install package ${e.pkg.name}.`);
    }
  }
  return lines.join("\n") + "\n";
}

// ---------------------------------------------------------------------------------------------
// installed-package database and manifest

/** opkg `usr/lib/opkg/status`, or apk `lib/apk/db/installed` + `etc/apk/world`. */
export function installedDatabase(installed, manager, installTime) {
  const sorted = [...installed].sort((a, b) => byName(a.pkg, b.pkg));
  if (manager === "apk") {
    const db = sorted
      .map(({ pkg }) => {
        const lines = [`P:${pkg.name}`, `V:${pkg.version}`, `A:${pkg.arch}`, `I:${pkg.installedSize}`];
        if (pkg.depends.length) lines.push(`D:${pkg.depends.join(" ")}`);
        return lines.join("\n") + "\n";
      })
      .join("\n");
    const world = sorted
      .filter((e) => e.user)
      .map((e) => e.pkg.name)
      .join("\n");
    return [
      { path: "etc/apk/world", type: "file", mode: 0o644, data: Buffer.from(world + "\n") },
      { path: "lib/apk/db/installed", type: "file", mode: 0o644, data: Buffer.from(db) },
    ];
  }
  const status = sorted
    .map(({ pkg, user }) => {
      const text = formatControl(pkg, {
        withFileFields: false,
        status: user ? "install user installed" : "install ok installed",
      });
      return text.replace(/Description: {2}.*\n$/, `Installed-Time: ${installTime}\n`);
    })
    .join("\n");
  return [{ path: "usr/lib/opkg/status", type: "file", mode: 0o644, data: Buffer.from(status) }];
}

/** Reads the database back: [{name, version, abi, installedSize}]. */
function readInstalledDatabase(rootDir, manager) {
  if (manager === "apk") {
    const file = path.join(rootDir, "lib/apk/db/installed");
    if (!fs.existsSync(file)) return [];
    return fs
      .readFileSync(file, "utf8")
      .split(/\n\s*\n/)
      .map((stanza) => {
        const f = {};
        for (const line of stanza.split("\n")) {
          const m = /^([A-Za-z]):(.*)$/.exec(line);
          if (m) f[m[1]] = m[2];
        }
        return { name: f.P, version: f.V, abi: "", installedSize: Number(f.I ?? 0) };
      })
      .filter((p) => p.name);
  }
  const file = path.join(rootDir, "usr/lib/opkg/status");
  if (!fs.existsSync(file)) return [];
  return parseOpkgIndex(fs.readFileSync(file, "utf8"));
}

/** `opkg list-installed [--strip-abi]` ("name - version") or `apk list --manifest` ("name version"). */
export function formatManifest(packages, manager, stripAbi) {
  const rows = packages.map((p) => {
    let name = p.name;
    if (stripAbi && p.abi && name.endsWith(p.abi)) name = name.slice(0, -p.abi.length);
    return { name, version: p.version };
  });
  rows.sort(byName);
  return rows
    .map((r) => (manager === "apk" ? `${r.name} ${r.version}` : `${r.name} - ${r.version}`))
    .join("\n");
}

// ---------------------------------------------------------------------------------------------
// images

const MIB = 1024 * 1024;
const SQUASHFS_RATIO = 0.33; // squashfs stores about a third of the installed bytes
const SQUASHFS_BLOCK = 64 * 1024;

/** Bytes the root filesystem needs: declared Installed-Size of packages plus real file bytes. */
export function rootfsBytes(installedSizes, rootfs) {
  let total = installedSizes.reduce((a, b) => a + b, 0);
  for (const e of rootfs.values()) if (e.type === "file") total += e.data.length;
  return total;
}

export function squashfsBytes(bytes) {
  return Math.ceil((bytes * SQUASHFS_RATIO) / SQUASHFS_BLOCK) * SQUASHFS_BLOCK;
}

/** The image prefix as include/image.mk builds it, with EXTRA_IMAGE_NAME after the version. */
export function imagePrefix(info, extraImageName, profile) {
  const vernum = info.version_filenames ? `${sanitize(info.version_number)}-` : "";
  const extra = extraImageName ? `${sanitize(extraImageName)}-` : "";
  return `openwrt-${vernum}${extra}${info.board}-${info.subtarget}-${profile}`;
}

/**
 * Renders every image of `profile` for the given root filesystem.
 * Returns {images: [{name, type, filesystem, data, sha256, sha256_unsigned}], warnings, failure}.
 */
export function renderImages(info, profileId, rootfs, installedSizes, opts) {
  const profile = info.profiles[profileId];
  const prefix = imagePrefix(info, opts.extraImageName, profileId);
  const bytes = rootfsBytes(installedSizes, rootfs);
  const wanted = opts.filesystem ? [opts.filesystem] : info.filesystems;
  for (const fsType of wanted) {
    if (!info.filesystems.includes(fsType)) {
      return {
        images: [],
        warnings: [],
        failure: {
          stdout: "",
          stderr: `ROOTFS_FILESYSTEM "${fsType}" is not built for ${info.target} (it builds: ${info.filesystems.join(" ")})\n`,
        },
      };
    }
  }
  const members = opts.members ?? tarMembers(rootfsEntries(rootfs), info.source_date_epoch);
  const images = [];
  const warnings = [];
  let failure;
  const partsize = opts.rootfsPartsize ?? info.rootfs_partsize_mb;
  const imageDir = `${opts.buildDir}/linux-${info.board}_${info.subtarget}/tmp`;
  for (const fsType of info.filesystems) {
    if (!wanted.includes(fsType)) continue;
    if (fsType === "ext4") {
      const blocks = Math.ceil(bytes / 4096) + 256;
      const available = (partsize ?? 0) * 256;
      if (blocks > available) {
        failure = {
          stdout: ext4Parameters(partsize ?? 0),
          stderr: `error: ext4_allocate_best_fit_partial: failed to allocate ${blocks - available} blocks, out of space?\n`,
        };
        break;
      }
    }
    const squash = squashfsBytes(bytes);
    const imageSize = info.kernel_size + squash;
    for (const def of profile.images) {
      if (def.filesystem !== fsType) continue;
      const name = `${prefix}${def.suffix}`;
      let tooBig;
      if (fsType === "squashfs" && profile.image_size && imageSize > profile.image_size) {
        tooBig = { size: imageSize, limit: profile.image_size };
      } else if (fsType === "squashfs" && !profile.image_size && partsize && squash > partsize * MIB) {
        tooBig = { size: squash, limit: partsize * MIB };
      }
      if (tooBig) {
        warnings.push(
          `    WARNING: Image file ${imageDir}/${name} is too big: ${tooBig.size} > ${tooBig.limit}`,
        );
        continue;
      }
      const meta = {
        target: info.target,
        profile: profileId,
        type: def.type,
        filesystem: fsType,
        version: info.version_number,
        revision: info.version_code,
        rootfs_bytes: fsType === "ext4" ? bytes : squash,
        image_bytes: fsType === "ext4" ? info.kernel_size + bytes : imageSize,
      };
      const infoMember = tarMembers(
        [
          {
            path: ".openwrt-image.json",
            type: "file",
            mode: 0o644,
            data: Buffer.from(JSON.stringify(meta) + "\n"),
          },
        ],
        info.source_date_epoch,
      );
      let data = Buffer.concat([members, infoMember, TAR_END]);
      if (def.suffix.endsWith(".gz")) data = gzip(data);
      const sha256Unsigned = sha256(data);
      if (def.type === "sysupgrade" && !def.suffix.endsWith(".gz")) {
        data = Buffer.concat([data, fwtoolMetadata(info, profileId, profile)]);
      }
      images.push({
        name,
        type: def.type,
        filesystem: fsType,
        data,
        sha256: sha256(data),
        sha256_unsigned: sha256Unsigned,
      });
    }
  }
  return { images, warnings, failure };
}

/** An image without its bytes: what profiles.json lists. */
function imageMeta(image) {
  return {
    name: image.name,
    type: image.type,
    filesystem: image.filesystem,
    sha256: image.sha256,
    sha256_unsigned: image.sha256_unsigned,
  };
}

function ext4Parameters(partsize) {
  const size = partsize * MIB;
  return [
    "Creating filesystem with parameters:",
    `    Size: ${size}`,
    "    Block size: 4096",
    "    Blocks per group: 32768",
    `    Inodes per group: ${Math.max(16, Math.floor(size / 16384))}`,
    "    Inode size: 256",
    "    Journal blocks: 0",
    "    Label: rootfs",
    `    Blocks: ${size / 4096}`,
    "    Block groups: 1",
    "    Reserved blocks: 0",
    "    Reserved block group size: 7",
    "",
  ].join("\n");
}

/** Sysupgrade metadata appended after the image, as fwtool does (sha256_unsigned excludes it). */
function fwtoolMetadata(info, profileId, profile) {
  const json = Buffer.from(
    JSON.stringify({
      metadata_version: "1.1",
      compat_version: "1.0",
      supported_devices: profile.supported_devices,
      version: {
        dist: "OpenWrt",
        version: info.version_number,
        revision: info.version_code,
        target: info.target,
        board: profileId,
      },
    }),
  );
  const trailer = Buffer.alloc(16);
  trailer.write("FWx0", 0, "latin1");
  trailer.writeUInt32BE(json.length + 16, 4);
  trailer.write("meta", 8, "latin1");
  return Buffer.concat([json, trailer]);
}

/** Root filesystem map -> sorted tar entries with every parent folder (empty folders dropped). */
function rootfsEntries(rootfs) {
  return withDirs([...rootfs.values()].filter((e) => e.type !== "dir"));
}

const rootfsCache = new Map();

/**
 * What `make image PROFILE=<id>` builds from `packages` (no user packages, no FILES): used by the
 * mirror generator for the upstream profiles.json hashes.
 */
export function defaultImages(info, profileId, packages, archives) {
  const profile = info.profiles[profileId];
  const list = buildPackageList(info.default_packages, profile.device_packages, []);
  const catalog = makeCatalog(packages);
  const result = resolvePackages(catalog, list);
  if (result.errors.length) {
    throw new Error(
      `${info.target} ${profileId}: default packages do not resolve:\n${formatResolveErrors(result.errors, info.package_manager, result.selected)}`,
    );
  }
  // many devices of a target share one package set: build its root filesystem once
  const key = `${info.target}\0${info.version_code}\0${result.installed.map((e) => `${e.pkg.filename}:${e.user}`).join(" ")}`;
  let fsState = rootfsCache.get(key);
  if (!fsState) {
    const rootfs = new Map();
    for (const { pkg } of result.installed) {
      const archive = archives.get(pkg.filename);
      if (!archive) throw new Error(`no archive for ${pkg.filename}`);
      for (const f of readPackageFiles(archive, info.package_manager)) rootfs.set(f.path, f);
    }
    for (const f of installedDatabase(result.installed, info.package_manager, info.source_date_epoch)) {
      rootfs.set(f.path, f);
    }
    fsState = { rootfs, members: tarMembers(rootfsEntries(rootfs), info.source_date_epoch) };
    if (rootfsCache.size > 64) rootfsCache.clear();
    rootfsCache.set(key, fsState);
  }
  const sizes = result.installed.map((e) => e.pkg.installedSize);
  const rendered = renderImages(info, profileId, fsState.rootfs, sizes, {
    extraImageName: "",
    buildDir: "",
    members: fsState.members,
  });
  return {
    images: rendered.images.map(imageMeta),
    manifest: formatManifest(
      result.installed.map((e) => e.pkg),
      info.package_manager,
      false,
    ),
  };
}

// ---------------------------------------------------------------------------------------------
// the command line (called from the Makefile)

class ToolExit extends Error {
  constructor(code) {
    super(`exit ${code}`);
    this.code = code;
  }
}

function env(name) {
  const v = process.env[name];
  return v === undefined || v === "" ? undefined : v;
}

function topdir() {
  return env("TOPDIR") ?? process.cwd();
}

function loadInfo() {
  return JSON.parse(fs.readFileSync(path.join(topdir(), ".targetinfo.json"), "utf8"));
}

function dirFromEnv(name, fallback) {
  return path.resolve(topdir(), env(name) ?? fallback);
}

function selectedProfile(info) {
  const ids = Object.keys(info.profiles);
  const requested = env("USER_PROFILE");
  if (requested) {
    const id = requested.replace(/^DEVICE_/, "");
    if (!info.profiles[id]) {
      process.stdout.write(
        `Profile "${id}" does not exist!\nUse "make info" to get a list of available profile names.\n`,
      );
      throw new ToolExit(1);
    }
    return id;
  }
  if (ids.length === 1) return ids[0];
  // The real ImageBuilder falls back to the first profile; this one asks for a choice so a
  // forgotten PROFILE shows up in tests instead of building the wrong device.
  process.stdout.write(
    `No profile selected: ${info.target} has ${ids.length} profiles. Set PROFILE=<name>.\nUse "make info" to get a list of available profile names.\n`,
  );
  throw new ToolExit(1);
}

function profileTitle(profile) {
  return profile.titles
    .map((t) => t.title ?? [t.vendor, t.model, t.variant].filter((x) => x).join(" "))
    .join(" / ");
}

function cmdInfo(info) {
  const out = [
    `Current Target: "${info.target}"`,
    `Current Architecture: "${info.arch}"`,
    `Current Revision: "${info.version_code}"`,
    `Default Packages: ${info.default_packages.join(" ")}`,
    "Available Profiles:",
    "",
  ];
  for (const [id, p] of Object.entries(info.profiles)) {
    out.push(`${id}:`, `    ${profileTitle(p)}`, `    Packages: ${p.device_packages.join(" ")}`);
    out.push(`    hasImageMetadata: ${p.has_image_metadata}`);
    if (p.supported_devices.length) out.push(`    SupportedDevices: ${p.supported_devices.join(" ")}`);
  }
  process.stdout.write(out.join("\n") + "\n");
}

function userPackages() {
  return words(env("USER_PACKAGES"));
}

function cmdImageStart(info, quiet) {
  const id = selectedProfile(info);
  if (quiet) return;
  const list = buildPackageList(info.default_packages, info.profiles[id].device_packages, userPackages());
  const title = profileTitle(info.profiles[id]);
  process.stdout.write(
    `Building images for ${info.board}${title ? ` - ${title}` : ""}\nPackages: ${list.join(" ")}\n\n`,
  );
}

function readRepositories(info) {
  const root = topdir();
  if (info.package_manager === "apk") {
    const text = fs.readFileSync(path.join(root, "repositories"), "utf8");
    return text
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"))
      .map((url) => ({ name: url, url, kind: "apk" }));
  }
  const text = fs.readFileSync(path.join(root, "repositories.conf"), "utf8");
  const repos = [];
  let checkSignature = false;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const parts = line.split(/\s+/);
    if (parts[0] === "option" && parts[1] === "check_signature") checkSignature = true;
    else if (parts[0] === "src/gz" || parts[0] === "src") {
      repos.push({ name: parts[1], url: parts[2], kind: parts[0] });
    }
  }
  return repos.map((r) => ({ ...r, checkSignature }));
}

async function fetchBuffer(url) {
  if (url.startsWith("file:")) {
    const p = path.resolve(topdir(), url.slice("file:".length).replace(/^\/\//, ""));
    return fs.existsSync(p) ? { ok: true, data: fs.readFileSync(p) } : { ok: false, status: 404 };
  }
  try {
    const res = await fetch(url);
    if (!res.ok) return { ok: false, status: res.status };
    return { ok: true, data: Buffer.from(await res.arrayBuffer()) };
  } catch (err) {
    return { ok: false, status: 0, error: err instanceof Error ? err.message : String(err) };
  }
}

function listsDir() {
  return path.join(dirFromEnv("TMP_DIR", "tmp"), "opkg-lists");
}

/** `opkg update`: Packages.gz and Packages.sig of each feed into the lists folder. */
async function cmdUpdate(info) {
  const dir = listsDir();
  fs.mkdirSync(dir, { recursive: true });
  const errors = [];
  for (const repo of readRepositories(info)) {
    const listFile = path.join(dir, repo.name);
    fs.rmSync(listFile, { force: true });
    if (repo.kind === "src") {
      // local file repository (src imagebuilder file:packages): used only when it has an index
      const local = await fetchBuffer(`${repo.url}/Packages`);
      if (local.ok) fs.writeFileSync(listFile, local.data);
      continue;
    }
    const indexUrl = `${repo.url}/Packages.gz`;
    console.log(`Downloading ${indexUrl}`);
    const index = await fetchBuffer(indexUrl);
    if (!index.ok) {
      console.log(`*** Failed to download the package list from ${indexUrl}\n`);
      errors.push(` * opkg_download: Failed to download ${indexUrl}, wget returned 8.`);
      continue;
    }
    let text;
    try {
      text = gunzip(index.data);
    } catch {
      console.log(`*** Failed to download the package list from ${indexUrl}\n`);
      continue;
    }
    fs.writeFileSync(listFile, text);
    console.log(`Updated list of available packages in ${listFile}`);
    if (!repo.checkSignature) continue;
    const sigUrl = `${repo.url}/Packages.sig`;
    console.log(`Downloading ${sigUrl}`);
    const sig = await fetchBuffer(sigUrl);
    const verdict = sig.ok
      ? usignVerify(text, sig.data.toString("utf8"), path.join(topdir(), "keys"))
      : { ok: false, download: true };
    if (verdict.ok) {
      console.log("Signature check passed.");
    } else {
      console.log(verdict.download ? "Signature file download failed." : "Signature check failed.");
      console.log("Remove wrong Signature file.");
      fs.rmSync(listFile, { force: true });
    }
  }
  if (errors.length) console.log(["Collected errors:", ...errors].join("\n"));
}

/** Available packages: opkg from the lists `update` wrote, apk straight from the feeds. */
async function loadAvailable(info) {
  const packages = [];
  if (info.package_manager === "apk") {
    for (const repo of readRepositories(info)) {
      const res = await fetchBuffer(repo.url);
      if (!res.ok) {
        process.stderr.write(
          `ERROR: wget: exited with error 8\nWARNING: updating and opening ${repo.url}: unexpected end of file\n`,
        );
        continue;
      }
      const adb = splitAdb(res.data);
      const verdict = adb
        ? usignVerify(adb.payload, adb.signature, path.join(topdir(), "keys"))
        : { ok: false };
      if (!verdict.ok) {
        process.stderr.write(`WARNING: updating and opening ${repo.url}: UNTRUSTED signature\n`);
        continue;
      }
      const base = repo.url.replace(/\/[^/]*$/, "");
      for (const p of parseAdbPayload(adb.payload)) packages.push({ ...p, baseUrl: base });
    }
    return packages;
  }
  for (const repo of readRepositories(info)) {
    const listFile = path.join(listsDir(), repo.name);
    if (!fs.existsSync(listFile)) continue;
    for (const p of parseOpkgIndex(fs.readFileSync(listFile, "utf8")))
      packages.push({ ...p, baseUrl: repo.url });
  }
  return packages;
}

/** Gets the package file into dl/ (reusing a cached copy with the right sha256). */
async function fetchPackage(pkg, dlDir) {
  const file = path.join(dlDir, pkg.filename);
  if (fs.existsSync(file)) {
    const cached = fs.readFileSync(file);
    if (sha256(cached) === pkg.sha256) return { data: cached, cached: true, file };
  }
  const url = `${pkg.baseUrl}/${pkg.filename}`;
  const res = await fetchBuffer(url);
  if (!res.ok) return { error: `Failed to download ${url}, wget returned 8.`, url };
  if (sha256(res.data) !== pkg.sha256 || (pkg.size && res.data.length !== pkg.size)) {
    return { mismatch: true, url };
  }
  // write then rename: several builds may share one dl/ folder
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, res.data);
  fs.renameSync(tmp, file);
  return { data: res.data, cached: false, url, file };
}

async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  });
  await Promise.all(workers);
  return results;
}

function writeRootfsEntry(root, entry) {
  assertSafeMember(entry.path);
  const dest = path.join(root, entry.path);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.rmSync(dest, { force: true, recursive: true });
  if (entry.type === "symlink") fs.symlinkSync(entry.target, dest);
  else {
    fs.writeFileSync(dest, entry.data);
    fs.chmodSync(dest, entry.mode & 0o777);
  }
}

/** `opkg install` / `apk add`: resolve, download into dl/, unpack into TARGET_DIR. */
async function cmdInstall(info) {
  const id = selectedProfile(info);
  const manager = info.package_manager;
  const list = buildPackageList(info.default_packages, info.profiles[id].device_packages, userPackages());
  const available = await loadAvailable(info);
  const result = resolvePackages(makeCatalog(available), list);
  if (result.errors.length) {
    if (manager === "opkg") {
      for (const e of result.errors) if (e.kind === "missing") console.log(`Unknown package '${e.name}'.`);
    }
    process.stderr.write(formatResolveErrors(result.errors, manager, result.selected));
    throw new ToolExit(manager === "apk" ? Math.min(result.errors.length, 255) : 255);
  }
  const dlDir = dirFromEnv("DL_DIR", "dl");
  fs.mkdirSync(dlDir, { recursive: true });
  const fetched = await mapLimit(result.installed, 8, (e) => fetchPackage(e.pkg, dlDir));
  const root = dirFromEnv("TARGET_DIR", "build_dir/root");
  const errors = [];
  let n = 0;
  for (const [i, entry] of result.installed.entries()) {
    const { pkg } = entry;
    const got = fetched[i];
    n += 1;
    if (manager === "apk")
      console.log(`(${n}/${result.installed.length}) Installing ${pkg.name} (${pkg.version})`);
    else console.log(`Installing ${pkg.name} (${pkg.version}) to root...`);
    if (got.error) {
      errors.push(` * opkg_download: ${got.error}`);
      continue;
    }
    if (got.mismatch) {
      console.log(`Downloading ${got.url}`);
      errors.push(
        ` * opkg_install_pkg: Checksum or size mismatch for package ${pkg.name}. Either the opkg or the package index are corrupt. Try 'opkg update'.`,
      );
      continue;
    }
    // Not in real opkg/apk output: says whether the shared dl/ cache served the file.
    console.log(got.cached ? `Using cached ${pkg.filename}` : `Downloading ${got.url}`);
    for (const f of readPackageFiles(got.data, manager)) writeRootfsEntry(root, f);
  }
  if (errors.length) {
    if (manager === "apk")
      process.stderr.write(errors.map((e) => `ERROR: ${e.replace(/^ \* \w+: /, "")}`).join("\n") + "\n");
    else process.stderr.write(["Collected errors:", ...errors].join("\n") + "\n");
    throw new ToolExit(manager === "apk" ? 1 : 255);
  }
  for (const f of installedDatabase(result.installed, manager, info.source_date_epoch))
    writeRootfsEntry(root, f);
  if (manager === "opkg") {
    for (const { pkg } of result.installed) console.log(`Configuring ${pkg.name}.`);
  } else {
    const total = result.installed.reduce((a, e) => a + e.pkg.installedSize, 0);
    console.log(`OK: ${Math.ceil(total / MIB)} MiB in ${result.installed.length} packages`);
  }
}

function cmdListInstalled(info) {
  const root = dirFromEnv("TARGET_DIR", "build_dir/root");
  const text = formatManifest(
    readInstalledDatabase(root, info.package_manager),
    info.package_manager,
    Boolean(env("STRIP_ABI")),
  );
  if (text) process.stdout.write(text + "\n");
}

/** Copies FILES into the root filesystem (cp -fpR $(USER_FILES)/* $(TARGET_DIR)/). */
function cmdPrepareRootfs() {
  const files = env("USER_FILES");
  if (!files) return;
  const src = path.resolve(topdir(), files);
  if (!fs.existsSync(src) || !fs.statSync(src).isDirectory()) {
    process.stderr.write(`cp: cannot stat '${files}/*': No such file or directory\n`);
    throw new ToolExit(1);
  }
  const root = dirFromEnv("TARGET_DIR", "build_dir/root");
  for (const entry of readRootfs(src).values()) writeRootfsEntry(root, entry);
}

/** A folder (the root filesystem, or FILES) as a map path -> entry (files and symlinks), in sorted order. */
function readRootfs(root) {
  const map = new Map();
  const walk = (dir, rel) => {
    for (const name of fs.readdirSync(dir).sort()) {
      const abs = path.join(dir, name);
      const relPath = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(abs);
      if (st.isDirectory()) walk(abs, relPath);
      else if (st.isSymbolicLink())
        map.set(relPath, { path: relPath, type: "symlink", mode: 0o777, target: fs.readlinkSync(abs) });
      else if (st.isFile())
        map.set(relPath, { path: relPath, type: "file", mode: st.mode & 0o777, data: fs.readFileSync(abs) });
    }
  };
  if (fs.existsSync(root)) walk(root, "");
  return map;
}

function cmdBuildImage(info) {
  const id = selectedProfile(info);
  const root = dirFromEnv("TARGET_DIR", "build_dir/root");
  const buildDir = dirFromEnv("BUILD_DIR", "build_dir");
  const binDir = dirFromEnv("BIN_DIR", `bin/targets/${info.board}/${info.subtarget}`);
  const partsize = env("CONFIG_TARGET_ROOTFS_PARTSIZE");
  if (partsize !== undefined && !/^\d+$/.test(partsize)) {
    process.stderr.write(`ROOTFS_PARTSIZE must be a number of megabytes, got "${partsize}"\n`);
    throw new ToolExit(1);
  }
  const installed = readInstalledDatabase(root, info.package_manager);
  const rootfs = readRootfs(root);
  const rendered = renderImages(
    info,
    id,
    rootfs,
    installed.map((p) => p.installedSize),
    {
      extraImageName: env("EXTRA_IMAGE_NAME") ?? "",
      filesystem: env("ROOTFS_FILESYSTEM"),
      rootfsPartsize: partsize === undefined ? undefined : Number(partsize),
      buildDir,
    },
  );
  const jsonDir = path.join(buildDir, "json_info_files");
  fs.rmSync(jsonDir, { recursive: true, force: true });
  fs.mkdirSync(jsonDir, { recursive: true });
  fs.mkdirSync(binDir, { recursive: true });
  for (const image of rendered.images) {
    fs.writeFileSync(path.join(binDir, image.name), image.data);
    fs.writeFileSync(path.join(jsonDir, `${image.name}.json`), JSON.stringify(imageMeta(image)));
  }
  const prefix = imagePrefix(info, env("EXTRA_IMAGE_NAME") ?? "", id);
  fs.writeFileSync(
    path.join(binDir, `${prefix}.manifest`),
    formatManifest(installed, info.package_manager, false) + "\n",
  );
  for (const w of rendered.warnings) process.stderr.write(w + "\n");
  if (rendered.failure) {
    process.stdout.write(rendered.failure.stdout);
    process.stderr.write(rendered.failure.stderr);
    throw new ToolExit(1);
  }
}

/** $(BIN_DIR)/profiles.json for the built profile, as json_overview_image_info.py writes it. */
function cmdJsonInfo(info) {
  const id = selectedProfile(info);
  const buildDir = dirFromEnv("BUILD_DIR", "build_dir");
  const binDir = dirFromEnv("BIN_DIR", `bin/targets/${info.board}/${info.subtarget}`);
  const jsonDir = path.join(buildDir, "json_info_files");
  const files = fs.existsSync(jsonDir) ? fs.readdirSync(jsonDir).sort() : [];
  if (files.length === 0) return;
  const profile = info.profiles[id];
  const images = files.map((f) => {
    const m = JSON.parse(fs.readFileSync(path.join(jsonDir, f), "utf8"));
    return {
      filesystem: m.filesystem,
      name: m.name,
      sha256: m.sha256,
      sha256_unsigned: m.sha256_unsigned,
      type: m.type,
    };
  });
  const out = {
    arch_packages: info.arch_packages,
    default_packages: info.default_packages,
    ...(info.linux_kernel ? { linux_kernel: info.linux_kernel } : {}),
    metadata_version: 1,
    profiles: {
      [id]: {
        device_packages: profile.device_packages,
        image_prefix: imagePrefix(info, env("EXTRA_IMAGE_NAME") ?? "", id),
        images,
        supported_devices: profile.supported_devices,
        titles: profile.titles,
      },
    },
    source_date_epoch: info.source_date_epoch,
    target: info.target,
    version_code: info.version_code,
    version_number: info.version_number,
  };
  fs.writeFileSync(path.join(binDir, "profiles.json"), JSON.stringify(out, null, 4) + "\n");
}

function cmdChecksum(info) {
  const binDir = dirFromEnv("BIN_DIR", `bin/targets/${info.board}/${info.subtarget}`);
  const lines = fs
    .readdirSync(binDir)
    .filter((f) => f !== "sha256sums" && fs.statSync(path.join(binDir, f)).isFile())
    .sort()
    .map((f) => `${sha256(fs.readFileSync(path.join(binDir, f)))} *${f}`);
  fs.writeFileSync(path.join(binDir, "sha256sums"), lines.join("\n") + "\n");
}

async function main(argv) {
  const info = loadInfo();
  const command = argv[0];
  switch (command) {
    case "info":
      return cmdInfo(info);
    case "image-start":
      return cmdImageStart(info, argv.includes("--quiet"));
    case "update":
      return cmdUpdate(info);
    case "initdb":
      return undefined;
    case "install":
      return cmdInstall(info);
    case "list-installed":
      return cmdListInstalled(info);
    case "prepare-rootfs":
      return cmdPrepareRootfs();
    case "build-image":
      return cmdBuildImage(info);
    case "json-info":
      return cmdJsonInfo(info);
    case "checksum":
      return cmdChecksum(info);
    default:
      process.stderr.write(`ib-tool: unknown command ${command ?? "(none)"}\n`);
      throw new ToolExit(2);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    () => {
      process.exitCode = 0;
    },
    (err) => {
      if (err instanceof ToolExit) {
        process.exitCode = err.code;
        return;
      }
      process.stderr.write(`ib-tool: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
