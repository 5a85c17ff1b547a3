/**
 * Work a build leaves for after its client has the answer: removing the workspace and giving
 * the ImageBuilder back (issue #13). Tracked, so that shutdown waits for it instead of leaving
 * half-removed workspaces behind, and so that tests can wait for it.
 */
export class BackgroundTasks {
  private readonly running = new Set<Promise<void>>();
  private idleWaiters: (() => void)[] = [];

  /** Runs `task` in the background. A failure is the task's own to report: it is swallowed here. */
  track(task: Promise<void>): void {
    const tracked: Promise<void> = task
      .catch(() => undefined)
      .finally(() => {
        this.running.delete(tracked);
        if (this.running.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
      });
    this.running.add(tracked);
  }

  /** Tasks still running. */
  get size(): number {
    return this.running.size;
  }

  /** Resolves true once no task runs (also those tracked meanwhile), or false after `timeoutMs`. */
  async idle(timeoutMs: number): Promise<boolean> {
    if (this.running.size === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    let wake: (() => void) | undefined;
    const done = new Promise<boolean>((resolve) => {
      wake = () => resolve(true);
      this.idleWaiters.push(wake);
      timer = setTimeout(() => resolve(false), Math.max(0, timeoutMs));
    });
    try {
      return await done;
    } finally {
      clearTimeout(timer);
      this.idleWaiters = this.idleWaiters.filter((w) => w !== wake);
    }
  }
}
