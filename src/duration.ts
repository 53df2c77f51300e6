const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const LARGEST_FIRST = ['d', 'h', 'm', 's'] as const;

export type Parsed = { ms: number } | { problem: string };

/**
 * Parses a number with a unit: `250ms`, `2s`, `1.5m`, `1h`, `7d`. A bare number is refused, with
 * the units to choose from: it used to mean milliseconds, so `10` meant as seconds was 10 ms.
 */
export function parseDuration(text: string): Parsed {
  // Trimmed first: whitespace on both sides of the unit would make the pattern backtrack.
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?) *(ms|s|m|h|d)$/.exec(t);
  if (m) return { ms: Math.round(Number(m[1]) * UNITS[m[2]!]!) };
  if (/^\d+(?:\.\d+)?$/.test(t)) return { problem: `"${t}" has no unit: write ${t}ms, ${t}s, ${t}m, ${t}h or ${t}d` };
  return { problem: `"${t}" is not a duration such as 500ms, 30s, 5m, 1h or 7d` };
}

/** The shortest exact spelling of `ms` (`90000` -> `90s`, `86400000` -> `1d`). */
export function formatDuration(ms: number): string {
  for (const u of LARGEST_FIRST) if (ms >= UNITS[u]! && ms % UNITS[u]! === 0) return `${ms / UNITS[u]!}${u}`;
  return `${ms}ms`;
}
