import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { generateKeyPair, signMessage, type UsignKeyPair } from "../shared/usign.js";
import {
  DEFAULT_SNAPSHOT_REVISION,
  FAMILY_INDEX,
  FEED_GIT,
  FEED_HASHES,
  FEEDS,
  KERNEL_MODULES,
  MINIMAL_VERSIONS,
  PACKAGES,
  VERSIONS_JSON,
  hexFrom,
  targetSpec,
  versionSpecs,
  type FeedName,
  type PackageSpec,
  type TargetSpec,
  type VersionSpec,
} from "./mirror-catalog.js";
import {
  IMAGEBUILDER_FILES,
  loadImageBuilderTool,
  type ImageBuilderTool,
  type ToolFile,
  type ToolPackage,
  type ToolTargetInfo,
} from "./imagebuilder-tool.js";

/** The upstream URL the real ImageBuilder's repositories point at; servers rewrite it. */
export const OPENWRT_DOWNLOADS = "https://downloads.openwrt.org";

export interface LinuxKernel {
  version: string;
  release: string;
  vermagic: string;
}

export interface MirrorTargetInfo {
  target: string;
  /** arch_packages, e.g. "mips_24kc". */
  arch: string;
  profiles: string[];
  /** The revision in profiles.json, `make info` and the ImageBuilder. */
  versionCode: string;
  /** ImageBuilder archive, relative to the mirror root. */
  imagebuilder: string;
  /** kmods feed folder relative to the mirror root (24.10 and SNAPSHOT). */
  kmods?: string;
  linuxKernel?: LinuxKernel;
}

export interface MirrorVersionInfo {
  version: string;
  /** e.g. "releases/23.05.4" or "snapshots". */
  path: string;
  packageManager: "opkg" | "apk";
  revision: string;
  targets: Record<string, MirrorTargetInfo>;
}

export interface MirrorInfo {
  dir: string;
  /** Base64 line of the usign public key that signs sha256sums and package indexes. */
  publicKeyLine: string;
  /** Contents of the matching `.pub` file. */
  publicKeyFile: string;
  /** Contents of the usign secret key file (not written into the mirror). */
  secretKeyFile: string;
  keyIdHex: string;
  snapshotRevision: number;
  /** Versions with a full tree (SNAPSHOT, 24.10.4, 23.05.4). */
  versions: Record<string, MirrorVersionInfo>;
  /** Versions listed in .versions.json that only have .targets.json. */
  minimalVersions: string[];
}

interface Signer {
  secretFile: string;
  publicFile: string;
  publicLine: string;
  keyIdHex: string;
}

interface Ctx {
  tool: ImageBuilderTool;
  key: Signer;
  spec: VersionSpec;
  /** Folder the version is written to (differs from root/spec.path while publishing). */
  vdir: string;
}

interface BuiltFeed {
  /** Repository URL below the mirror root (no leading slash). */
  rel: string;
  name: string;
  packages: ToolPackage[];
  archives: Map<string, Buffer>;
}

/** Writes the whole mirror into `dir`: every version, target, feed, ImageBuilder and signature. */
export async function generateMirror(opts: {
  dir: string;
  keyPair?: UsignKeyPair;
  snapshotRevision?: number;
}): Promise<MirrorInfo> {
  const key = opts.keyPair ?? generateKeyPair("asu-ts test mirror");
  const revision = opts.snapshotRevision ?? DEFAULT_SNAPSHOT_REVISION;
  const root = path.resolve(opts.dir);
  await mkdir(root, { recursive: true });
  // only what this generator owns: the folder may hold other things (a key file, say)
  for (const entry of [".versions.json", "releases", "snapshots"]) {
    await rm(path.join(root, entry), { recursive: true, force: true });
  }
  const tool = await loadImageBuilderTool();
  const versions: Record<string, MirrorVersionInfo> = {};
  // in parallel: while one version waits for zstd/xz or the disk, another computes
  const written = await Promise.all(
    versionSpecs(revision).map((spec) => writeVersion({ tool, key, spec, vdir: path.join(root, spec.path) })),
  );
  for (const v of written) versions[v.version] = v;
  const v2410 = versionSpecs(revision).find((v) => v.family === "24.10");
  for (const version of MINIMAL_VERSIONS) {
    const dir = path.join(root, "releases", version);
    await mkdir(dir, { recursive: true });
    await writeJson(path.join(dir, ".targets.json"), targetsJson(v2410?.targets ?? [], "24.10"), 0);
  }
  await writeJson(path.join(root, ".versions.json"), VERSIONS_JSON, 0);
  return {
    dir: root,
    publicKeyLine: key.publicLine,
    publicKeyFile: key.publicFile,
    secretKeyFile: key.secretFile,
    keyIdHex: key.keyIdHex,
    snapshotRevision: revision,
    versions,
    minimalVersions: [...MINIMAL_VERSIONS],
  };
}

/**
 * Publishes snapshot revision `revision`: a new ImageBuilder, profiles.json version_code, package
 * versions (base-files, owut), indexes and signed sha256sums. The old tree is swapped out at once,
 * and every new file is dated at least a second after the old sha256sums.sig, so Last-Modified
 * and ETag both change. Updates `info` in place.
 */
export async function publishSnapshot(info: MirrorInfo, revision: number): Promise<void> {
  const spec = versionSpecs(revision).find((v) => v.family === "SNAPSHOT");
  if (!spec) throw new Error("no SNAPSHOT version");
  const tool = await loadImageBuilderTool();
  const key: Signer = {
    secretFile: info.secretKeyFile,
    publicFile: info.publicKeyFile,
    publicLine: info.publicKeyLine,
    keyIdHex: info.keyIdHex,
  };
  const live = path.join(info.dir, spec.path);
  const staging = path.join(info.dir, `.${spec.path}-r${revision}.new`);
  const old = path.join(info.dir, `.${spec.path}-r${revision}.old`);
  await rm(staging, { recursive: true, force: true });
  const version = await writeVersion({ tool, key, spec, vdir: staging });

  let notBefore = Date.now() / 1000;
  for (const target of Object.keys(version.targets)) {
    try {
      const st = await stat(path.join(live, "targets", target, "sha256sums.sig"));
      notBefore = Math.max(notBefore, Math.floor(st.mtimeMs / 1000) + 1);
    } catch {
      // no previous snapshot of this target
    }
  }
  await touchTree(staging, notBefore);

  await rm(old, { recursive: true, force: true });
  await rename(live, old).catch(() => undefined);
  await rename(staging, live);
  await rm(old, { recursive: true, force: true });
  info.versions[spec.version] = version;
  info.snapshotRevision = revision;
}

async function touchTree(dir: string, seconds: number): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await touchTree(p, seconds);
    await utimes(p, seconds, seconds);
  }
}

// ---------------------------------------------------------------------------------------------

async function writeVersion(ctx: Ctx): Promise<MirrorVersionInfo> {
  const { spec, vdir } = ctx;
  await mkdir(vdir, { recursive: true });
  const targets = spec.targets.map((t) => targetSpec(t, spec.family));
  const feedsByArch = new Map<string, BuiltFeed[]>();
  for (const arch of [...new Set(targets.map((t) => t.archPackages))]) {
    feedsByArch.set(arch, await writeArchFeeds(ctx, arch));
  }
  const result: MirrorVersionInfo = {
    version: spec.version,
    path: spec.path,
    packageManager: spec.packageManager,
    revision: spec.revision,
    targets: {},
  };
  for (const target of targets) {
    result.targets[target.target] = await writeTarget(
      ctx,
      target,
      feedsByArch.get(target.archPackages) ?? [],
    );
  }
  await writeJson(path.join(vdir, ".targets.json"), targetsJson(spec.targets, spec.family), 0);
  await writeJson(
    path.join(vdir, ".overview.json"),
    {
      release: spec.version,
      profiles: targets.flatMap((t) =>
        t.profiles.map((p) => ({ id: p.id, titles: p.titles, target: t.target })),
      ),
    },
    4,
  );
  return result;
}

function targetsJson(targets: string[], family: VersionSpec["family"]): Record<string, string> {
  return Object.fromEntries([...targets].sort().map((t) => [t, targetSpec(t, family).archPackages] as const));
}

/** packages/<arch>/<feed>/ for base, luci, packages, routing, telephony, plus feeds.conf. */
async function writeArchFeeds(ctx: Ctx, arch: string): Promise<BuiltFeed[]> {
  const { spec } = ctx;
  const feeds: BuiltFeed[] = [];
  for (const feed of FEEDS) {
    const specs = PACKAGES.filter((p) => p.feed === feed && existsIn(p.name, spec));
    const built = specs.map((p) => buildPackage(ctx, p, arch, undefined));
    const rel = `${spec.path}/packages/${arch}/${feed}`;
    feeds.push(await writeFeed(ctx, path.join(ctx.vdir, "packages", arch, feed), rel, feed, arch, built));
  }
  const feedsConf = FEEDS.map((f) => `src-git ${f} ${FEED_GIT[f]}^${FEED_HASHES[f]}`).join("\n") + "\n";
  await writeFile(path.join(ctx.vdir, "packages", arch, "feeds.conf"), feedsConf);
  return feeds;
}

async function writeTarget(ctx: Ctx, target: TargetSpec, archFeeds: BuiltFeed[]): Promise<MirrorTargetInfo> {
  const { spec, tool, key } = ctx;
  const tdir = path.join(ctx.vdir, "targets", target.board, target.subtarget);
  const trel = `${spec.path}/targets/${target.target}`;
  const linuxKernel: LinuxKernel = {
    version: spec.kernelVersion,
    release: "1",
    vermagic: hexFrom(`${spec.version}/${target.target}/vermagic`, 32),
  };
  const kernelCtx = { target, linuxKernel };

  const coreSpecs = PACKAGES.filter((p) => p.feed === "core" && existsIn(p.name, spec));
  const kmodSpecs = KERNEL_MODULES.filter(
    (k) => k.families.includes(spec.family) && (k.boards === undefined || k.boards.includes(target.board)),
  ).map((k): PackageSpec => ({
    name: k.name,
    feed: "kmods",
    versions: ["", "", ""],
    sizeKib: k.sizeKib,
    depends: ["kernel", ...k.depends],
    section: "kernel",
  }));
  const core = coreSpecs.map((p) => buildPackage(ctx, p, target.archPackages, kernelCtx));
  const kmods = kmodSpecs.map((p) => buildPackage(ctx, p, target.archPackages, kernelCtx));
  const coreFeed = await writeFeed(
    ctx,
    path.join(tdir, "packages"),
    `${trel}/packages`,
    "core",
    target.archPackages,
    spec.kmodsSplit ? core : [...core, ...kmods],
  );
  const kmodsDir = `${linuxKernel.version}-${linuxKernel.release}-${linuxKernel.vermagic}`;
  const kmodsFeed = spec.kmodsSplit
    ? await writeFeed(
        ctx,
        path.join(tdir, "kmods", kmodsDir),
        `${trel}/kmods/${kmodsDir}`,
        "kmods",
        target.archPackages,
        kmods,
      )
    : undefined;

  // repositories in the order the ImageBuilder lists them (it matters: the first name wins)
  const byName = new Map(archFeeds.map((f) => [f.name, f]));
  const feedOrder: (BuiltFeed | undefined)[] = [
    coreFeed,
    byName.get("base"),
    kmodsFeed,
    ...(["luci", "packages", "routing", "telephony"] as FeedName[]).map((f) => byName.get(f)),
  ];
  const repos = feedOrder.filter((f): f is BuiltFeed => f !== undefined);

  const info = toolTargetInfo(spec, target, spec.linuxKernelInProfiles ? linuxKernel : null);
  const allPackages = repos.flatMap((r) => r.packages);
  const archives = new Map<string, Buffer>();
  for (const r of repos) for (const [k, v] of r.archives) archives.set(k, v);

  const profiles: Record<string, unknown> = {};
  for (const profile of target.profiles) {
    const built = tool.defaultImages(info, profile.id, allPackages, archives);
    const prefix = tool.imagePrefix(info, "", profile.id);
    const images = profile.images.map((def) => {
      const name = `${prefix}${def.suffix}`;
      const fromIb = built.images.find((i) => i.name === name);
      if (def.filesystem !== undefined && target.filesystems.includes(def.filesystem) && !fromIb) {
        throw new Error(`${target.target} ${profile.id}: the ImageBuilder does not build ${name}`);
      }
      const sha = fromIb?.sha256 ?? def.sha256 ?? tool.sha256(`synthetic ${def.type} image ${name}\n`);
      const shaUnsigned = fromIb?.sha256_unsigned ?? def.sha256_unsigned ?? sha;
      return {
        ...(def.filesystem !== undefined ? { filesystem: def.filesystem } : {}),
        name,
        sha256: sha,
        sha256_unsigned: shaUnsigned,
        type: def.type,
      };
    });
    profiles[profile.id] = {
      device_packages: profile.devicePackages,
      image_prefix: prefix,
      images,
      supported_devices: profile.supportedDevices,
      titles: profile.titles,
    };
  }
  const profilesJson = {
    arch_packages: target.archPackages,
    default_packages: target.defaultPackages,
    ...(spec.linuxKernelInProfiles ? { linux_kernel: linuxKernel } : {}),
    metadata_version: 1,
    profiles,
    source_date_epoch: spec.sourceDateEpoch,
    target: target.target,
    version_code: spec.revision,
    version_number: spec.version,
  };
  await writeFile(path.join(tdir, "profiles.json"), JSON.stringify(profilesJson));

  const ibName = imagebuilderName(spec, target);
  const archive = await imagebuilderArchive(ctx, target, info, repos, ibName);
  await writeFile(path.join(tdir, `${ibName}.${spec.archiveExt}`), archive);

  const feedsBuildinfo = (["packages", "luci", "routing", "telephony"] as FeedName[])
    .map((f) => `src-git ${f} ${FEED_GIT[f]}^${FEED_HASHES[f]}`)
    .join("\n");
  await writeFile(path.join(tdir, "feeds.buildinfo"), feedsBuildinfo + "\n");
  await writeFile(path.join(tdir, "version.buildinfo"), `${spec.revision}\n`);
  await writeFile(path.join(tdir, "config.buildinfo"), configText(spec, target));

  const sums = await sha256sums(tool, tdir);
  await writeFile(path.join(tdir, "sha256sums"), sums);
  await writeFile(path.join(tdir, "sha256sums.sig"), signMessage(sums, key.secretFile));

  return {
    target: target.target,
    arch: target.archPackages,
    profiles: target.profiles.map((p) => p.id),
    versionCode: spec.revision,
    imagebuilder: `${trel}/${ibName}.${spec.archiveExt}`,
    ...(kmodsFeed ? { kmods: kmodsFeed.rel } : {}),
    ...(spec.linuxKernelInProfiles ? { linuxKernel } : {}),
  };
}

/** `<sha256> *<file>` for the target folder's files and its packages/ folder, sorted. */
async function sha256sums(tool: ImageBuilderTool, tdir: string): Promise<string> {
  const lines: string[] = [];
  for (const sub of ["", "packages"]) {
    const dir = path.join(tdir, sub);
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (!entry.isFile() || entry.name.startsWith("sha256sums")) continue;
      const rel = sub ? `${sub}/${entry.name}` : entry.name;
      lines.push(`${tool.sha256(await readFile(path.join(dir, entry.name)))} *${rel}`);
    }
  }
  lines.sort((a, b) => (a.slice(66) < b.slice(66) ? -1 : 1));
  return lines.join("\n") + "\n";
}

async function writeFeed(
  ctx: Ctx,
  dir: string,
  rel: string,
  name: string,
  arch: string,
  built: { meta: ToolPackage; data: Buffer }[],
): Promise<BuiltFeed> {
  const { tool, key, spec } = ctx;
  await mkdir(dir, { recursive: true });
  const archives = new Map<string, Buffer>();
  for (const { meta, data } of built) writeFileSync(path.join(dir, meta.filename), data);
  for (const { meta, data } of built) archives.set(meta.filename, data);
  const metas = built.map((b) => b.meta);
  let packages: ToolPackage[];
  if (spec.packageManager === "opkg") {
    const text = tool.formatOpkgIndex(metas);
    await writeFile(path.join(dir, "Packages"), text);
    await writeFile(path.join(dir, "Packages.gz"), tool.gzip(Buffer.from(text)));
    await writeFile(path.join(dir, "Packages.sig"), signMessage(text, key.secretFile));
    packages = tool.parseOpkgIndex(text);
  } else {
    const payload = tool.adbPayload(arch, metas);
    await writeFile(
      path.join(dir, "packages.adb"),
      tool.formatAdb(payload, signMessage(payload, key.secretFile)),
    );
    packages = tool.parseAdbPayload(payload);
  }
  if (spec.indexJson) {
    const names = Object.fromEntries(
      metas
        .map(
          (m) =>
            [m.abi && m.name.endsWith(m.abi) ? m.name.slice(0, -m.abi.length) : m.name, m.version] as const,
        )
        .sort((a, b) => (a[0] < b[0] ? -1 : 1)),
    );
    await writeJson(path.join(dir, "index.json"), { version: 2, architecture: arch, packages: names }, 2);
  }
  return { rel, name, packages, archives };
}

// ---------------------------------------------------------------------------------------------
// packages

function familyIndex(spec: VersionSpec): 0 | 1 | 2 {
  return FAMILY_INDEX[spec.family];
}

const SPEC_BY_NAME = new Map(PACKAGES.map((p) => [p.name, p]));

function existsIn(name: string, spec: VersionSpec): boolean {
  const p = SPEC_BY_NAME.get(name);
  if (p) return p.versions[familyIndex(spec)] !== null;
  return KERNEL_MODULES.some((k) => k.name === name && k.families.includes(spec.family));
}

/** A virtual name some package of the branch provides ("nftables" by nftables-json). */
function providedIn(name: string, spec: VersionSpec): boolean {
  return PACKAGES.some((p) => p.versions[familyIndex(spec)] !== null && (p.provides ?? []).includes(name));
}

/** The published name: with the ABI version appended where the branch does that (libubox20240329). */
function publishedName(name: string, spec: VersionSpec): string {
  const p = SPEC_BY_NAME.get(name);
  if (!spec.abiNames || !p?.abi || spec.family === "SNAPSHOT") return name;
  return `${name}${p.abi[familyIndex(spec) as 0 | 1]}`;
}

function abiOf(name: string, spec: VersionSpec): string {
  const p = SPEC_BY_NAME.get(name);
  if (!spec.abiNames || !p?.abi || spec.family === "SNAPSHOT") return "";
  return p.abi[familyIndex(spec) as 0 | 1];
}

function versionOf(p: PackageSpec, spec: VersionSpec, kernel?: { linuxKernel: LinuxKernel }): string {
  const apk = spec.packageManager === "apk";
  const hash = spec.revision.split("-")[1] ?? "";
  if (p.feed === "kmods") {
    return apk || spec.family === "24.10" ? `${spec.kernelVersion}-r1` : `${spec.kernelVersion}-1`;
  }
  switch (p.name) {
    case "base-files":
      if (apk) return `1690~${hash}-r${spec.revisionNumber}`;
      return spec.family === "23.05" ? `1562-${spec.revision}` : `1651-${spec.revision}`;
    case "kernel": {
      const vm = kernel?.linuxKernel.vermagic ?? "";
      return spec.family === "23.05" ? `${spec.kernelVersion}-1-${vm}` : `${spec.kernelVersion}~${vm}-r1`;
    }
    case "owut":
      if (apk)
        return `2025.12.${String((spec.revisionNumber % 28) + 1).padStart(2, "0")}~${hash.slice(0, 8)}-r1`;
      break;
  }
  const v = p.versions[familyIndex(spec)];
  if (v === null || v === undefined || v === "")
    throw new Error(`${p.name} has no version in ${spec.version}`);
  return v;
}

function buildPackage(
  ctx: Ctx,
  p: PackageSpec,
  arch: string,
  kernel: { target: TargetSpec; linuxKernel: LinuxKernel } | undefined,
): { meta: ToolPackage; data: Buffer } {
  const { spec, tool } = ctx;
  const apk = spec.packageManager === "apk";
  const name = publishedName(p.name, spec);
  const abi = abiOf(p.name, spec);
  const version = versionOf(p, spec, kernel);
  const pkgArch = p.archAll ? "all" : arch;
  const depends = p.depends.map((d) => {
    const choice = d.split("|").find((alt) => existsIn(alt, spec) || providedIn(alt, spec));
    if (!choice) throw new Error(`${p.name}: no dependency of ${d} exists in ${spec.version}`);
    return publishedName(choice, spec);
  });
  const provides = [...(abi ? [p.name] : []), ...(p.provides ?? [])].map((x) =>
    apk ? `${x}=${version}` : x,
  );
  const meta: ToolPackage = {
    name,
    version,
    arch: pkgArch,
    depends,
    provides,
    conflicts: (p.conflicts ?? []).map((c) => publishedName(c, spec)),
    abi,
    installedSize: p.sizeKib * 1024,
    filename: apk ? `${name}-${version}.apk` : `${name}_${version}_${pkgArch}.ipk`,
    size: 0,
    sha256: "",
    section: p.section ?? (p.name.startsWith("lib") ? "libs" : p.feed === "kmods" ? "kernel" : "base"),
    description: p.description ?? `${p.name} (synthetic package of the asu-ts test mirror)`,
  };
  const files = packageFiles(p, name, version, pkgArch, spec, kernel);
  const data = tool.buildPackageArchive(meta, files, spec.packageManager, spec.sourceDateEpoch);
  meta.size = data.length;
  meta.sha256 = tool.sha256(data);
  return { meta, data };
}

function file(p: string, text: string, mode = 0o644): ToolFile {
  return { path: p, type: "file", mode, data: Buffer.from(text) };
}

/** The files each package installs: small, deterministic, and enough to tell packages apart. */
function packageFiles(
  p: PackageSpec,
  name: string,
  version: string,
  arch: string,
  spec: VersionSpec,
  kernel: { target: TargetSpec; linuxKernel: LinuxKernel } | undefined,
): ToolFile[] {
  const stamp = `${name} ${version} (${arch}) - synthetic file from the asu-ts test mirror\n`;
  const script = `#!/bin/sh\n# ${stamp}`;
  const n = p.name;
  if (n === "kernel") return [];
  if (n === "base-files") {
    const t = kernel?.target;
    const target = t?.target ?? "";
    return [
      file(
        "etc/openwrt_release",
        [
          "DISTRIB_ID='OpenWrt'",
          `DISTRIB_RELEASE='${spec.version}'`,
          `DISTRIB_REVISION='${spec.revision}'`,
          `DISTRIB_TARGET='${target}'`,
          `DISTRIB_ARCH='${t?.archPackages ?? arch}'`,
          `DISTRIB_DESCRIPTION='OpenWrt ${spec.version} ${spec.revision}'`,
          "DISTRIB_TAINTS=''",
          "",
        ].join("\n"),
      ),
      file("etc/openwrt_version", `${spec.revision}\n`),
      file("etc/banner", `OpenWrt ${spec.version}, ${spec.revision} (synthetic test image)\n`),
    ];
  }
  if (n === "libc") {
    const loader = arch.startsWith("x86_64") ? "x86_64" : arch.startsWith("mipsel") ? "mipsel-sf" : "mips-sf";
    return [
      file("lib/libc.so", stamp, 0o755),
      { path: `lib/ld-musl-${loader}.so.1`, type: "symlink", mode: 0o777, target: "libc.so" },
    ];
  }
  if (p.feed === "kmods") {
    const mod = n.slice("kmod-".length);
    return [
      file(`lib/modules/${spec.kernelVersion}/${mod.replace(/-/g, "_")}.ko`, stamp),
      file(`etc/modules.d/${mod}`, `${mod.replace(/-/g, "_")}\n`),
    ];
  }
  if (n === "dnsmasq" || n === "dnsmasq-full") {
    return [file("usr/sbin/dnsmasq", script, 0o755), file("etc/init.d/dnsmasq", script, 0o755)];
  }
  if (n === "attendedsysupgrade-common") {
    return [
      file(
        "etc/config/attendedsysupgrade",
        "config server 'server'\n\toption url 'https://sysupgrade.openwrt.org'\n\nconfig client 'client'\n\toption advanced_mode '0'\n",
      ),
    ];
  }
  if (n === "ca-bundle") return [file("etc/ssl/certs/ca-certificates.crt", stamp)];
  if (n.startsWith("big-package-")) return [file(`usr/share/${n}/payload.bin`, stamp)];
  if (n.includes("-firmware-") || n.startsWith("ipq-wifi-")) return [file(`lib/firmware/${n}.bin`, stamp)];
  if (n.startsWith("luci-i18n-"))
    return [file(`usr/share/luci/i18n/${n.slice("luci-i18n-".length)}.lmo`, stamp)];
  if (n.startsWith("luci")) {
    if (p.sizeKib === 0) return [];
    return [
      file(`www/luci-static/resources/view/${n}.js`, `// ${stamp}`),
      file(`usr/share/luci/menu.d/${n}.json`, `{"_comment": ${JSON.stringify(stamp.trim())}}\n`),
    ];
  }
  if (n.startsWith("lib")) {
    const abi = abiOf(n, spec);
    return [file(`usr/lib/${n}.so${abi ? `.${abi}` : ""}`, stamp, 0o755)];
  }
  return [file(`usr/bin/${n}`, script, 0o755)];
}

// ---------------------------------------------------------------------------------------------
// the ImageBuilder

function imagebuilderName(spec: VersionSpec, target: TargetSpec): string {
  const vernum = spec.versionFilenames ? `${spec.version}-` : "";
  return `openwrt-imagebuilder-${vernum}${target.board}-${target.subtarget}.Linux-x86_64`;
}

function toolTargetInfo(
  spec: VersionSpec,
  target: TargetSpec,
  linuxKernel: LinuxKernel | null,
): ToolTargetInfo {
  const profiles: ToolTargetInfo["profiles"] = {};
  for (const p of target.profiles) {
    profiles[p.id] = {
      titles: p.titles,
      device_packages: p.devicePackages,
      supported_devices: p.supportedDevices,
      image_size: p.imageSize ?? null,
      has_image_metadata: target.board === "x86" ? 0 : 1,
      images: p.images
        .filter((i) => i.filesystem !== undefined && target.filesystems.includes(i.filesystem))
        .map((i) => ({ suffix: i.suffix, type: i.type, filesystem: i.filesystem as string })),
    };
  }
  return {
    target: target.target,
    board: target.board,
    subtarget: target.subtarget,
    arch: target.arch,
    arch_packages: target.archPackages,
    version_number: spec.version,
    version_code: spec.revision,
    version_filenames: spec.versionFilenames,
    source_date_epoch: spec.sourceDateEpoch,
    package_manager: spec.packageManager,
    default_packages: target.defaultPackages,
    linux_kernel: linuxKernel,
    kernel_size: target.kernelSize,
    filesystems: target.filesystems,
    rootfs_partsize_mb: target.rootfsPartsizeMb ?? null,
    profiles,
  };
}

function configText(spec: VersionSpec, target: TargetSpec): string {
  const lines = [
    `CONFIG_TARGET_${target.board}=y`,
    `CONFIG_TARGET_${target.board}_${target.subtarget}=y`,
    `CONFIG_TARGET_BOARD="${target.board}"`,
    `CONFIG_TARGET_SUBTARGET="${target.subtarget}"`,
    `CONFIG_TARGET_ARCH_PACKAGES="${target.archPackages}"`,
    `CONFIG_VERSION_DIST="OpenWrt"`,
    `CONFIG_VERSION_NUMBER="${spec.version}"`,
    `CONFIG_VERSION_CODE="${spec.revision}"`,
    "CONFIG_SIGNATURE_CHECK=y",
    "CONFIG_JSON_OVERVIEW_IMAGE_INFO=y",
    "CONFIG_TARGET_ROOTFS_SQUASHFS=y",
  ];
  if (spec.versionFilenames) lines.push("CONFIG_VERSION_FILENAMES=y");
  if (spec.packageManager === "apk") lines.push("CONFIG_USE_APK=y");
  if (target.filesystems.includes("ext4")) lines.push("CONFIG_TARGET_ROOTFS_EXT4FS=y");
  if (target.rootfsPartsizeMb !== undefined)
    lines.push(`CONFIG_TARGET_ROOTFS_PARTSIZE=${target.rootfsPartsizeMb}`);
  return lines.join("\n") + "\n";
}

function repositoriesFile(spec: VersionSpec, repos: BuiltFeed[]): { name: string; text: string } {
  if (spec.packageManager === "apk") {
    return {
      name: "repositories",
      text: repos.map((r) => `${OPENWRT_DOWNLOADS}/${r.rel}/packages.adb`).join("\n") + "\n",
    };
  }
  const lines = repos.map((r) => `src/gz openwrt_${r.name} ${OPENWRT_DOWNLOADS}/${r.rel}`);
  lines.push(
    "",
    "## This is the local package repository, do not remove!",
    "src imagebuilder file:packages",
    "",
    "option check_signature",
  );
  return { name: "repositories.conf", text: lines.join("\n") + "\n" };
}

async function imagebuilderArchive(
  ctx: Ctx,
  target: TargetSpec,
  info: ToolTargetInfo,
  repos: BuiltFeed[],
  top: string,
): Promise<Buffer> {
  const { spec, tool, key } = ctx;
  const makefile = await readFile(new URL("Makefile", IMAGEBUILDER_FILES));
  const script = await readFile(new URL("ib-tool.mjs", IMAGEBUILDER_FILES));
  const repositories = repositoriesFile(spec, repos);
  const profilesMk =
    `PROFILE_NAMES = ${target.profiles.map((p) => `DEVICE_${p.id}`).join(" ")}\n` +
    target.profiles
      .map((p) => `DEVICE_${p.id}_HAS_IMAGE_METADATA:=${info.profiles[p.id]?.has_image_metadata ?? 0}\n`)
      .join("");
  const files: ToolFile[] = [
    file(".config", configText(spec, target)),
    file(".profiles.mk", profilesMk),
    file(".targetinfo.json", JSON.stringify(info, null, 1) + "\n"),
    { path: "Makefile", type: "file", mode: 0o644, data: makefile },
    file(repositories.name, repositories.text),
    file(`keys/${key.keyIdHex}`, key.publicFile),
    { path: "scripts/ib-tool.mjs", type: "file", mode: 0o755, data: script },
    { path: "dl", type: "dir", mode: 0o755 },
    { path: "packages", type: "dir", mode: 0o755 },
  ];
  const entries: ToolFile[] = [
    { path: top, type: "dir", mode: 0o755 },
    ...tool.withDirs(files).map((m) => ({ ...m, path: `${top}/${m.path}` })),
  ];
  const tar = tool.createTar(entries, spec.sourceDateEpoch);
  return spec.archiveExt === "tar.zst"
    ? compress("zstd", ["-q", "-c", "-T1"], tar)
    : compress("xz", ["-q", "-c", "-3", "-T1"], tar);
}

function compress(command: string, args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (c: Buffer) => out.push(c));
    child.stderr.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`${command} exited with ${code}: ${Buffer.concat(err).toString()}`));
    });
    child.stdin.end(input);
  });
}

async function writeJson(file: string, value: unknown, indent: number): Promise<void> {
  await writeFile(file, indent ? JSON.stringify(value, null, indent) + "\n" : JSON.stringify(value));
}
