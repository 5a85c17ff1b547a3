/** Parsers for what OpenWrt's ImageBuilder prints; pure functions, tested on real texts. */

export interface ImageBuilderInfo {
  target?: string;
  revision: string;
  defaultPackages: string[];
  /** Device packages per profile id. */
  profilePackages: Record<string, string[]>;
}

/** Parses `make info`: `Current Revision: "r24012-d8dd03c46f"`, `Default Packages:` and per-profile `Packages:`. */
export function parseMakeInfo(text: string): ImageBuilderInfo {
  const revision = /^Current Revision: "?([^"\n]+)"?\s*$/m.exec(text)?.[1]?.trim() ?? "";
  const target = /^Current Target: "?([^"\n]+)"?\s*$/m.exec(text)?.[1]?.trim();
  const defaults = /^Default Packages:(.*)$/m.exec(text)?.[1] ?? "";
  const profilePackages: Record<string, string[]> = {};
  let current: string | undefined;
  for (const line of text.split("\n")) {
    const header = /^([\w.,-]+):\s*$/.exec(line);
    if (header) {
      current = header[1];
      continue;
    }
    const pkgs = /^\s+Packages:(.*)$/.exec(line);
    if (pkgs && current !== undefined) profilePackages[current] = splitWords(pkgs[1] ?? "");
  }
  const info: ImageBuilderInfo = { revision, defaultPackages: splitWords(defaults), profilePackages };
  if (target !== undefined) info.target = target;
  return info;
}

function splitWords(text: string): string[] {
  return text.split(/\s+/).filter(Boolean);
}

/** Parses a manifest: opkg prints `name - version`, apk prints `name version`. */
export function parseManifest(text: string): Record<string, string> {
  const manifest: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const opkg = /^(\S+) - (\S+)$/.exec(line);
    const apk = /^(\S+) (\S+)$/.exec(line);
    const match = opkg ?? apk;
    if (match) manifest[match[1] as string] = match[2] as string;
  }
  return manifest;
}

export interface PackageProblems {
  missing: string[];
  conflicts: string[];
}

/**
 * Finds missing and conflicting packages in opkg's ("Collected errors:") and apk's
 * ("ERROR: unable to select packages:") error texts.
 */
export function parsePackageErrors(text: string): PackageProblems {
  const missing = new Set<string>();
  const conflicts = new Set<string>();
  const conflictHeads = new Set<string>();
  for (const line of text.split("\n")) {
    let m = /\* opkg_install_cmd: Cannot install package (\S+?)\.?\s*$/.exec(line);
    if (m) {
      missing.add(m[1] as string);
      continue;
    }
    m = /\* check_conflicts_for: The following packages conflict with (\S+?):\s*$/.exec(line);
    if (m) {
      conflicts.add(m[1] as string);
      conflictHeads.add(m[1] as string);
      continue;
    }
    m = /\* check_conflicts_for:\s+(\S+)\s*\*?\s*$/.exec(line);
    if (m) {
      conflicts.add(m[1] as string);
      continue;
    }
    m =
      /\* (?:satisfy_dependencies_for|pkg_hash_check_unresolved): Cannot satisfy the following dependencies for (\S+?):?\s*$/.exec(
        line,
      );
    if (m) continue;
    m = /^\s+(\S+) \(no such package\):\s*$/.exec(line);
    if (m) {
      missing.add(m[1] as string);
      continue;
    }
    m = /^\s+conflicts: (\S+?)-\d[^\s[]*\[/.exec(line);
    if (m) {
      conflicts.add(m[1] as string);
      continue;
    }
  }
  // opkg reports "Cannot install package X." for X itself when X conflicts: that is not missing.
  for (const name of conflictHeads) missing.delete(name);
  return { missing: [...missing].sort(), conflicts: [...conflicts].sort() };
}

export function impossibleSelectionDetail(problems: PackageProblems): string {
  const parts: string[] = [];
  if (problems.missing.length > 0) parts.push(`missing (${problems.missing.join(", ")})`);
  if (problems.conflicts.length > 0) parts.push(`conflicts (${problems.conflicts.join(", ")})`);
  return `Error: Impossible package selection: ${parts.join(" ")}`;
}

export function exceedsStorage(text: string): boolean {
  return /is too big|out of space\?/.test(text);
}
