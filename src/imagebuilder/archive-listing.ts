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
 * here because no member may be extracted through a symlink; any other absolute or escaping
 * link is refused.
 */
function isHostToolLink(top: string, name: string, target: string): boolean {
  return (
    path.posix.dirname(name) === `${top}/staging_dir/host/bin` &&
    /^\/(usr\/|bin\/|sbin\/)/.test(target) &&
    !target.split("/").includes("..")
  );
}

export function checkArchiveEntries(entries: ArchiveEntry[], maxUnpackedBytes: number): ArchiveCheck {
  const fail = (reason: string): ArchiveCheck => ({ ok: false, reason });
  if (entries.length === 0) return fail("the archive is empty");

  let top: string | undefined;
  const symlinks = new Set<string>();
  let totalBytes = 0;

  for (const entry of entries) {
    const { name } = entry;
    if (name.startsWith("/")) return fail(`absolute path "${name}"`);
    const parts = name.split("/");
    if (parts.includes("..")) return fail(`".." in path "${name}"`);
    if (name === "" || name === ".") continue;
    const first = parts[0] as string;
    if (top === undefined) top = first;
    else if (first !== top) return fail(`more than one top folder ("${top}" and "${first}")`);
    if (entry.type === "special") return fail(`special file "${name}" (type "${entry.typeChar}")`);
    if (entry.type === "symlink") symlinks.add(path.posix.normalize(name));
    totalBytes += entry.size;
  }
  if (top === undefined) return fail("the archive has no top folder");
  if (top === "." || top === "") return fail("the archive has no top folder");
  if (totalBytes > maxUnpackedBytes) {
    return fail(`it unpacks to ${totalBytes} bytes, more than the limit of ${maxUnpackedBytes}`);
  }

  const inside = (p: string): boolean => p === top || p.startsWith(`${top}/`);
  /** The first symlink among the proper prefixes of `p`, if any. */
  const throughSymlink = (p: string): string | undefined => {
    const parts = path.posix.normalize(p).split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      if (symlinks.has(prefix)) return prefix;
    }
    return undefined;
  };

  for (const entry of entries) {
    const { name } = entry;
    if (name === "" || name === ".") continue;
    const via = throughSymlink(name);
    if (via !== undefined) return fail(`"${name}" would be written through the symlink "${via}"`);
    const target = entry.linkTarget;
    if (entry.type === "symlink" && target !== undefined) {
      if (target === "") return fail(`symlink "${name}" has an empty target`);
      if (target.startsWith("/")) {
        if (!isHostToolLink(top, name, target)) {
          return fail(`symlink "${name}" points outside the ImageBuilder ("${target}")`);
        }
        continue;
      }
      const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(name), target));
      if (!inside(resolved)) return fail(`symlink "${name}" points outside the ImageBuilder ("${target}")`);
    }
    if (entry.type === "hardlink" && target !== undefined) {
      const parts = target.split("/");
      if (target.startsWith("/") || parts.includes("..") || !inside(path.posix.normalize(target))) {
        return fail(`hardlink "${name}" points outside the ImageBuilder ("${target}")`);
      }
      const targetVia = throughSymlink(target);
      if (targetVia !== undefined)
        return fail(`hardlink "${name}" points through the symlink "${targetVia}"`);
    }
  }
  return { ok: true, topDir: top, totalBytes };
}
