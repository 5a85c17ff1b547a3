import { createReadStream, type ReadStream } from "node:fs";
import { lstat, mkdir, readdir, realpath, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { copyOpened, writeNewFile, type OpenedFile } from "../shared/safe-fs.js";

const HASH_RE = /^[0-9a-f]{64}$/;
// Image and manifest names as OpenWrt writes them; never a path separator.
const NAME_RE = /^[\w][\w.+,~-]*$/;

export interface StoredFile {
  stream: ReadStream;
  size: number;
  mtime: Date;
}

/**
 * A file to publish. Build output comes as a descriptor the worker opened without following
 * links (src/shared/safe-fs.ts), with the size and sha256 that profiles.json promised:
 * clients verify that sha256, so it must be the hash of the bytes we serve. Files the worker
 * made itself (manifest, signatures) come as data.
 */
export type StoreFile =
  | { name: string; file: OpenedFile; sha256: string; maxBytes: number }
  | { name: string; data: string | Buffer };

/** The bytes read from build output are not the ones profiles.json described. */
export class StoreIntegrityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StoreIntegrityError";
  }
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
   * Publishes finished files. They land in a temporary folder first and are renamed into
   * place, so a reader never sees half a build, and never a file whose bytes do not match.
   */
  async put(hash: string, files: StoreFile[], signal?: AbortSignal): Promise<void> {
    if (!HASH_RE.test(hash)) throw new Error(`invalid store hash ${hash}`);
    const names = new Set<string>();
    for (const file of files) {
      if (!NAME_RE.test(file.name)) throw new Error(`refusing to store file with unsafe name ${file.name}`);
      if (names.has(file.name)) throw new Error(`refusing to store ${file.name} twice`);
      names.add(file.name);
    }
    const tmp = path.join(this.root, `.tmp-${hash}-${process.pid}-${Date.now()}`);
    await mkdir(tmp, { recursive: true });
    try {
      for (const file of files) {
        if ("data" in file) {
          await writeNewFile(tmp, file.name, file.data);
          continue;
        }
        const copied = await copyOpened(file.file, path.join(tmp, file.name), file.maxBytes, signal);
        if (copied.size !== file.file.size) {
          throw new StoreIntegrityError(
            `${file.name} changed while it was stored (${file.file.size} bytes at open, ${copied.size} read)`,
          );
        }
        if (copied.sha256 !== file.sha256) {
          throw new StoreIntegrityError(
            `${file.name} has sha256 ${copied.sha256}, but profiles.json says ${file.sha256}`,
          );
        }
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
