import { loadPackageChanges, type PackageChangesData } from "../config/package-changes.js";

export interface PackageChangeContext {
  version: string;
  target: string;
  /** The resolved profile id (after supported_devices mapping). */
  profile: string;
}

/**
 * OpenWrt's package changes between releases (data/openwrt-package-changes.json), applied
 * to a request's package list before building, as the reference server does:
 *   1. replace_rules  (e.g. auc → owut from 24.10 on),
 *   2. language_pack_prefix_renames (luci-i18n-opkg-* → luci-i18n-package-manager-*),
 *   3. add_rules      (packages a target or device needs in a release),
 *   4. remove_rules   (packages that no longer exist),
 *   5. drop           (glob patterns such as luci-i18n-*-en).
 * Removals (`-name`) are renamed and dropped like the names they remove. The order is kept
 * and the result has no duplicates. `data` is injectable for tests.
 */
export function applyPackageChanges(
  packages: string[],
  ctx: PackageChangeContext,
  data: PackageChangesData = loadPackageChanges(),
): string[] {
  let list = packages.map(splitSign);

  for (const rule of data.replace_rules) {
    if (!versionMatches(ctx.version, rule.version)) continue;
    // Object.hasOwn: a package named "toString" must not pick up Object.prototype.toString.
    list = list.map((p) => ({
      ...p,
      name: Object.hasOwn(rule.replace, p.name) ? (rule.replace[p.name] as string) : p.name,
    }));
  }

  for (const rule of data.language_pack_prefix_renames) {
    // Plain string comparison, as upstream: "24.10.1", "25.12.0" and "SNAPSHOT" are all >= "24.10".
    if (ctx.version < rule.since) continue;
    list = list.map((p) =>
      p.name.startsWith(rule.from) ? { ...p, name: rule.to + p.name.slice(rule.from.length) } : p,
    );
  }

  for (const rule of data.add_rules) {
    if (!versionMatches(ctx.version, rule.version)) continue;
    if (rule.target !== "*" && rule.target !== ctx.target) continue;
    if (rule.profiles && !rule.profiles.includes(ctx.profile)) continue;
    for (const name of rule.add) {
      // The device needs it for this release: a request that removes it would not boot properly.
      list = list.filter((p) => !(p.remove && p.name === name));
      if (!list.some((p) => p.name === name)) list.push({ remove: false, name });
    }
  }

  for (const rule of data.remove_rules) {
    if (!versionMatches(ctx.version, rule.version)) continue;
    const gone = new Set(rule.remove);
    list = list.filter((p) => !gone.has(p.name));
  }

  const dropped = data.drop.map((d) => globToRegExp(d.pattern));
  list = list.filter((p) => !dropped.some((re) => re.test(p.name)));

  const seen = new Set<string>();
  const result: string[] = [];
  for (const p of list) {
    const text = (p.remove ? "-" : "") + p.name;
    if (seen.has(text)) continue;
    seen.add(text);
    result.push(text);
  }
  return result;
}

/**
 * A rule's `version` matches requests whose version starts with it at a boundary:
 * "23.05" matches "23.05.4" and "23.05-SNAPSHOT" but "24.1" does not match "24.10";
 * "SNAPSHOT" matches only main-branch snapshots.
 */
export function versionMatches(version: string, ruleVersion: string): boolean {
  if (version === ruleVersion) return true;
  if (!version.startsWith(ruleVersion)) return false;
  const next = version.charAt(ruleVersion.length);
  return next === "." || next === "-";
}

/** `luci-i18n-*-en` → /^luci-i18n-.*-en$/ (only `*` and `?` are special). */
export function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .split("")
    .map((c) => (c === "*" ? ".*" : c === "?" ? "." : c.replace(/[.+^${}()|[\]\\/-]/g, "\\$&")))
    .join("");
  return new RegExp(`^${body}$`);
}

function splitSign(entry: string): { remove: boolean; name: string } {
  const trimmed = entry.replace(/^\+/, "");
  return trimmed.startsWith("-")
    ? { remove: true, name: trimmed.slice(1) }
    : { remove: false, name: trimmed };
}
