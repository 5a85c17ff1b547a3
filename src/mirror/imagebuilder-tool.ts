/**
 * Typed access to imagebuilder-files/ib-tool.mjs, the program inside the fake ImageBuilder.
 * The generator uses the same code for package archives, indexes and images, so what the
 * mirror publishes (profiles.json hashes, indexes) matches what the ImageBuilder builds.
 */

export type PackageManager = "opkg" | "apk";

/** Both src/mirror/*.ts and dist/mirror/*.js sit two folders below the repository root. */
export const IMAGEBUILDER_FILES = new URL("../../src/mirror/imagebuilder-files/", import.meta.url);

export interface ToolFile {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  data?: Buffer;
  target?: string;
}

/** A package as the indexes describe it (also what the tool's parsers return). */
export interface ToolPackage {
  name: string;
  version: string;
  arch: string;
  depends: string[];
  provides: string[];
  conflicts: string[];
  abi: string;
  installedSize: number;
  filename: string;
  size: number;
  sha256: string;
  section: string;
  description: string;
}

export interface ToolImageDef {
  suffix: string;
  type: string;
  filesystem: string;
}

export interface ToolProfile {
  titles: { vendor?: string; model?: string; variant?: string; title?: string }[];
  device_packages: string[];
  supported_devices: string[];
  image_size: number | null;
  has_image_metadata: number;
  images: ToolImageDef[];
}

/** `.targetinfo.json` inside the ImageBuilder. */
export interface ToolTargetInfo {
  target: string;
  board: string;
  subtarget: string;
  arch: string;
  arch_packages: string;
  version_number: string;
  version_code: string;
  version_filenames: boolean;
  source_date_epoch: number;
  package_manager: PackageManager;
  default_packages: string[];
  linux_kernel: { version: string; release: string; vermagic: string } | null;
  kernel_size: number;
  filesystems: string[];
  rootfs_partsize_mb: number | null;
  profiles: Record<string, ToolProfile>;
}

export interface ToolImage {
  name: string;
  type: string;
  filesystem: string;
  sha256: string;
  sha256_unsigned: string;
}

export interface ImageBuilderTool {
  sha256(data: Buffer | string): string;
  gzip(data: Buffer): Buffer;
  gunzip(data: Buffer): Buffer;
  createTar(entries: ToolFile[], mtime: number): Buffer;
  parseTar(data: Buffer): ToolFile[];
  /** `entries` plus every parent folder, sorted by path. */
  withDirs(entries: ToolFile[]): ToolFile[];
  /** include/image.mk's image prefix, EXTRA_IMAGE_NAME after the version. */
  imagePrefix(info: ToolTargetInfo, extraImageName: string, profile: string): string;
  buildPackageArchive(pkg: ToolPackage, files: ToolFile[], format: PackageManager, mtime: number): Buffer;
  readPackageFiles(archive: Buffer, format: PackageManager): ToolFile[];
  formatOpkgIndex(packages: ToolPackage[]): string;
  parseOpkgIndex(text: string): ToolPackage[];
  adbPayload(architecture: string, packages: ToolPackage[]): Buffer;
  formatAdb(payload: Buffer, signatureText: string): Buffer;
  splitAdb(data: Buffer): { payload: Buffer; signature: string } | undefined;
  parseAdbPayload(payload: Buffer): ToolPackage[];
  usignVerify(
    message: Buffer | string,
    signatureText: string,
    keysDir: string,
  ): { ok: boolean; reason?: string };
  defaultImages(
    info: ToolTargetInfo,
    profileId: string,
    packages: ToolPackage[],
    archives: Map<string, Buffer>,
  ): { images: ToolImage[]; manifest: string };
}

let loading: Promise<ImageBuilderTool> | undefined;

export function loadImageBuilderTool(): Promise<ImageBuilderTool> {
  loading ??= import(new URL("ib-tool.mjs", IMAGEBUILDER_FILES).href) as Promise<ImageBuilderTool>;
  return loading;
}
