const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `250ms`, `2s`, `5m`, `1h`, `7d` (a bare number is milliseconds). Returns undefined when it does not parse. */
export function parseDuration(text: string): number | undefined {
  // Trimmed first: whitespace on both sides of an optional unit would make the pattern backtrack.
  const m = /^(\d+(?:\.\d+)?) *(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * UNITS[m[2] ?? 'ms']!);
}
