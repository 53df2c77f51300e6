import winston from 'winston';

export type Logger = winston.Logger;

/** How many values a SecretRegistry keeps by default: far more than the keys in use at once. */
export const SECRET_REGISTRY_MAX = 4096;

/**
 * Values that must never appear in a log line. The keyring adds every secret it encrypts or
 * decrypts; the redaction format replaces them wherever they occur in a message or field.
 *
 * Bounded, least recently added first out: rotations would otherwise grow it for ever. The values in
 * use stay fresh because they are added again whenever they are used (each render decrypts and adds
 * every current key).
 */
export class SecretRegistry {
  private readonly values = new Set<string>();
  /** Values that never age out: keyplane's own settings, used for its whole life. */
  private readonly pinned = new Set<string>();

  constructor(private readonly max = SECRET_REGISTRY_MAX) {}

  /** Adds a value that stays for good (outside the bound): a setting such as the admin token. */
  pin(value: string): void {
    if (value.length >= 8) this.pinned.add(value);
  }

  add(value: string): void {
    // Very short values would redact ordinary words; keys are at least 8 characters.
    if (value.length < 8 || this.pinned.has(value)) return;
    // A Set iterates in insertion order: deleting and adding again makes the value the newest.
    this.values.delete(value);
    this.values.add(value);
    if (this.values.size > this.max) this.values.delete(this.values.values().next().value as string);
  }

  mask(text: string): string {
    return maskValues(maskValues(text, this.pinned), this.values);
  }

  /** The values as they are now, to mask with elsewhere (a worker thread). */
  snapshot(): string[] {
    return [...this.pinned, ...this.values];
  }

  /** How many values age out as others are added (pinned ones not counted). */
  get size(): number {
    return this.values.size;
  }
}

/** Replaces every occurrence of each value of 8 or more characters (shorter ones would mask ordinary words). */
export function maskValues(text: string, values: Iterable<string>, placeholder = '[REDACTED]'): string {
  let out = text;
  for (const v of values) if (v.length >= 8 && out.includes(v)) out = out.split(v).join(placeholder);
  return out;
}

/** Field names whose values are secrets whatever they hold. `key_name`, `kid` and `env_var` are names, not secrets. */
const SECRET_FIELD =
  /api[_-]?key|apikey|secret|passw(or)?d|authorization|master[_-]?key|salt[_-]?key|private[_-]?key|access[_-]?key|credential_values|cookie|(^|_|-)token$|^(key|jwe|ciphertext|plaintext)$/i;

export function isSecretField(name: string): boolean {
  return SECRET_FIELD.test(name);
}

export function redactValue(value: unknown, secrets: SecretRegistry, depth = 0): unknown {
  if (typeof value === 'string') return secrets.mask(value);
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) {
    return { name: value.name, message: secrets.mask(value.message), stack: value.stack ? secrets.mask(value.stack) : undefined };
  }
  if (Array.isArray(value)) return value.map((v) => redactValue(v, secrets, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    out[k] = isSecretField(k) && v !== undefined && v !== null ? '[REDACTED]' : redactValue(v, secrets, depth + 1);
  }
  return out;
}

const redact = winston.format((info, opts) => {
  const secrets = (opts as { secrets: SecretRegistry }).secrets;
  for (const key of Object.keys(info)) {
    const v = (info as Record<string, unknown>)[key];
    (info as Record<string, unknown>)[key] = isSecretField(key) && v != null ? '[REDACTED]' : redactValue(v, secrets);
  }
  return info;
});

export interface LogOptions {
  level?: string;
  secrets: SecretRegistry;
  /** JSON lines unless explicitly pretty; pretty by default only on a terminal. */
  json?: boolean;
  stream?: NodeJS.WritableStream;
  silent?: boolean;
}

export function createLogger(opts: LogOptions): Logger {
  const json = opts.json ?? !process.stdout.isTTY;
  const format = winston.format.combine(
    winston.format.errors({ stack: true }),
    redact({ secrets: opts.secrets }),
    winston.format.timestamp(),
    json
      ? winston.format.json()
      : winston.format.printf((i) => {
          const { level, message, timestamp, component, ...rest } = i as Record<string, unknown>;
          const extra = Object.keys(rest).length ? ' ' + JSON.stringify(rest) : '';
          return `${String(timestamp)} ${String(level).toUpperCase()} [${String(component ?? 'keyplane')}] ${String(message)}${extra}`;
        }),
  );
  const transport = opts.stream
    ? new winston.transports.Stream({ stream: opts.stream })
    : new winston.transports.Console({ stderrLevels: ['error', 'warn'] });
  return winston.createLogger({ level: opts.level ?? 'info', format, transports: [transport], silent: opts.silent ?? false });
}
