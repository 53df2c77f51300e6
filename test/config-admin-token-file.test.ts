import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadSettings } from '../src/config';

// KEYPLANE_ADMIN_TOKEN_FILE: the compose file hands keyplane its admin token as a Docker secret.
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kp-token-file-'));
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, text, { mode: 0o600 });
  return p;
}

function problem(env: Record<string, string>): ConfigError {
  try {
    loadSettings(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('loadSettings accepted the settings');
}

describe('KEYPLANE_ADMIN_TOKEN_FILE', () => {
  it('reads the token from the file, without the newline a generator leaves', () => {
    const token = 'kp-admin-token-from-a-file-0123456789';
    const s = loadSettings({ KEYPLANE_ADMIN_TOKEN_FILE: file('token', `${token}\n`) });
    expect(s.adminToken).toBe(token);
  });

  it('refuses both the token and its file', () => {
    const err = problem({ KEYPLANE_ADMIN_TOKEN: 'kp-admin-token-in-the-env-000000', KEYPLANE_ADMIN_TOKEN_FILE: file('both', 'kp-admin-token-in-a-file-0000000\n') });
    expect(err.message).toBe('KEYPLANE_ADMIN_TOKEN_FILE: set either KEYPLANE_ADMIN_TOKEN or KEYPLANE_ADMIN_TOKEN_FILE, not both');
  });

  it('names the setting and the reason for a file it cannot read', () => {
    const missing = path.join(dir, 'missing');
    expect(problem({ KEYPLANE_ADMIN_TOKEN_FILE: missing }).message).toBe(`KEYPLANE_ADMIN_TOKEN_FILE: cannot read ${missing}: ENOENT`);
  });

  it('checks the token like KEYPLANE_ADMIN_TOKEN, and never shows it', () => {
    const err = problem({ KEYPLANE_ADMIN_TOKEN_FILE: file('short', 'short-secret\n') });
    expect(err.message).toBe('KEYPLANE_ADMIN_TOKEN_FILE: must be at least 16 characters');
    expect(err.message).not.toContain('short-secret');
  });
});
