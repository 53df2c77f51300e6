import { last4, maskKey } from '../crypto/keyring';
import { isSecretField, maskValues as maskWith } from '../log';

// A `key: value` line as the emitter writes it (plain or JSON-quoted key), optionally a list item.
const KEY_LINE = /^(\s*(?:- )?)("(?:[^"\\]|\\.)*"|[^\s"#][^:]*?): (.+)$/;
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^\s:@/"]+:)([^\s@/"]+)@/gi;

function unquote(key: string): string {
  if (!key.startsWith('"')) return key;
  try {
    return String(JSON.parse(key));
  } catch {
    return key;
  }
}

/** Replaces every occurrence of each value (8+ characters) in `text`, as the API masks keys. */
export function maskValues(text: string, values: Iterable<string>): string {
  return maskWith(text, values, '****');
}

/**
 * config.yaml for display: a value under a secret-looking key that is not an os.environ/ reference
 * (the admin's base config may hold one), a password inside a URL, and any known secret value
 * are replaced.
 */
export function maskConfigText(text: string, secrets: Iterable<string>): string {
  const lines = text.split('\n').map((line) => {
    const m = KEY_LINE.exec(line);
    if (!m || !isSecretField(unquote(m[2]!))) return line;
    const value = m[3]!;
    return /^"?os\.environ\//.test(value) ? line : `${m[1]}${m[2]}: "****"`;
  });
  return maskValues(lines.join('\n').replace(URL_PASSWORD, '$1****@'), secrets);
}

/** litellm.env for display: `VAR=****abcd`, the last four characters as the API shows them. */
export function maskEnvText(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      if (line === '' || line.startsWith('#')) return line;
      const at = line.indexOf('=');
      return at < 0 ? '****' : `${line.slice(0, at)}=${maskKey(last4(line.slice(at + 1)))}`;
    })
    .join('\n');
}
