import { createReadStream, type ReadStream } from "node:fs";
import { copyFile, lstat, mkdir, readdir, realpath, rename, rm, stat } from "node:fs/promises";
import path from "node:path";

const HASH_RE = /^[0-9a-f]{64}$/;
// Image and manifest names as OpenWrt writes them; never a path separator.
const NAME_RE = /^[\w][\w.+,~-]*$/;

export interface StoredFile {
  stream: ReadStream;
  size: number;
  mtime: Date;
}

export interface StoreEntry {
  hash: string;
  bytes: number;
  mtimeMs: number;
}

/** Finished build files under `<public_path>/store/<request_hash>/`. */
export class LocalStore {
  readonly root: string;

  constructor(publicPath: string) {
    this.root = path.join(publicPath, "store");
  }

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true });
  }

  /**
   * Copies finished files into the store. They land in a temporary folder first and are
   * renamed into place, so a reader never sees half a build.
   */
  async put(hash: string, files: { name: string; path: string }[]): Promise<void> {
    if (!HASH_RE.test(hash)) throw new Error(`invalid store hash ${hash}`);
    const tmp = path.join(this.root, `.tmp-${hash}-${process.pid}-${Date.now()}`);
    await mkdir(tmp, { recursive: true });
    try {
      for (const file of files) {
        if (!NAME_RE.test(file.name)) throw new Error(`refusing to store file with unsafe name ${file.name}`);
        await copyFile(file.path, path.join(tmp, file.name));
      }
      const dest = path.join(this.root, hash);
      await rm(dest, { recursive: true, force: true });
      await rename(tmp, dest);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** Opens a stored file, or undefined for anything that is not a regular file inside the store. */
  async open(hash: string, name: string): Promise<StoredFile | undefined> {
    if (!HASH_RE.test(hash) || !NAME_RE.test(name)) return undefined;
    const file = path.join(this.root, hash, name);
    try {
      const info = await lstat(file);
      if (!info.isFile()) return undefined; // symlinks and folders are never served
      const real = await realpath(file);
      const realRoot = await realpath(this.root);
      if (!real.startsWith(realRoot + path.sep)) return undefined;
      return { stream: createReadStream(real), size: info.size, mtime: info.mtime };
    } catch {
      return undefined;
    }
  }

  async remove(hash: string): Promise<void> {
    if (!HASH_RE.test(hash)) return;
    await rm(path.join(this.root, hash), { recursive: true, force: true });
  }

  async list(): Promise<StoreEntry[]> {
    const entries: StoreEntry[] = [];
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return entries;
    }
    for (const name of names) {
      if (!HASH_RE.test(name)) continue;
      const dir = path.join(this.root, name);
      let bytes = 0;
      let mtimeMs = 0;
      for (const file of await readdir(dir)) {
        const info = await stat(path.join(dir, file));
        bytes += info.size;
        mtimeMs = Math.max(mtimeMs, info.mtimeMs);
      }
      entries.push({ hash: name, bytes, mtimeMs });
    }
    return entries;
  }
}
