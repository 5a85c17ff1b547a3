import type {
  LinuxKernel,
  ProfileImage,
  ProfileInfo,
  ProfileTitle,
  ProfilesJson,
} from "./upstream-documents.js";

/**
 * Reads a `profiles.json` as leniently as upstream ASU does (it indexes the dict and calls
 * `int()`), because the field set changed with every release and copies of OpenWrt's scripts
 * wrote some numbers as strings:
 *   - 19.07 wrote `version_commit` instead of `version_code` and no `arch_packages`;
 *   - 21.02-era `json_add_image_info.py` copies wrote `"source_date_epoch": "1612136917"`
 *     (upstream ASU's own test fixture has exactly that);
 *   - `linux_kernel` appeared with 24.10; `null` appears where a value was unknown.
 * Numbers given as strings are converted, `null`s and malformed optional fields are dropped,
 * unknown fields are kept (they reach clients through `{profile}.json` and build results).
 * Only what makes every build impossible is refused: without a `profiles` object no profile
 * can be resolved. The Error's message names the field.
 */
export function parseProfilesJson(value: unknown, fallbackTarget: string): ProfilesJson {
  if (!isRecord(value)) throw new Error("the document is not a JSON object");
  if (!isRecord(value.profiles)) throw new Error('field "profiles" is missing or not an object');

  const profiles: Record<string, ProfileInfo> = {};
  for (const [id, info] of Object.entries(value.profiles)) {
    // One broken entry makes only that profile unbuildable, not the whole target.
    if (isRecord(info)) profiles[id] = profileInfo(info);
  }

  const out: Record<string, unknown> = { ...withoutNulls(value) };
  out.profiles = profiles;
  out.target = text(value.target) ?? fallbackTarget;
  out.version_code = text(value.version_code) ?? text(value.version_commit) ?? "";
  out.version_number = text(value.version_number) ?? "";
  out.arch_packages = text(value.arch_packages) ?? "";
  setOrDelete(out, "metadata_version", integer(value.metadata_version));
  setOrDelete(out, "source_date_epoch", integer(value.source_date_epoch));
  setOrDelete(out, "default_packages", strings(value.default_packages));
  setOrDelete(out, "linux_kernel", linuxKernel(value.linux_kernel));
  return out as unknown as ProfilesJson;
}

function profileInfo(raw: Record<string, unknown>): ProfileInfo {
  const out: Record<string, unknown> = { ...withoutNulls(raw) };
  setOrDelete(out, "image_prefix", text(raw.image_prefix));
  setOrDelete(out, "device_packages", strings(raw.device_packages));
  setOrDelete(out, "supported_devices", strings(raw.supported_devices));
  setOrDelete(out, "titles", Array.isArray(raw.titles) ? raw.titles.filter(isRecord).map(title) : undefined);
  setOrDelete(
    out,
    "images",
    Array.isArray(raw.images)
      ? raw.images.filter(isRecord).flatMap((image) => {
          const parsed = profileImage(image);
          return parsed ? [parsed] : [];
        })
      : undefined,
  );
  return out as ProfileInfo;
}

function profileImage(raw: Record<string, unknown>): ProfileImage | undefined {
  const name = text(raw.name);
  if (name === undefined) return undefined;
  const out: Record<string, unknown> = { ...withoutNulls(raw), name, type: text(raw.type) ?? "" };
  for (const key of ["filesystem", "sha256", "sha256_unsigned"] as const)
    setOrDelete(out, key, text(raw[key]));
  return out as ProfileImage;
}

function title(raw: Record<string, unknown>): ProfileTitle {
  const out: Record<string, unknown> = { ...withoutNulls(raw) };
  for (const key of ["vendor", "model", "variant", "title"] as const) setOrDelete(out, key, text(raw[key]));
  return out as ProfileTitle;
}

function linuxKernel(raw: unknown): LinuxKernel | undefined {
  if (!isRecord(raw)) return undefined;
  const version = text(raw.version);
  const release = text(raw.release);
  const vermagic = text(raw.vermagic);
  if (version === undefined || release === undefined || vermagic === undefined) return undefined;
  return { version, release, vermagic };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function withoutNulls(raw: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== null));
}

function setOrDelete(out: Record<string, unknown>, key: string, value: unknown): void {
  if (value === undefined) delete out[key];
  else out[key] = value;
}

/** A string, or a number written where a string was expected. */
function text(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  return undefined;
}

/** An integer, or a string of digits (as Python's `int()` reads it). */
function integer(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value)) return Math.trunc(value);
  if (typeof value === "string" && /^\s*[+-]?\d+\s*$/.test(value)) return Number.parseInt(value, 10);
  return undefined;
}

/** A list of strings; a whitespace-separated string (as the scripts' env vars were) is split. */
function strings(value: unknown): string[] | undefined {
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === "string");
  if (typeof value === "string") return value.split(/\s+/).filter(Boolean);
  return undefined;
}
