import { createHash } from "node:crypto";
import { constants, type Stats } from "node:fs";
import { lstat, mkdir, open, type FileHandle } from "node:fs/promises";
import path from "node:path";

/**
 * The one way the worker touches what a build left behind (issue #9). A build's workspace is
 * hostile: any name in it may be a symlink to the signing key, a FIFO that blocks a reader
 * forever, a device, or a 100 GiB sparse file. So every path component below the trusted
 * root is checked with lstat, the file is opened with O_NOFOLLOW | O_NONBLOCK, checked again
 * with fstat on the descriptor (regular file, same inode, within the size cap), and then used
 * only through that descriptor. Reads are bounded in size and stop at an AbortSignal.
 */

/** Why a build-output file was refused; the message names the file relative to its root. */
export class UnsafeFileError extends Error {
  readonly file: string;
  readonly reason: "missing" | "unsafe" | "too_large" | "aborted";
  constructor(file: string, reason: UnsafeFileError["reason"], message: string) {
    super(message);
    this.name = "UnsafeFileError";
    this.file = file;
    this.reason = reason;
  }
}

/** A plain file name: no separator, no "..", no NUL or control characters, nothing odd. */
export const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+,~-]{0,254}$/;

export function isSafeName(name: string): boolean {
  return SAFE_NAME.test(name) && name !== "." && name !== "..";
}

export interface OpenedFile {
  handle: FileHandle;
  /** Size at open time (fstat); reads never go past it. */
  size: number;
  /** The path relative to the root, for messages. */
  name: string;
}

const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY;
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const CHUNK = 1024 * 1024;

function splitRelative(rel: string): string[] {
  const parts = rel.split("/");
  if (rel === "" || path.isAbsolute(rel) || parts.some((p) => !isSafeName(p))) {
    throw new UnsafeFileError(rel, "unsafe", `${JSON.stringify(rel)} is not a plain relative path`);
  }
  return parts;
}

async function lstatOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await lstat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/**
 * Opens `rel` below `root` for reading, refusing links (in any component, the root included),
 * FIFOs, sockets, devices, folders and files over `maxBytes`. The caller closes the handle.
 */
export async function openRegularFile(root: string, rel: string, maxBytes: number): Promise<OpenedFile> {
  const parts = splitRelative(rel);
  let current = root;
  for (const [i, part] of ["", ...parts].entries()) {
    if (i > 0) current = path.join(current, part);
    const st = await lstatOrUndefined(current);
    if (st === undefined) throw new UnsafeFileError(rel, "missing", `${rel} does not exist`);
    const last = i === parts.length;
    if (st.isSymbolicLink()) throw new UnsafeFileError(rel, "unsafe", `${rel} is or passes through a link`);
    if (!last && !st.isDirectory())
      throw new UnsafeFileError(rel, "unsafe", `${rel}: not a folder on the way`);
    if (last && !st.isFile()) throw new UnsafeFileError(rel, "unsafe", `${rel} is not a regular file`);
  }
  let handle: FileHandle;
  try {
    handle = await open(current, READ_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UnsafeFileError(rel, "missing", `${rel} does not exist`);
    // ELOOP: it became a link after lstat (possible only without a sandbox).
    throw new UnsafeFileError(rel, "unsafe", `${rel} could not be opened safely (${code ?? "error"})`);
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new UnsafeFileError(rel, "unsafe", `${rel} is not a regular file`);
    if (st.size > maxBytes) {
      throw new UnsafeFileError(
        rel,
        "too_large",
        `${rel} is ${st.size} bytes, more than the limit of ${maxBytes}`,
      );
    }
    return { handle, size: st.size, name: rel };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

function checkSignal(file: string, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new UnsafeFileError(file, "aborted", `reading ${file} was stopped`);
}

/**
 * Reads an opened file from its start, in chunks, into memory. Fails when it holds more than
 * `maxBytes` (it may have grown since fstat) or when `signal` fires between chunks.
 */
export async function readOpened(file: OpenedFile, maxBytes: number, signal?: AbortSignal): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of chunksOf(file, maxBytes, signal)) {
    // chunksOf reuses its buffer: keep a copy.
    chunks.push(Buffer.from(chunk));
    total += chunk.length;
  }
  return Buffer.concat(chunks, total);
}

/**
 * The file's bytes from its start, chunk by chunk into one reused buffer: each chunk is valid
 * until the next is read. Fails once more than `maxBytes` came (it may have grown since
 * fstat), or when `signal` fires between chunks.
 */
async function* chunksOf(file: OpenedFile, maxBytes: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const buf = Buffer.allocUnsafe(Math.min(CHUNK, maxBytes + 1));
  let total = 0;
  for (;;) {
    checkSignal(file.name, signal);
    const { bytesRead } = await file.handle.read(buf, 0, buf.length, total);
    if (bytesRead === 0) return;
    total += bytesRead;
    if (total > maxBytes) {
      throw new UnsafeFileError(
        file.name,
        "too_large",
        `${file.name} is larger than the limit of ${maxBytes} bytes`,
      );
    }
    yield buf.subarray(0, bytesRead);
  }
}

/** openRegularFile + readOpened + close. */
export async function readRegularFile(
  root: string,
  rel: string,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<Buffer> {
  const file = await openRegularFile(root, rel, maxBytes);
  try {
    return await readOpened(file, maxBytes, signal);
  } finally {
    await file.handle.close();
  }
}

/**
 * Streams an opened file from its start into a new file `dest` (exclusive create, no link
 * followed), hashing what it copies. Returns the bytes copied and their sha256.
 */
export async function copyOpened(
  file: OpenedFile,
  dest: string,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<{ size: number; sha256: string }> {
  const out = await open(dest, CREATE_FLAGS, 0o644);
  const hash = createHash("sha256");
  let total = 0;
  try {
    for await (const chunk of chunksOf(file, maxBytes, signal)) {
      total += chunk.length;
      hash.update(chunk);
      let written = 0;
      while (written < chunk.length) {
        const { bytesWritten } = await out.write(chunk, written, chunk.length - written);
        written += bytesWritten;
      }
    }
  } finally {
    await out.close();
  }
  return { size: total, sha256: hash.digest("hex") };
}

/**
 * Writes `data` to `rel` below `root`, creating missing folders, never following a link and
 * never replacing an existing file (O_EXCL): what already sits there was not made by us.
 */
export async function writeNewFile(
  root: string,
  rel: string,
  data: string | Buffer,
  mode = 0o644,
): Promise<void> {
  const parts = splitRelative(rel);
  const rootSt = await lstat(root);
  if (!rootSt.isDirectory()) throw new UnsafeFileError(rel, "unsafe", `${root} is not a folder`);
  let current = root;
  for (const part of parts.slice(0, -1)) {
    current = path.join(current, part);
    const st = await lstatOrUndefined(current);
    if (st === undefined) await mkdir(current, { mode: 0o755 });
    else if (st.isSymbolicLink() || !st.isDirectory())
      throw new UnsafeFileError(rel, "unsafe", `${rel}: ${part} is not a plain folder`);
  }
  let handle: FileHandle;
  try {
    handle = await open(path.join(current, parts[parts.length - 1] as string), CREATE_FLAGS, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UnsafeFileError(rel, "unsafe", `${rel} could not be created safely (${code ?? "error"})`);
  }
  try {
    await handle.writeFile(data);
  } finally {
    await handle.close();
  }
}
