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

export interface FileClash {
  /** The path inside the image, e.g. /etc/init.d/dnsmasq. */
  file: string;
  /** The package that already installed the file. */
  owner: string;
  /** The package that wanted to install it too. */
  wanter: string;
}

export interface PackageProblems {
  missing: string[];
  conflicts: string[];
  /** For each missing dependency, the packages that need it (not the user's own request). */
  requiredBy: Record<string, string[]>;
  clashes: FileClash[];
  /** A feed's signature did not verify: the server's feeds or keys are broken, not the selection. */
  badSignature: boolean;
  /** Packages whose install script (postinst) failed. */
  failedScripts: string[];
}

// apk prints packages as <name>-<version>-r<n>; names contain digits and dashes (kmod-8021q).
const APK_PKG = /^(.+?)-(\d[^\s-]*-r\d+)$/;

function apkName(nameVersion: string): string {
  return APK_PKG.exec(nameVersion)?.[1] ?? nameVersion;
}

// opkg installs into $(TARGET_DIR) = build_dir/target-*/root-<board>: keep the image's path only.
function imagePath(file: string): string {
  const m = /(?:^<TARGET_DIR>|\/root-[^/]+)(\/.*)$/.exec(file);
  const inside = m?.[1] ?? file;
  return inside.startsWith("/") ? inside : `/${inside}`;
}

/**
 * Reads opkg's ("Collected errors:") and apk's ("ERROR: unable to select packages:") error
 * texts: missing packages (with who needs them), conflicts, file clashes, failing install
 * scripts and feed signature failures.
 */
export function parsePackageErrors(text: string): PackageProblems {
  const cannotInstall = new Set<string>();
  const missing = new Set<string>();
  const conflicts = new Set<string>();
  const conflictHeads = new Set<string>();
  const requiredBy = new Map<string, Set<string>>();
  const dependents = new Set<string>();
  const clashes: FileClash[] = [];
  const failedScripts = new Set<string>();
  let badSignature = false;
  let pendingClash: { file: string; wanter: string } | undefined;
  let unresolvedFor: string | undefined;
  let apkBlock: string | undefined;
  const need = (dep: string, by: string): void => {
    missing.add(dep);
    if (by === "world") return; // apk's name for the user's own selection
    dependents.add(by);
    let set = requiredBy.get(dep);
    if (!set) requiredBy.set(dep, (set = new Set()));
    set.add(by);
  };

  for (const line of text.split("\n")) {
    if (
      /Signature check failed|Remove wrong Signature file|Failed to verify the signature of|UNTRUSTED signature|BAD signature/.test(
        line,
      )
    ) {
      badSignature = true;
      continue;
    }
    let m = /\* opkg_install_cmd: Cannot install package (\S+?)\.?\s*$/.exec(line);
    if (m) {
      cannotInstall.add(m[1] as string);
      continue;
    }
    m = /\* pkg_hash_check_unresolved: cannot find dependency (\S+) for (\S+?)\s*$/.exec(line);
    if (m) {
      need(m[1] as string, m[2] as string);
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
    m = /\* check_data_file_clashes: Package (\S+) wants to install file (.+?)\s*$/.exec(line);
    if (m) {
      pendingClash = { wanter: m[1] as string, file: imagePath(m[2] as string) };
      continue;
    }
    m = /But that file is already provided by package\s+\*?\s*(\S+)\s*$/.exec(line);
    if (m && pendingClash) {
      const clash = { ...pendingClash, owner: m[1] as string };
      pendingClash = undefined;
      if (!clashes.some((c) => c.owner === clash.owner && c.wanter === clash.wanter)) clashes.push(clash);
      continue;
    }
    m = /pkg_run_script: package "([^"]+)" (?:pre|post)inst script returned status/.exec(line);
    if (m) {
      failedScripts.add(m[1] as string);
      continue;
    }
    m =
      /(\S+?)\.(?:pre|post)-(?:install|upgrade)\b.*(?:has failed with exit code|script exited with error)/.exec(
        line,
      );
    if (m) {
      failedScripts.add(apkName((m[1] as string).replace(/^ERROR:\s*/, "")));
      continue;
    }
    m = /(?:^|ERROR: )(\S+): trying to overwrite (\S+) owned by (\S+?)\.?\s*$/.exec(line);
    if (m) {
      const clash = {
        wanter: apkName(m[1] as string),
        owner: apkName(m[3] as string),
        file: imagePath(m[2] as string),
      };
      if (!clashes.some((c) => c.owner === clash.owner && c.wanter === clash.wanter)) clashes.push(clash);
      continue;
    }
    m =
      /\* (?:satisfy_dependencies_for|pkg_hash_check_unresolved): Cannot satisfy the following dependencies for (\S+?):?\s*$/.exec(
        line,
      );
    if (m) {
      unresolvedFor = m[1] as string;
      continue;
    }
    m = /^\s*\*\s+(\S+?)(?:\s+\(.*\))?\s*\*?\s*$/.exec(line);
    if (m && unresolvedFor !== undefined) {
      need(m[1] as string, unresolvedFor);
      continue;
    }
    unresolvedFor = undefined;
    // apk: a block per package, "  <name> (no such package):" or "  <name>-<version>:".
    m = /^ {2}(\S+) \(no such package\):\s*$/.exec(line);
    if (m) {
      apkBlock = m[1] as string;
      missing.add(apkBlock);
      continue;
    }
    m = /^ {2}(\S+):\s*$/.exec(line);
    if (m) {
      apkBlock = apkName(m[1] as string);
      continue;
    }
    m = /^ {4}required by: (.*)$/.exec(line);
    if (m && apkBlock !== undefined && missing.has(apkBlock)) {
      for (const by of (m[1] as string).split(/\s+/).filter(Boolean)) {
        need(apkBlock, apkName(by.replace(/\[.*$/, "")));
      }
      continue;
    }
    m = /^ {4}(?:conflicts|breaks): (.*)$/.exec(line);
    if (m) {
      if (apkBlock !== undefined) conflicts.add(apkBlock);
      for (const other of (m[1] as string).split(/\s+/).filter(Boolean)) {
        conflicts.add(apkName(other.replace(/\[.*$/, "")));
      }
      continue;
    }
  }
  // opkg also says "Cannot install package X." for X itself when X conflicts, clashes, needs a
  // missing package or its install script failed: X is not what is missing.
  const clashing = new Set(clashes.flatMap((c) => [c.owner, c.wanter]));
  for (const name of cannotInstall) {
    if (!conflictHeads.has(name) && !dependents.has(name) && !clashing.has(name) && !failedScripts.has(name))
      missing.add(name);
  }
  for (const name of dependents) if (!requiredBy.has(name)) missing.delete(name);
  return {
    missing: [...missing].sort(),
    conflicts: [...conflicts].sort(),
    requiredBy: Object.fromEntries(
      [...requiredBy].sort(([a], [b]) => a.localeCompare(b)).map(([dep, by]) => [dep, [...by].sort()]),
    ),
    clashes,
    badSignature,
    failedScripts: [...failedScripts].sort(),
  };
}

// 1,000 bogus names must not become a 20 KB detail (issue #9, amplification).
const MAX_NAMED = 20;

function nameList(names: string[]): string {
  if (names.length <= MAX_NAMED) return names.join(", ");
  return `${names.slice(0, MAX_NAMED).join(", ")} and ${names.length - MAX_NAMED} more`;
}

export function impossibleSelectionDetail(problems: PackageProblems): string {
  const parts: string[] = [];
  if (problems.missing.length > 0) parts.push(`missing (${nameList(problems.missing)})`);
  if (problems.conflicts.length > 0) parts.push(`conflicts (${nameList(problems.conflicts)})`);
  let detail = `Error: Impossible package selection: ${parts.join(" ")}`;
  const needs = Object.entries(problems.requiredBy).slice(0, MAX_NAMED);
  if (needs.length > 0) {
    detail += `; ${needs.map(([dep, by]) => `${dep} is required by ${nameList(by)}`).join("; ")}`;
  }
  return detail;
}

export interface PackageFailure {
  detail: string;
  /** False when the server (its feeds or keys) is at fault: never cached as the user's doing. */
  userFault: boolean;
}

/**
 * Turns a failed `make manifest` or `make image` into a detail a person can act on, or
 * undefined when the text says nothing we recognise.
 */
export function describePackageFailure(
  text: string,
  context: { customRepositories: boolean } = { customRepositories: false },
): PackageFailure | undefined {
  const problems = parsePackageErrors(text);
  // Checked first: with a bad feed signature opkg says "Cannot install package" for every
  // package of that feed, base-files included, and apk says "no such package".
  if (problems.badSignature && context.customRepositories) {
    // The request brought feeds and keys of its own: the likely culprit, and the user's to fix.
    return {
      detail:
        "Error: The signature of a package feed did not verify. Check that repository_keys holds the public key of every repository you added (the usign key line for opkg feeds, the PEM key for apk feeds).",
      userFault: true,
    };
  }
  if (problems.badSignature) {
    return {
      detail:
        "Error: The server could not verify the signature of a package feed. This is a problem of the server, not of the selected packages; please try again later or tell the server operator.",
      userFault: false,
    };
  }
  const clash = problems.clashes[0];
  if (clash) {
    return {
      detail: `Error: Impossible package selection: ${clash.owner} and ${clash.wanter} both install ${clash.file}; remove one (e.g. add -${clash.wanter})`,
      userFault: true,
    };
  }
  if (problems.missing.length + problems.conflicts.length > 0) {
    return { detail: impossibleSelectionDetail(problems), userFault: true };
  }
  if (problems.failedScripts.length > 0) {
    return {
      detail: `Error: The install script of ${nameList(problems.failedScripts)} failed; remove the package or report it to its maintainer.`,
      userFault: true,
    };
  }
  return undefined;
}

export function exceedsStorage(text: string): boolean {
  return /is too big|out of space\?/.test(text);
}
