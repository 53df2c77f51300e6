import { maskValues, type SecretRegistry } from '../log';

/**
 * Masks every value of the rendered env file (and every value the keyring knows) in a text that
 * leaves keyplane: a command's stderr, a Docker error, an alert. Short values are left alone, as
 * the log redaction does, so that ordinary words are not masked.
 */
export function maskSecrets(text: string, env: Record<string, string>, secrets?: SecretRegistry): string {
  return maskValues(secrets ? secrets.mask(text) : text, Object.values(env));
}
