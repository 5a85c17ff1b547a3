import type { PackageVersions, TargetIndex } from "./upstream-documents.js";

/**
 * Reads an apk `index.json` (format version 2, published beside `packages.adb` for
 * snapshots and 25.x): `{"version": 2, "architecture": "x86_64", "packages": {name: version}}`.
 * Accepts the JSON text or the parsed value; throws an Error describing what is wrong.
 */
export function parseApkIndex(json: unknown): TargetIndex {
  const value: unknown = typeof json === "string" ? JSON.parse(json) : json;
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error("apk index.json is not a JSON object");
  }
  const doc = value as { version?: unknown; architecture?: unknown; packages?: unknown };
  if (doc.version !== 2) {
    throw new Error(
      `apk index.json has version ${JSON.stringify(doc.version)}; only version 2 is understood`,
    );
  }
  if (typeof doc.packages !== "object" || doc.packages === null || Array.isArray(doc.packages)) {
    throw new Error("apk index.json has no packages object");
  }
  // No prototype: package names come from the network ("constructor" must be a plain key).
  const packages: PackageVersions = Object.create(null) as PackageVersions;
  for (const [name, version] of Object.entries(doc.packages as Record<string, unknown>)) {
    if (typeof version !== "string") throw new Error(`apk index.json: version of ${name} is not a string`);
    packages[name] = version;
  }
  return { architecture: typeof doc.architecture === "string" ? doc.architecture : "", packages };
}
