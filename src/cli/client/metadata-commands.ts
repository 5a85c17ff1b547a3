import { AsuHttp } from "./asu-http.js";
import { ClientError, HttpStatusError, ServerUnavailableError, UsageError } from "./client-errors.js";
import { printable } from "./progress-reporter.js";
import { resolveTarget, type ResolvedTarget } from "./server-catalog.js";

export interface MetadataOptions {
  server: string;
  version: string;
  target: string;
  search?: string;
  timeout: number;
}

/** What a command prints (stdout lines) and notes for stderr. */
export interface Listing {
  lines: string[];
  notes: string[];
}

interface ProfileRow {
  id: string;
  title: string;
  devices: string[];
}

function titleOf(title: unknown): string {
  if (typeof title !== "object" || title === null) return "";
  const t = title as Record<string, unknown>;
  if (typeof t.title === "string") return t.title;
  return [t.vendor, t.model, t.variant].filter((p) => typeof p === "string" && p !== "").join(" ");
}

function matches(search: string | undefined, ...texts: string[]): boolean {
  if (search === undefined || search === "") return true;
  const needle = search.toLowerCase();
  return texts.some((t) => t.toLowerCase().includes(needle));
}

function pad(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) =>
    row
      .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd(),
  );
}

export function checkNames(version: string, target: string): void {
  if (!/^[\w.,-]+$/.test(version)) {
    throw new UsageError(
      `--version ${JSON.stringify(version)} is not a version, such as 24.10.4 or SNAPSHOT.`,
    );
  }
  if (!/^\w+\/\w+$/.test(target)) {
    throw new UsageError(
      `--target ${JSON.stringify(target)} must be target/subtarget, such as ath79/generic.`,
    );
  }
}

/**
 * `asu profiles`: the profiles of a target, from the `profiles.json` of the download server
 * the asu server names in its overview (as the Firmware Selector and owut read it; the server
 * has no list route). If that download server cannot be reached, an exact profile or device
 * name is still looked up through the server's own `{profile}.json` route.
 */
export async function listProfiles(opts: MetadataOptions): Promise<Listing> {
  checkNames(opts.version, opts.target);
  const http = new AsuHttp(opts.server, { timeoutMs: opts.timeout * 1000 });
  const resolved = await resolveTarget(http, opts.version, opts.target);
  let rows: ProfileRow[];
  const notes: string[] = [];
  try {
    rows = await upstreamProfiles(http, resolved);
  } catch (err) {
    if (!(err instanceof ServerUnavailableError || err instanceof HttpStatusError)) throw err;
    if (opts.search === undefined) {
      throw new ServerUnavailableError(
        `The profile list comes from ${resolved.upstreamUrl || "the download server"}, which cannot be read: ${err.message}. Give --search with an exact profile or device name to ask ${http.base} instead.`,
      );
    }
    notes.push(`${resolved.upstreamUrl} cannot be read (${err.message}); looked up the exact name instead.`);
    rows = await serverProfile(http, resolved, opts.search);
  }
  const found = rows
    .filter((r) => matches(opts.search, r.id, r.title, ...r.devices))
    .sort((a, b) => a.id.localeCompare(b.id));
  if (found.length === 0) {
    notes.push(
      opts.search !== undefined
        ? `No profile of ${opts.target} in ${opts.version} matches "${opts.search}".`
        : `${opts.target} in ${opts.version} has no profiles.`,
    );
  }
  const lines = pad(found.map((r) => [r.id, r.title, r.devices.join(", ")]).map((row) => row.map(printable)));
  return { lines, notes };
}

async function upstreamProfiles(http: AsuHttp, resolved: ResolvedTarget): Promise<ProfileRow[]> {
  if (!resolved.upstreamUrl) throw new ServerUnavailableError("the server names no upstream_url");
  const doc = await http.getJson(
    `${resolved.upstreamUrl}/${resolved.path}/targets/${resolved.target}/profiles.json`,
  );
  const profiles = typeof doc.profiles === "object" && doc.profiles !== null ? doc.profiles : {};
  return Object.entries(profiles as Record<string, unknown>).map(([id, info]) => profileRow(id, info));
}

function profileRow(id: string, info: unknown): ProfileRow {
  const p = (typeof info === "object" && info !== null ? info : {}) as Record<string, unknown>;
  const titles = Array.isArray(p.titles) ? p.titles.map(titleOf).filter((t) => t !== "") : [];
  const devices = Array.isArray(p.supported_devices)
    ? p.supported_devices.filter((d): d is string => typeof d === "string")
    : [];
  return { id, title: titles.join(" / "), devices };
}

async function serverProfile(http: AsuHttp, resolved: ResolvedTarget, name: string): Promise<ProfileRow[]> {
  if (!/^[\w.,-]+$/.test(name)) return [];
  try {
    const doc = await http.getJson(`/json/v1/${resolved.path}/targets/${resolved.target}/${name}.json`);
    return typeof doc.id === "string" ? [profileRow(doc.id, doc)] : [];
  } catch (err) {
    if (err instanceof HttpStatusError && err.status === 404) return [];
    throw err;
  }
}

/**
 * `asu packages`: every package name a build of the target can ask for, from the server's
 * target index (kmods and core packages) and architecture index (all feeds).
 */
export async function listPackages(opts: MetadataOptions): Promise<Listing> {
  checkNames(opts.version, opts.target);
  const http = new AsuHttp(opts.server, { timeoutMs: opts.timeout * 1000 });
  const resolved = await resolveTarget(http, opts.version, opts.target);
  const base = `/json/v1/${resolved.path}`;
  const [targetIndex, archIndex] = await Promise.all([
    http.getJson(`${base}/targets/${resolved.target}/index.json`),
    http.getJson(`${base}/packages/${resolved.arch}-index.json`),
  ]).catch((err: unknown) => {
    if (err instanceof HttpStatusError) {
      throw new ClientError(
        `The server has no package index for ${resolved.target} in ${resolved.version}: ${err.detail}`,
        err.exitCode,
      );
    }
    throw err;
  });
  const packages = new Map<string, string>();
  const add = (index: unknown) => {
    if (typeof index !== "object" || index === null) return;
    for (const [name, version] of Object.entries(index as Record<string, unknown>)) {
      if (typeof version === "string" && !packages.has(name)) packages.set(name, version);
    }
  };
  add(targetIndex.packages);
  add(typeof archIndex.packages === "object" ? archIndex.packages : archIndex);
  const found = [...packages.entries()]
    .filter(([name]) => matches(opts.search, name))
    .sort(([a], [b]) => a.localeCompare(b));
  const notes: string[] = [];
  if (found.length === 0) {
    notes.push(
      opts.search !== undefined
        ? `No package of ${opts.target} in ${opts.version} matches "${opts.search}".`
        : `The server lists no packages for ${opts.target} in ${opts.version}.`,
    );
  }
  return { lines: pad(found.map(([name, version]) => [printable(name), printable(version)])), notes };
}
