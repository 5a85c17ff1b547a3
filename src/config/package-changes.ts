import { readFileSync } from "node:fs";

/** One entry of a branch's `package_changes`, as LuCI and owut read it from overview.json. */
export interface PackageChange {
  source?: string;
  target?: string;
  revision: number;
  mandatory?: boolean;
}

export interface AddRule {
  version: string;
  target: string;
  profiles?: string[];
  add: string[];
}

export interface PackageChangesData {
  renames: PackageChange[];
  add_rules: AddRule[];
  replace_rules: { version: string; replace: Record<string, string> }[];
  remove_rules: { version: string; remove: string[] }[];
  language_pack_prefix_renames: { since: string; from: string; to: string }[];
  drop: { pattern: string }[];
  branches: Record<
    string,
    { path: string; snapshot?: boolean; branch_off_rev?: number; package_manager: "opkg" | "apk" }
  >;
}

export interface UsignKeys {
  [branch: string]: string;
}

// Both the src/ and the dist/ module sit two folders below the repository root.
const DATA_DIR = new URL("../../data/", import.meta.url);

let cachedChanges: PackageChangesData | undefined;
let cachedKeys: UsignKeys | undefined;

/** OpenWrt's package renames, additions and branch table (data/openwrt-package-changes.json). */
export function loadPackageChanges(): PackageChangesData {
  cachedChanges ??= JSON.parse(
    readFileSync(new URL("openwrt-package-changes.json", DATA_DIR), "utf8"),
  ) as PackageChangesData;
  return cachedChanges;
}

/** The usign public keys OpenWrt publishes for some branches (data/openwrt-usign-keys.json). */
export function loadUsignKeys(): UsignKeys {
  if (!cachedKeys) {
    const raw = JSON.parse(readFileSync(new URL("openwrt-usign-keys.json", DATA_DIR), "utf8")) as Record<
      string,
      string
    >;
    cachedKeys = Object.fromEntries(Object.entries(raw).filter(([k]) => !k.startsWith("_")));
  }
  return cachedKeys;
}

/**
 * The renames a branch advertises: entries up to its branch-off revision, or all of them
 * for snapshots (see renames_note in the data file).
 */
export function packageChangesFor(branchOffRev: number | undefined, snapshot: boolean): PackageChange[] {
  const { renames } = loadPackageChanges();
  if (snapshot || branchOffRev === undefined) return renames.map((r) => ({ ...r }));
  return renames.filter((r) => r.revision <= branchOffRev).map((r) => ({ ...r }));
}
