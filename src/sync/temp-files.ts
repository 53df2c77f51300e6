import { randomBytes } from 'node:crypto';
import path from 'node:path';

/**
 * The one shape of keyplane's temp files in the output directory: `.<name>.<12 hex>.tmp`, beside
 * the file they become (the writer's staged files and backups, the reload rollback's rewrites). A
 * crash can leave one behind; `isTempName` is what start-up removes.
 */
export function tempPath(dir: string, name: string): string {
  return path.join(dir, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
}

// Earlier versions' file rollback used 8 hex characters; their leftovers are removed too.
const HEX_LENGTHS = [12, 8];

function isHex(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/** Whether `file` (a name in the output directory) is a temp file keyplane made. No regular expression: names are data. */
export function isTempName(file: string): boolean {
  if (!file.startsWith('.') || !file.endsWith('.tmp')) return false;
  const stem = file.slice(0, -'.tmp'.length);
  return HEX_LENGTHS.some((n) => stem.length > n + 2 && stem.charCodeAt(stem.length - n - 1) === 46 && isHex(stem.slice(stem.length - n)));
}
