/** The ImageBuilder archive as listed in a target's sha256sums. */
export interface ImageBuilderArchiveRef {
  name: string;
  sha256: string;
  compression: "zst" | "xz";
  /** The sha256sums line, normalised as "<sha256> *<name>"; its hash is the revision key. */
  line: string;
}

// Releases: openwrt-imagebuilder-23.05.5-ath79-generic.Linux-x86_64.tar.xz;
// snapshots: openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.zst. The name goes into a
// URL, so it may not contain "/" or anything else that changes the path.
const ARCHIVE = /^openwrt-imagebuilder-[A-Za-z0-9._+-]*\.Linux-x86_64\.tar\.(zst|xz)$/;
const LINE = /^([0-9a-fA-F]{64}) [ *](.+)$/;

/** Finds the ImageBuilder in a sha256sums file; .tar.zst wins over .tar.xz when both exist. */
export function findImageBuilderArchive(sha256sums: string): ImageBuilderArchiveRef | undefined {
  let found: ImageBuilderArchiveRef | undefined;
  for (const raw of sha256sums.split("\n")) {
    const m = LINE.exec(raw.trimEnd());
    if (!m) continue;
    const name = m[2] as string;
    const archive = ARCHIVE.exec(name);
    if (!archive) continue;
    const sha256 = (m[1] as string).toLowerCase();
    const ref: ImageBuilderArchiveRef = {
      name,
      sha256,
      compression: archive[1] as "zst" | "xz",
      line: `${sha256} *${name}`,
    };
    if (found === undefined || (found.compression === "xz" && ref.compression === "zst")) found = ref;
  }
  return found;
}
