const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/**
 * Parses upstream ASU's duration strings ("10m", "24h", "7d", "1h30m") into seconds.
 * A bare number is taken as seconds. Returns undefined when the text is not a duration,
 * so the caller can report the key by name.
 */
export function parseDuration(value: string | number): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value > 0 ? value : undefined;
  const text = value.trim().toLowerCase();
  if (/^\d+(\.\d+)?$/.test(text)) {
    const n = Number(text);
    return n > 0 ? n : undefined;
  }
  if (!/^(\d+[smhdw])+$/.test(text)) return undefined;
  let total = 0;
  for (const match of text.matchAll(/(\d+)([smhdw])/g)) {
    total += Number(match[1]) * (UNITS[match[2] as string] ?? 0);
  }
  return total > 0 ? total : undefined;
}
