import type { Readable } from "node:stream";
import type { OpenedFile } from "../shared/safe-fs.js";

/**
 * The storage seam (after Immich's storage drivers): the worker's store step, the `/store`
 * routes, garbage collection and the byte budget call this interface and never learn which
 * store is behind it. `createStore` (store-factory.ts) is the only place that chooses.
 */
export interface Store {
  /** "local" or "s3", for logs and the boot message only. */
  readonly kind: string;
  /** Creates the folder or checks the bucket. */
  init(): Promise<void>;
  /**
   * Publishes a build's files under `store/<hash>/`, replacing what was there. A file from
   * build output is read through its descriptor and must have the size it had at open and
   * the sha256 profiles.json promised (clients verify that sha256), else StoreIntegrityError
   * and nothing of the build stays stored.
   */
  put(hash: string, files: StoreFile[], signal?: AbortSignal): Promise<void>;
  /**
   * Where a client gets a stored file: bytes to stream, or a URL to redirect to. Undefined for
   * anything that is not a stored file; names that could never be stored are refused without
   * touching the backend.
   */
  locate(hash: string, name: string): Promise<StoreLocation | undefined>;
  /** The stored bytes themselves (tests, tools); undefined as for `locate`. */
  open(hash: string, name: string): Promise<StoredFile | undefined>;
  /** One entry per stored build, for garbage collection and the budget. */
  list(): Promise<StoreEntry[]>;
  /** Removes a build's files; an unknown or malformed hash is a no-op. */
  remove(hash: string): Promise<void>;
  /** Bytes stored in all. */
  usage(): Promise<number>;
  /** Releases connections. */
  close(): Promise<void>;
}

export type StoreLocation = ({ kind: "stream" } & StoredFile) | { kind: "redirect"; url: string };

export interface StoredFile {
  stream: Readable;
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

export const HASH_RE = /^[0-9a-f]{64}$/;
// Image and manifest names as OpenWrt writes them; never a path separator.
export const NAME_RE = /^[\w][\w.+,~-]*$/;

/** Whether `hash`/`name` could name a stored file at all (traversal and junk never can). */
export function isStoreName(hash: string, name: string): boolean {
  return HASH_RE.test(hash) && NAME_RE.test(name) && name.length <= 255;
}

/** The checks every store makes before it writes anything. */
export function checkPut(hash: string, files: StoreFile[]): void {
  if (!HASH_RE.test(hash)) throw new Error(`invalid store hash ${hash}`);
  const names = new Set<string>();
  for (const file of files) {
    if (!NAME_RE.test(file.name)) throw new Error(`refusing to store file with unsafe name ${file.name}`);
    if (names.has(file.name)) throw new Error(`refusing to store ${file.name} twice`);
    names.add(file.name);
  }
}

/** Throws when what was read from build output is not what profiles.json described. */
export function checkCopied(
  name: string,
  expected: { size: number; sha256: string },
  copied: { size: number; sha256: string },
): void {
  if (copied.size !== expected.size) {
    throw new StoreIntegrityError(
      `${name} changed while it was stored (${expected.size} bytes at open, ${copied.size} read)`,
    );
  }
  if (copied.sha256 !== expected.sha256) {
    throw new StoreIntegrityError(
      `${name} has sha256 ${copied.sha256}, but profiles.json says ${expected.sha256}`,
    );
  }
}
