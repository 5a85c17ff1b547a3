import Type, { type Static } from "typebox";

/**
 * The documents the OpenWrt download server publishes, as TypeBox schemas so the client can
 * check what it received (a half-written or HTML error page must not reach validation) and
 * the TypeScript types cannot drift from the checks. Unknown keys are allowed everywhere:
 * OpenWrt adds fields over time (`linux_kernel` appeared with 24.10).
 */

/** `/.versions.json`. */
export const VersionsJsonSchema = Type.Object({
  // downloads.openwrt.org publishes `"upcoming_version": null` between release candidates.
  stable_version: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  oldstable_version: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  upcoming_version: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  versions_list: Type.Array(Type.String()),
});
export type VersionsJson = Static<typeof VersionsJsonSchema>;

/** `{path}/.targets.json`: target → package architecture, e.g. `{"ath79/generic": "mips_24kc"}`. */
export const TargetsJsonSchema = Type.Record(Type.String(), Type.String());
export type TargetsJson = Static<typeof TargetsJsonSchema>;

export const ProfileImageSchema = Type.Object({
  name: Type.String(),
  type: Type.String(),
  filesystem: Type.Optional(Type.String()),
  sha256: Type.Optional(Type.String()),
  sha256_unsigned: Type.Optional(Type.String()),
});
export type ProfileImage = Static<typeof ProfileImageSchema>;

export const ProfileTitleSchema = Type.Object({
  vendor: Type.Optional(Type.String()),
  model: Type.Optional(Type.String()),
  variant: Type.Optional(Type.String()),
  title: Type.Optional(Type.String()),
});
export type ProfileTitle = Static<typeof ProfileTitleSchema>;

/** One entry of `profiles.json` → `profiles`. */
export const ProfileInfoSchema = Type.Object({
  device_packages: Type.Optional(Type.Array(Type.String())),
  image_prefix: Type.Optional(Type.String()),
  images: Type.Optional(Type.Array(ProfileImageSchema)),
  supported_devices: Type.Optional(Type.Array(Type.String())),
  titles: Type.Optional(Type.Array(ProfileTitleSchema)),
});
export type ProfileInfo = Static<typeof ProfileInfoSchema>;

/** Present from 24.10 on: names the `kmods/<version>-<release>-<vermagic>/` folder. */
export const LinuxKernelSchema = Type.Object({
  version: Type.String(),
  release: Type.String(),
  vermagic: Type.String(),
});
export type LinuxKernel = Static<typeof LinuxKernelSchema>;

/**
 * `{path}/targets/{target}/profiles.json`, as parseProfilesJson (profiles-json.ts) returns it:
 * upstream documents are read leniently there, not checked against this schema.
 */
export const ProfilesJsonSchema = Type.Object({
  arch_packages: Type.String(),
  default_packages: Type.Optional(Type.Array(Type.String())),
  metadata_version: Type.Optional(Type.Number()),
  profiles: Type.Record(Type.String(), ProfileInfoSchema),
  source_date_epoch: Type.Optional(Type.Number()),
  target: Type.String(),
  version_code: Type.String(),
  version_number: Type.String(),
  linux_kernel: Type.Optional(LinuxKernelSchema),
});
export type ProfilesJson = Static<typeof ProfilesJsonSchema>;

export type PackageManager = "opkg" | "apk";

/** A package index: name → version, ABI suffixes already stripped. */
export type PackageVersions = Record<string, string>;

/** The target's own packages (kmods merged in), as auc and owut read them from `index.json`. */
export interface TargetIndex {
  architecture: string;
  packages: PackageVersions;
  /** profiles.json names a kmods folder that the download server does not have (yet). */
  kmodsMissing?: boolean;
}
