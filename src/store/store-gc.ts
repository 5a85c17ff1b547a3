import type { Store } from "./store.js";

export interface StoreGcOptions {
  store: Store;
  /** Hashes whose result is still cached in Redis. */
  liveHashes(): Promise<Set<string>>;
  /** Forget the cached result of a build whose files were evicted for space. */
  forget(hash: string): Promise<void>;
  /** Disk budget in bytes for the whole store; 0 means no budget. */
  maxBytes: number;
  /** Folders younger than this are never removed: a build may be storing right now. */
  graceMs?: number;
  now?: () => number;
}

export interface StoreGcReport {
  removedExpired: number;
  removedForSpace: number;
  freedBytes: number;
  keptBytes: number;
}

/**
 * Removes store folders whose result expired, then, while the store is over its budget,
 * the least recently written builds (their cached result is forgotten too, so a client
 * gets a rebuild rather than a dead download link).
 */
export async function collectStoreGarbage(opts: StoreGcOptions): Promise<StoreGcReport> {
  const now = opts.now ?? Date.now;
  const grace = opts.graceMs ?? 10 * 60_000;
  const live = await opts.liveHashes();
  const entries = await opts.store.list();
  const report: StoreGcReport = { removedExpired: 0, removedForSpace: 0, freedBytes: 0, keptBytes: 0 };
  const kept = [];
  for (const entry of entries) {
    if (!live.has(entry.hash) && now() - entry.mtimeMs > grace) {
      await opts.store.remove(entry.hash);
      report.removedExpired++;
      report.freedBytes += entry.bytes;
    } else {
      kept.push(entry);
    }
  }
  let total = kept.reduce((sum, e) => sum + e.bytes, 0);
  if (opts.maxBytes > 0 && total > opts.maxBytes) {
    kept.sort((a, b) => a.mtimeMs - b.mtimeMs);
    for (const entry of [...kept]) {
      if (total <= opts.maxBytes) break;
      if (now() - entry.mtimeMs <= grace) continue;
      await opts.forget(entry.hash);
      await opts.store.remove(entry.hash);
      kept.splice(kept.indexOf(entry), 1);
      total -= entry.bytes;
      report.removedForSpace++;
      report.freedBytes += entry.bytes;
    }
  }
  report.keptBytes = total;
  return report;
}
