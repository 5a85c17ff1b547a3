import { stat } from "node:fs/promises";
import path from "node:path";
import type { ImageBuilderInfo } from "./imagebuilder-output.js";

/** What `make info` said about one ImageBuilder tree; its output has no host paths left. */
export interface CachedMakeInfo {
  info: ImageBuilderInfo;
  stdout: string;
  stderr: string;
}

/**
 * `make info` of each unpacked ImageBuilder, kept by the worker (issue #13): its profiles,
 * default packages and revision depend on the verified tree alone, and running it costs a
 * sandbox start-up and a make run (half a second on this machine) per build.
 *
 * Keyed by the tree's identity (`treeKey`): its path, which names the archive's revision, and
 * its folder's inode and mtime, so a tree unpacked again at the same path is a new key. The
 * pipeline stores only output of runs that nothing of a request could have changed (no custom
 * repositories), and checks the revision against every request as before.
 */
export class MakeInfoCache {
  private readonly entries = new Map<string, CachedMakeInfo>();

  constructor(private readonly maxEntries = 64) {}

  get(key: string): CachedMakeInfo | undefined {
    const hit = this.entries.get(key);
    if (hit !== undefined) {
      // Most recently used last: the first key is the one to drop.
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  set(key: string, value: CachedMakeInfo): void {
    this.entries.delete(key);
    this.entries.set(key, value);
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  get size(): number {
    return this.entries.size;
  }
}

/** The identity of an unpacked tree: path, device, inode and mtime of its top folder. */
export async function treeKey(imagebuilderRoot: string): Promise<string> {
  const root = path.resolve(imagebuilderRoot);
  const st = await stat(root, { bigint: true });
  return `${root}\0${st.dev}:${st.ino}:${st.mtimeNs}`;
}
