import path from "node:path";

/**
 * Reads the output of `tar -tv --quoting-style=escape --numeric-owner --full-time` and decides
 * whether the archive is safe to extract. GNU tar happily writes through symlinks it created
 * a moment earlier, so the checks run on the listing, before a single file is written.
 */

export type ArchiveEntryType = "file" | "dir" | "symlink" | "hardlink" | "special";

export interface ArchiveEntry {
  type: ArchiveEntryType;
  /** tar's type letter: "-", "d", "l", "h", "c", "b", "p", ... */
  typeChar: string;
  size: number;
  /** The member name as tar prints it (escaped), without a leading "./" or trailing "/". */
  name: string;
  /** Symlink target, or the member a hardlink points to. */
  linkTarget?: string;
}

export type ArchiveCheck = { ok: true; topDir: string; totalBytes: number } | { ok: false; reason: string };

// mode, uid/gid, size (or "major,minor" for devices), date and time, then the name.
const LINE =
  /^(\S)([-rwxsStT]{9}[.+]?) +(\d+)\/(\d+) +(\d+|\d+, *\d+) +(\d{4}-\d\d-\d\d \d\d:\d\d(?::\d\d)?) (.*)$/;

const TYPES: Record<string, ArchiveEntryType> = {
  "-": "file",
  // GNU tar prints contiguous files as "C"; they extract as regular files.
  C: "file",
  d: "dir",
  l: "symlink",
  h: "hardlink",
};

/** Throws on a line it cannot read, so that an unexpected format never passes the checks. */
export function parseTarListing(text: string): ArchiveEntry[] {
  const entries: ArchiveEntry[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const m = LINE.exec(line);
    if (!m) throw new Error(`cannot read tar listing line: ${JSON.stringify(line.slice(0, 200))}`);
    const typeChar = m[1] as string;
    const sizeText = m[5] as string;
    let rest = m[7] as string;
    const type = TYPES[typeChar] ?? "special";
    let linkTarget: string | undefined;
    if (type === "symlink" || type === "hardlink") {
      // Names are printed unquoted, so a name that itself contains the separator would be
      // ambiguous; such archives are refused rather than guessed at.
      const separator = type === "symlink" ? " -> " : " link to ";
      const parts = rest.split(separator);
      if (parts.length !== 2)
        throw new Error(`ambiguous link in tar listing: ${JSON.stringify(rest.slice(0, 200))}`);
      rest = parts[0] as string;
      linkTarget = parts[1] as string;
    }
    const entry: ArchiveEntry = {
      type,
      typeChar,
      size: sizeText.includes(",") ? 0 : Number(sizeText),
      name: normaliseName(rest),
    };
    if (linkTarget !== undefined)
      entry.linkTarget = type === "hardlink" ? normaliseName(linkTarget) : linkTarget;
    entries.push(entry);
  }
  return entries;
}

function normaliseName(name: string): string {
  let n = name;
  while (n.startsWith("./")) n = n.slice(2);
  while (n.length > 1 && n.endsWith("/")) n = n.slice(0, -1);
  return n;
}

/**
 * OpenWrt's prereq-build links host tools into staging_dir/host/bin with absolute targets
 * (`staging_dir/host/bin/python3 -> /usr/bin/python3`), and the ImageBuilder tarball keeps
 * those links (target/imagebuilder/Makefile copies bin/* with `cp -fpR`). They are harmless
 * here because no member may be extracted through a symlink, nor may a link elsewhere lead
 * through them; any other absolute or escaping link is refused (docs/decisions/003).
 */
function isHostToolDir(top: string, name: string): boolean {
  return path.posix.dirname(name) === `${top}/staging_dir/host/bin`;
}

function isHostToolLink(top: string, name: string, target: string): boolean {
  return (
    isHostToolDir(top, name) &&
    /^\/(usr\/|bin\/|sbin\/)/.test(target) &&
    !target.split("/").some((p) => p === ".." || p === ".")
  );
}

// Linux gives up after 40 links in one lookup (ELOOP); so do we.
const MAX_LINK_HOPS = 40;

type Resolution = { kind: "inside"; parts: string[] } | { kind: "host" } | { kind: "outside" };

export function checkArchiveEntries(entries: ArchiveEntry[], maxUnpackedBytes: number): ArchiveCheck {
  const fail = (reason: string): ArchiveCheck => ({ ok: false, reason });
  if (entries.length === 0) return fail("the archive is empty");

  let top: string | undefined;
  /** Symlinks by name, as the tree holds them once everything is unpacked. */
  const symlinks = new Map<string, string>();
  const kinds = new Map<string, ArchiveEntryType>();
  let totalBytes = 0;

  for (const entry of entries) {
    const { name } = entry;
    if (name.startsWith("/")) return fail(`absolute path "${name}"`);
    const parts = name.split("/");
    if (parts.includes("..")) return fail(`".." in path "${name}"`);
    if (name === "" || name === ".") continue;
    // "esc/." names the folder a link points at: tar would change it, wherever it is.
    if (parts.some((p) => p === "." || p === "")) return fail(`"." or an empty part in path "${name}"`);
    const first = parts[0] as string;
    if (top === undefined) top = first;
    else if (first !== top) return fail(`more than one top folder ("${top}" and "${first}")`);
    if (entry.type === "special") return fail(`special file "${name}" (type "${entry.typeChar}")`);
    // A second member of the same name replaces a link by a file or the other way round.
    const seen = kinds.get(name);
    if (seen !== undefined && (seen !== entry.type || seen === "symlink")) {
      return fail(`"${name}" appears more than once in the archive`);
    }
    kinds.set(name, entry.type);
    if (entry.type === "symlink") symlinks.set(name, entry.linkTarget ?? "");
    totalBytes += entry.size;
  }
  if (top === undefined) return fail("the archive has no top folder");
  if (top === "." || top === "") return fail("the archive has no top folder");
  if (totalBytes > maxUnpackedBytes) {
    return fail(`it unpacks to ${totalBytes} bytes, more than the limit of ${maxUnpackedBytes}`);
  }
  const root = top;

  /** The first symlink among the proper prefixes of `p`, if any. */
  const throughSymlink = (p: string): string | undefined => {
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      if (symlinks.has(prefix)) return prefix;
    }
    return undefined;
  };

  /**
   * Where `target` really leads from the folder `from` once the archive is unpacked, through
   * every link the archive creates (chained, relative, in any order). "outside" as soon as a
   * step leaves the tree; "host" only for a path that ends on a host-tool link.
   */
  const resolve = (from: string[], target: string, hops: { n: number }): Resolution => {
    let cur = [...from];
    const steps = target.split("/").filter((p) => p !== "" && p !== ".");
    for (const [i, step] of steps.entries()) {
      const last = i === steps.length - 1;
      if (step === "..") {
        if (cur.length <= 1) return { kind: "outside" };
        cur.pop();
        continue;
      }
      const next = [...cur, step];
      const linkTarget = symlinks.get(next.join("/"));
      if (linkTarget === undefined) {
        cur = next;
        continue;
      }
      if (++hops.n > MAX_LINK_HOPS) return { kind: "outside" };
      if (linkTarget.startsWith("/")) {
        if (last && isHostToolLink(root, next.join("/"), linkTarget)) return { kind: "host" };
        return { kind: "outside" };
      }
      const via = resolve(cur, linkTarget, hops);
      if (via.kind === "inside") cur = via.parts;
      else if (via.kind === "host" && last) return via;
      else return { kind: "outside" };
    }
    return { kind: "inside", parts: cur };
  };

  for (const entry of entries) {
    const { name } = entry;
    if (name === "" || name === ".") continue;
    const via = throughSymlink(name);
    if (via !== undefined) return fail(`"${name}" would be written through the symlink "${via}"`);
    const target = entry.linkTarget;
    if (entry.type === "symlink" && target !== undefined) {
      const outside = fail(`symlink "${name}" points outside the ImageBuilder ("${target}")`);
      if (target === "") return fail(`symlink "${name}" has an empty target`);
      if (target.startsWith("/")) {
        if (!isHostToolLink(root, name, target)) return outside;
        continue;
      }
      const resolved = resolve(path.posix.dirname(name).split("/"), target, { n: 0 });
      if (resolved.kind === "outside") return outside;
      // A relative link that ends on a host-tool link is one too: only in staging_dir/host/bin.
      if (resolved.kind === "host" && !isHostToolDir(root, name)) return outside;
    }
    if (entry.type === "hardlink" && target !== undefined) {
      const parts = target.split("/");
      if (
        target.startsWith("/") ||
        parts.some((p) => p === ".." || p === "." || p === "") ||
        (parts[0] !== root && target !== root)
      ) {
        return fail(`hardlink "${name}" points outside the ImageBuilder ("${target}")`);
      }
      const targetVia = throughSymlink(target);
      if (targetVia !== undefined)
        return fail(`hardlink "${name}" points through the symlink "${targetVia}"`);
      // link(2) does not follow: a hardlink to a relative symlink is that symlink in another folder.
      if (symlinks.has(target)) return fail(`hardlink "${name}" points to the symlink "${target}"`);
    }
  }
  return { ok: true, topDir: root, totalBytes };
}
