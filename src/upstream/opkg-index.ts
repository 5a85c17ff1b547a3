import type { PackageVersions } from "./upstream-documents.js";

/** One stanza of an opkg `Packages` file: field name → value (continuation lines joined with "\n"). */
export type OpkgStanza = Record<string, string>;

/**
 * Splits an opkg `Packages` file into stanzas. Stanzas are separated by blank lines; a line
 * that starts with a space or tab continues the previous field (multi-line `Description:`).
 */
export function parseOpkgStanzas(text: string): OpkgStanza[] {
  const stanzas: OpkgStanza[] = [];
  let current: OpkgStanza = {};
  let lastField: string | undefined;
  const flush = () => {
    if (Object.keys(current).length > 0) stanzas.push(current);
    current = {};
    lastField = undefined;
  };
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === "") {
      flush();
      continue;
    }
    if (line.startsWith(" ") || line.startsWith("\t")) {
      if (lastField !== undefined) current[lastField] += `\n${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    lastField = line.slice(0, colon).trim();
    current[lastField] = line.slice(colon + 1).trim();
  }
  flush();
  return stanzas;
}

/**
 * The package name a user asks for: opkg feeds name shared libraries with their ABI version
 * appended (`libubox20240329` with `ABIVersion: 20240329`), while routers (rpcd's packagelist
 * for LuCI) and the ImageBuilder with STRIP_ABI=1 use the plain name `libubox`.
 */
export function stripAbiVersion(name: string, abiVersion: string | undefined): string {
  if (!abiVersion || name.length <= abiVersion.length || !name.endsWith(abiVersion)) return name;
  return name.slice(0, -abiVersion.length);
}

/** `Packages` text → `{name: version}` with ABI suffixes stripped; the first stanza of a name wins. */
export function parseOpkgPackages(text: string): PackageVersions {
  // No prototype: package names come from the network ("constructor" must be a plain key).
  const packages: PackageVersions = Object.create(null) as PackageVersions;
  for (const stanza of parseOpkgStanzas(text)) {
    const raw = stanza.Package;
    const version = stanza.Version;
    if (!raw || version === undefined) continue;
    const name = stripAbiVersion(raw, stanza.ABIVersion);
    if (!(name in packages)) packages[name] = version;
  }
  return packages;
}

/** The `Architecture:` of the first stanza that is not `all`, if any. */
export function opkgArchitecture(text: string): string | undefined {
  for (const stanza of parseOpkgStanzas(text)) {
    const arch = stanza.Architecture;
    if (arch && arch !== "all") return arch;
  }
  return undefined;
}
