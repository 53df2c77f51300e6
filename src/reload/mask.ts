import type { SecretRegistry } from '../log';

/**
 * Masks every value of the rendered env file (and every value the keyring knows) in a text that
 * leaves keyplane: a command's stderr, a Docker error, an alert. Short values are left alone, as
 * the log redaction does, so that ordinary words are not masked.
 */
export function maskSecrets(text: string, env: Record<string, string>, secrets?: SecretRegistry): string {
  let out = secrets ? secrets.mask(text) : text;
  for (const v of Object.values(env)) {
    if (v.length >= 8 && out.includes(v)) out = out.split(v).join('[REDACTED]');
  }
  return out;
}
