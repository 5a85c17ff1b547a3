import { createReadStream } from "node:fs";
import { lstat, mkdir, readdir, realpath, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { copyOpened, writeNewFile } from "../shared/safe-fs.js";
import {
  checkCopied,
  checkPut,
  HASH_RE,
  isStoreName,
  type Store,
  type StoreEntry,
  type StoreFile,
  type StoredFile,
  type StoreLocation,
} from "./store.js";

export { StoreIntegrityError, type StoreEntry, type StoreFile, type StoredFile } from "./store.js";

/** Finished build files under `<public_path>/store/<request_hash>/`. */
export class LocalStore implements Store {
  readonly kind = "local";
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
    checkPut(hash, files);
    const tmp = path.join(this.root, `.tmp-${hash}-${process.pid}-${Date.now()}`);
    await mkdir(tmp, { recursive: true });
    try {
      for (const file of files) {
        if ("data" in file) {
          await writeNewFile(tmp, file.name, file.data);
          continue;
        }
        const copied = await copyOpened(file.file, path.join(tmp, file.name), file.maxBytes, signal);
        checkCopied(file.name, { size: file.file.size, sha256: file.sha256 }, copied);
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
    if (!isStoreName(hash, name)) return undefined;
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

  /** The local store serves the bytes itself. */
  async locate(hash: string, name: string): Promise<StoreLocation | undefined> {
    const file = await this.open(hash, name);
    return file && { kind: "stream", ...file };
  }

  async usage(): Promise<number> {
    return (await this.list()).reduce((sum, e) => sum + e.bytes, 0);
  }

  async close(): Promise<void> {}

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
