/**
 * A small block-style YAML emitter for JSON-like values. The `yaml` package takes ~400 ms for
 * 5,000 deployments; this takes a few. Output is read the same by YAML 1.1 (PyYAML, which LiteLLM
 * uses) and YAML 1.2: a string is left plain only when no resolver could read it as anything else,
 * otherwise it is written as a JSON string, which is a valid YAML double-quoted scalar.
 */

// Plain scalars: start with a letter or `_`, no spaces, `#`, quotes, brackets, commas or a trailing `:`.
const PLAIN = /^[A-Za-z_][A-Za-z0-9_./:@+-]*$/;
// Words YAML 1.1 resolves to booleans or null.
const RESERVED = /^(y|n|yes|no|on|off|true|false|null)$/i;
// Characters PyYAML refuses to read raw, and line separators some readers split on.
const UNSAFE_RAW = /[\u007f-\u009f\u2028\u2029\ufeff\ufffe\uffff]/g;

function quote(s: string): string {
  return JSON.stringify(s).replace(UNSAFE_RAW, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export function scalar(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  if (typeof value === 'number') return number(value);
  if (typeof value === 'bigint') return value.toString();
  const s = String(value);
  return PLAIN.test(s) && !RESERVED.test(s) && !s.endsWith(':') ? s : quote(s);
}

function number(n: number): string {
  if (!Number.isFinite(n)) return Number.isNaN(n) ? '.nan' : n > 0 ? '.inf' : '-.inf';
  const s = String(n);
  if (Number.isInteger(n) && !/e/.test(s)) return s;
  // YAML 1.1 reads a float only with a dot in the mantissa and a signed exponent: 1e-7 -> 1.0e-7.
  const [mantissa, exp] = s.split('e') as [string, string | undefined];
  const m = mantissa.includes('.') ? mantissa : `${mantissa}.0`;
  return exp === undefined ? m : `${m}e${exp.startsWith('-') || exp.startsWith('+') ? exp : `+${exp}`}`;
}

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function isEmptyCollection(v: unknown): string | undefined {
  if (Array.isArray(v) && v.length === 0) return '[]';
  if (isMap(v) && Object.keys(v).length === 0) return '{}';
  return undefined;
}

function leaf(v: unknown): string {
  return v instanceof Date ? quote(v.toISOString()) : scalar(v);
}

function emitMap(obj: Record<string, unknown>, indent: string, out: string[], firstPrefix?: string): void {
  let first = true;
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    const lead = first && firstPrefix !== undefined ? firstPrefix : indent;
    first = false;
    const key = scalar(k);
    const empty = isEmptyCollection(v);
    if (empty) out.push(`${lead}${key}: ${empty}`);
    else if (isMap(v)) {
      out.push(`${lead}${key}:`);
      emitMap(v, indent + '  ', out);
    } else if (Array.isArray(v)) {
      out.push(`${lead}${key}:`);
      emitSeq(v, indent + '  ', out);
    } else out.push(`${lead}${key}: ${leaf(v)}`);
  }
}

function emitSeq(arr: unknown[], indent: string, out: string[]): void {
  for (const v of arr) {
    const empty = isEmptyCollection(v);
    if (empty) out.push(`${indent}- ${empty}`);
    else if (isMap(v)) emitMap(v, indent + '  ', out, `${indent}- `);
    else if (Array.isArray(v)) {
      out.push(`${indent}-`);
      emitSeq(v, indent + '  ', out);
    } else out.push(`${indent}- ${leaf(v)}`);
  }
}

/** Emits a mapping as a block-style YAML document (keys in insertion order), ending in a newline. */
export function emitYaml(doc: Record<string, unknown>): string {
  const out: string[] = [];
  emitMap(doc, '', out);
  return out.length ? out.join('\n') + '\n' : '{}\n';
}
