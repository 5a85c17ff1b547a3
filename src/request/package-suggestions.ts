/**
 * "Did you mean ...?" for unknown package names. Two signals, because package names fail
 * in two ways:
 *   - typos (`tcpdum`, `vim-fulll`): few edits, measured with Damerau-Levenshtein
 *     (optimal string alignment: insert, delete, substitute, swap neighbours);
 *   - the wrong family (`luci-app-wireguard` for `luci-proto-wireguard`): many edits, but
 *     the distinctive `-`-separated parts are shared, measured as length-weighted overlap.
 * Parts every other package has (`luci`, `app`, `kmod`, ...) do not count as shared evidence,
 * so `luci-app-nonsense` gets no suggestion rather than a random `luci-app-*`.
 */

/** Damerau-Levenshtein distance (optimal string alignment); stops early above `max`. */
export function damerauLevenshtein(a: string, b: string, max = Number.POSITIVE_INFINITY): number {
  if (a === b) return 0;
  if (Math.abs(a.length - b.length) > max) return max + 1;
  const rows = a.length + 1;
  const cols = b.length + 1;
  let prevPrev = new Array<number>(cols).fill(0);
  let prev = Array.from({ length: cols }, (_, j) => j);
  for (let i = 1; i < rows; i++) {
    const cur = new Array<number>(cols).fill(0);
    cur[0] = i;
    let rowMin = i;
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((prev[j] as number) + 1, (cur[j - 1] as number) + 1, (prev[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, (prevPrev[j - 2] as number) + 1);
      }
      cur[j] = d;
      if (d < rowMin) rowMin = d;
    }
    if (rowMin > max) return max + 1;
    prevPrev = prev;
    prev = cur;
  }
  return prev[cols - 1] as number;
}

/** Parts so common in OpenWrt package names that sharing them says nothing. */
const GENERIC_PARTS = new Set([
  "luci",
  "app",
  "proto",
  "mod",
  "kmod",
  "lib",
  "i18n",
  "theme",
  "usb",
  "net",
  "nf",
  "ipt",
  "iptables",
  "python3",
  "perl",
  "node",
  "golang",
  "full",
  "mini",
  "tiny",
  "dev",
  "src",
  "utils",
  "extra",
  "en",
]);

function parts(name: string): string[] {
  return name
    .toLowerCase()
    .split(/[-_.]+/)
    .filter(Boolean);
}

/** Overlap of the `-`-separated parts, each part weighted by its length (0..1). */
export function partOverlap(a: string, b: string): { score: number; distinctiveShared: boolean } {
  const pa = new Set(parts(a));
  const pb = new Set(parts(b));
  let shared = 0;
  let union = 0;
  let distinctiveShared = false;
  for (const p of new Set([...pa, ...pb])) {
    union += p.length;
    if (pa.has(p) && pb.has(p)) {
      shared += p.length;
      if (p.length >= 4 && !GENERIC_PARTS.has(p)) distinctiveShared = true;
    }
  }
  return { score: union === 0 ? 0 : shared / union, distinctiveShared };
}

function distinctiveParts(name: string): string[] {
  return [...new Set(parts(name))].filter((p) => p.length >= 4 && !GENERIC_PARTS.has(p));
}

/**
 * Known package names, indexed by their distinctive parts so a suggestion does not compare
 * every unknown name with every one of the ~10,000 names of a release in full.
 */
export class PackageNameIndex {
  private readonly names: string[];
  private readonly set: Set<string>;
  private readonly byPart = new Map<string, string[]>();

  constructor(names: Iterable<string>) {
    this.set = new Set(names);
    this.names = [...this.set];
    for (const name of this.names) {
      for (const part of distinctiveParts(name)) {
        const list = this.byPart.get(part);
        if (list) list.push(name);
        else this.byPart.set(part, [name]);
      }
    }
  }

  has(name: string): boolean {
    return this.set.has(name);
  }

  get size(): number {
    return this.set.size;
  }

  /**
   * The closest known name, or undefined when nothing is reasonably close: at most 30 % of
   * the length in edits (and at most 3), or at least half of the weighted parts shared,
   * one of them distinctive.
   */
  suggest(name: string): string | undefined {
    const maxEdits = Math.min(3, Math.max(1, Math.floor(name.length * 0.3)));
    const candidates = new Set<string>();
    for (const candidate of this.names) {
      if (Math.abs(candidate.length - name.length) > maxEdits) continue;
      if (damerauLevenshtein(name, candidate, maxEdits) <= maxEdits) candidates.add(candidate);
    }
    for (const part of distinctiveParts(name)) {
      for (const candidate of this.byPart.get(part) ?? []) {
        if (partOverlap(name, candidate).score >= 0.5) candidates.add(candidate);
      }
    }
    candidates.delete(name);
    let best: { name: string; score: number } | undefined;
    for (const candidate of candidates) {
      const longest = Math.max(name.length, candidate.length);
      const score = 1 - damerauLevenshtein(name, candidate) / longest + partOverlap(name, candidate).score;
      if (!best || score > best.score || (score === best.score && candidate < best.name)) {
        best = { name: candidate, score };
      }
    }
    return best?.name;
  }
}

/** The closest name in `known` (see PackageNameIndex.suggest). */
export function suggestPackage(name: string, known: Iterable<string>): string | undefined {
  return new PackageNameIndex(known).suggest(name);
}
