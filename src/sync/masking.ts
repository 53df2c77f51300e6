import { last4, maskKey } from '../crypto/keyring';
import { isKeyChar, KEY_MIN } from '../key-rules';
import { isSecretField, maskValues as maskWith } from '../log';

// Every function here reads user data (model parameters, URLs, the admin's base config) and runs
// in linear time: plain loops, no regular expression that could backtrack.

const MASK = '****';

/** Replaces every occurrence of each value (8+ characters) in `text`, as the API masks keys. For logs and messages, not for what a viewer sees of user data. */
export function maskValues(text: string, values: Iterable<string>): string {
  return maskWith(text, values, MASK);
}

/**
 * Replaces each whole token (a maximal run of key characters) that equals a secret. Containment
 * would be an oracle: an operator could write `https://x/<guess>` and see from the mask whether the
 * guess is part of a key.
 */
export function maskTokens(text: string, secrets: ReadonlySet<string>): string {
  if (secrets.size === 0) return text;
  const parts: string[] = [];
  let last = 0;
  let i = 0;
  while (i < text.length) {
    if (!isKeyChar(text.charCodeAt(i))) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < text.length && isKeyChar(text.charCodeAt(j))) j++;
    if (j - i >= KEY_MIN && secrets.has(text.slice(i, j))) {
      parts.push(text.slice(last, i), MASK);
      last = j;
    }
    i = j;
  }
  if (last === 0) return text;
  parts.push(text.slice(last));
  return parts.join('');
}

function isSpace(c: number): boolean {
  return c === 32 || (c >= 9 && c <= 13) || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff;
}

function isLetter(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

function isSchemeChar(c: number): boolean {
  return isLetter(c) || (c >= 48 && c <= 57) || c === 43 || c === 45 || c === 46;
}

/**
 * `scheme://user:password@` -> `scheme://user:****@`. Each scan stops at the next `:` or `/`, so
 * the scans around successive `://` never overlap: linear in the text.
 */
export function maskUrlPasswords(text: string): string {
  const parts: string[] = [];
  let last = 0;
  for (let at = text.indexOf('://'); at !== -1; at = text.indexOf('://', at + 3)) {
    let s = at;
    let letter = false;
    while (s > 0 && isSchemeChar(text.charCodeAt(s - 1))) {
      s--;
      letter ||= isLetter(text.charCodeAt(s));
    }
    if (!letter) continue;
    const start = at + 3;
    let colon = -1;
    let k = start;
    for (; k < text.length; k++) {
      const c = text.charCodeAt(k);
      if (c === 64 || c === 47 || c === 34 || isSpace(c)) break;
      if (c === 58 && colon === -1) colon = k;
    }
    // A user before the colon, a password after it, and an `@` that ends them.
    if (text.charCodeAt(k) !== 64 || colon <= start || colon + 1 >= k) continue;
    parts.push(text.slice(last, colon + 1), MASK);
    last = k;
  }
  if (last === 0) return text;
  parts.push(text.slice(last));
  return parts.join('');
}

/** A `key: value` line as the emitter writes it (plain or JSON-quoted key, optionally a list item): [prefix, key as written, value]. */
function keyLine(line: string): [string, string, string] | undefined {
  let i = 0;
  while (i < line.length && isSpace(line.charCodeAt(i))) i++;
  if (line.startsWith('- ', i)) i += 2;
  const keyStart = i;
  let keyEnd: number;
  if (line.charCodeAt(i) === 34) {
    i++;
    while (i < line.length && line.charCodeAt(i) !== 34) i += line.charCodeAt(i) === 92 ? 2 : 1;
    if (i >= line.length) return undefined;
    keyEnd = i + 1;
  } else {
    const c = line.charCodeAt(i);
    if (i >= line.length || isSpace(c) || c === 35) return undefined;
    keyEnd = line.indexOf(':', i);
    if (keyEnd === -1) return undefined;
  }
  if (!line.startsWith(': ', keyEnd) || keyEnd + 2 >= line.length) return undefined;
  return [line.slice(0, keyStart), line.slice(keyStart, keyEnd), line.slice(keyEnd + 2)];
}

function unquote(key: string): string {
  if (!key.startsWith('"')) return key;
  try {
    return String(JSON.parse(key));
  } catch {
    return key;
  }
}

/**
 * config.yaml for display: a value under a secret-looking key that is not an os.environ/ reference
 * (the admin's base config may hold one), a password inside a URL, and any whole token equal to a
 * known secret are replaced.
 */
export function maskConfigText(text: string, secrets: Iterable<string>): string {
  const lines = text.split('\n').map((line) => {
    const m = keyLine(line);
    if (!m || !isSecretField(unquote(m[1]))) return line;
    const value = m[2];
    return value.startsWith('os.environ/') || value.startsWith('"os.environ/') ? line : `${m[0]}${m[1]}: "${MASK}"`;
  });
  return maskTokens(maskUrlPasswords(lines.join('\n')), secrets instanceof Set ? secrets : new Set(secrets));
}

/** litellm.env for display: `VAR=****abcd`, the last four characters as the API shows them. */
export function maskEnvText(text: string): string {
  return text
    .split('\n')
    .map((line) => {
      if (line === '' || line.startsWith('#')) return line;
      const at = line.indexOf('=');
      return at < 0 ? MASK : `${line.slice(0, at)}=${maskKey(last4(line.slice(at + 1)))}`;
    })
    .join('\n');
}
