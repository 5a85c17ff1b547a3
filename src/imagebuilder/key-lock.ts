import lockfile from "proper-lockfile";

export interface KeyLockOptions {
  /** A lock whose holder stopped refreshing it for this long is taken over (crashed process). */
  staleMs: number;
  /** How often a waiter polls a lock held by another process. */
  pollMs: number;
  /** A holder lost its lock (e.g. its event loop stalled past staleMs); nothing to do but say so. */
  onCompromised: (lockPath: string, err: Error) => void;
}

/** Another process held the lock for longer than the caller was willing to wait. */
export class LockTimeoutError extends Error {
  constructor(lockPath: string, waitMs: number) {
    super(`timed out after ${waitMs} ms waiting for the lock ${lockPath}.lock held by another process`);
    this.name = "LockTimeoutError";
  }
}

export type TryLockResult<T> = { locked: true; value: T } | { locked: false };

/**
 * One lock per path, across this process and other processes on the host: an in-process
 * queue (so that waiters in this process do not poll) in front of proper-lockfile, which
 * creates `<path>.lock` and refreshes its mtime while held, so a crashed holder goes stale.
 */
export class KeyLock {
  private readonly tails = new Map<string, Promise<void>>();

  constructor(private readonly options: KeyLockOptions) {}

  /** Runs fn while holding the lock; waits up to waitMs for it. */
  async withLock<T>(lockPath: string, waitMs: number, fn: () => Promise<T>): Promise<T> {
    const releaseLocal = await this.lockLocal(lockPath);
    try {
      const deadline = Date.now() + waitMs;
      let releaseFile: (() => Promise<void>) | undefined;
      while (releaseFile === undefined) {
        releaseFile = await this.tryFileLock(lockPath);
        if (releaseFile !== undefined) break;
        if (Date.now() >= deadline) {
          throw new LockTimeoutError(lockPath, waitMs);
        }
        await sleep(this.options.pollMs);
      }
      try {
        return await fn();
      } finally {
        await releaseFile().catch(() => undefined);
      }
    } finally {
      releaseLocal();
    }
  }

  /** Runs fn only if the lock is free right now (used by gc, which can always run later). */
  async tryWithLock<T>(lockPath: string, fn: () => Promise<T>): Promise<TryLockResult<T>> {
    if (this.tails.has(lockPath)) return { locked: false };
    const releaseLocal = await this.lockLocal(lockPath);
    try {
      const releaseFile = await this.tryFileLock(lockPath);
      if (releaseFile === undefined) return { locked: false };
      try {
        return { locked: true, value: await fn() };
      } finally {
        await releaseFile().catch(() => undefined);
      }
    } finally {
      releaseLocal();
    }
  }

  private async lockLocal(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    return () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }

  private async tryFileLock(lockPath: string): Promise<(() => Promise<void>) | undefined> {
    try {
      return await lockfile.lock(lockPath, {
        realpath: false,
        stale: this.options.staleMs,
        update: Math.max(1000, Math.floor(this.options.staleMs / 3)),
        retries: 0,
        onCompromised: (err) => this.options.onCompromised(lockPath, err),
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ELOCKED") return undefined;
      throw err;
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
