import { PassThrough } from 'node:stream';
import { createLogger, SecretRegistry } from '../src/log';
import { ConfigError, loadSettings, parseSyncWait } from '../src/config';

function capture(secrets: SecretRegistry) {
  const stream = new PassThrough();
  let out = '';
  stream.on('data', (c) => (out += c));
  const log = createLogger({ secrets, stream, json: true, level: 'debug' });
  return { log, out: () => out };
}

describe('logging', () => {
  it('writes JSON lines with the component of each child logger', () => {
    const { log, out } = capture(new SecretRegistry());
    log.child({ component: 'watcher' }).warn('reconnecting', { attempt: 2 });
    const line = JSON.parse(out().trim());
    expect(line).toMatchObject({ level: 'warn', message: 'reconnecting', component: 'watcher', attempt: 2 });
  });

  it('removes every known secret value wherever it appears, and fields named like keys or tokens', () => {
    const secrets = new SecretRegistry();
    secrets.add('sk-known-secret-value-1');
    const { log, out } = capture(secrets);
    log.info('calling with sk-known-secret-value-1 in the message', {
      nested: { deeper: ['x sk-known-secret-value-1 y'] },
      api_key: 'anything-at-all',
      apiKey: 'camel',
      authorization: 'Bearer zzz',
      token: 'tok',
      master_key: 'mk',
      headers: { 'x-api-key': 'hdr' },
      key_name: 'openrouter',
      env_var: 'OPENROUTER_API_KEY',
    });
    log.error('failed', { err: new Error('upstream said sk-known-secret-value-1 is bad') });
    const text = out();
    for (const s of ['sk-known-secret-value-1', 'anything-at-all', 'camel', 'Bearer zzz', '"tok"', '"mk"', 'hdr']) expect(text).not.toContain(s);
    expect(text).toContain('"key_name":"openrouter"');
    expect(text).toContain('"env_var":"OPENROUTER_API_KEY"');
    expect(text.match(/\[REDACTED\]/g)!.length).toBeGreaterThanOrEqual(8);
  });
});

describe('settings', () => {
  it('defaults match the contract', () => {
    const s = loadSettings({});
    expect(s.listen).toEqual({ host: '127.0.0.1', port: 4100 });
    expect(s.syncWait).toEqual({ minMs: 0, maxMs: 0 });
    expect(s.reload).toBe('none');
    expect(s.dockerMode).toBe('recreate');
    expect(s.litellmUrl).toBe('http://127.0.0.1:4000');
    expect(s.healthSchedule).toBe('*/5 * * * *');
    expect(s.outputDir).toBe(`${s.dataDir}/litellm`);
  });

  it('KEYPLANE_SYNC_WAIT: max defaults to 4 x min', () => {
    expect(parseSyncWait('50ms')).toEqual({ minMs: 50, maxMs: 200 });
    expect(parseSyncWait('50ms:2s')).toEqual({ minMs: 50, maxMs: 2000 });
    expect(() => parseSyncWait('2s:50ms')).toThrow(/below min/);
  });

  it.each([
    ['KEYPLANE_LISTEN', 'nowhere', /KEYPLANE_LISTEN: "nowhere" is not host:port/],
    ['KEYPLANE_RELOAD', 'magic', /KEYPLANE_RELOAD: "magic" is not one of none, command, docker, litellm-api/],
    ['KEYPLANE_HEALTH_SCHEDULE', 'every day', /KEYPLANE_HEALTH_SCHEDULE: "every day" is not a cron expression \(or off\)/],
    ['KEYPLANE_DOCKER_MODE', 'reboot', /KEYPLANE_DOCKER_MODE/],
    ['KEYPLANE_LITELLM_URL', 'not a url', /KEYPLANE_LITELLM_URL: is not an http\(s\) URL/],
    ['KEYPLANE_ADMIN_TOKEN', 'short', /KEYPLANE_ADMIN_TOKEN: must be at least 16 characters/],
  ])('%s=%s is refused with one line naming it', (name, value, message) => {
    expect(() => loadSettings({ [name]: value })).toThrow(ConfigError);
    expect(() => loadSettings({ [name]: value })).toThrow(message);
  });

  it('a settings file may name settings with or without keyplane_; the environment wins; unknown keys are refused', () => {
    const { mkdtempSync, writeFileSync } = require('node:fs') as typeof import('node:fs');
    const dir = mkdtempSync(require('node:path').join(require('node:os').tmpdir(), 'kp-settings-'));
    const file = `${dir}/keyplane.yaml`;
    writeFileSync(file, 'listen: 127.0.0.1:4242\nkeyplane_sync_wait: 50ms:2s\nhealth_schedule: "*/10 * * * *"\n');
    const s = loadSettings({ KEYPLANE_CONFIG: file, KEYPLANE_HEALTH_SCHEDULE: 'off' });
    expect(s.listen.port).toBe(4242);
    expect(s.syncWait).toEqual({ minMs: 50, maxMs: 2000 });
    expect(s.healthSchedule).toBe('off');
    writeFileSync(file, 'lisen: 127.0.0.1:4242\n');
    expect(() => loadSettings({ KEYPLANE_CONFIG: file })).toThrow(/KEYPLANE_CONFIG: .*unknown setting "lisen"/);
    expect(loadSettings({ KEYPLANE_CONFIG: require('node:path').resolve(__dirname, '..', 'config', 'keyplane.example.yaml') }).reload).toBe('command');
  });

  it('a secret setting is never echoed in its error', () => {
    // The error is caught here and asserted outside, so a loadSettings that stops throwing fails the test.
    let caught: unknown;
    try {
      loadSettings({ KEYPLANE_ADMIN_TOKEN: 'tiny-secret' });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ConfigError);
    expect((caught as ConfigError).message).toMatch(/KEYPLANE_ADMIN_TOKEN/);
    expect((caught as ConfigError).message).not.toContain('tiny-secret');
  });

  it.each([
    [{ KEYPLANE_RELOAD: 'docker' }, /KEYPLANE_DOCKER_CONTAINERS/],
    [{ KEYPLANE_RELOAD: 'command' }, /KEYPLANE_RELOAD_COMMAND: is required/],
  ])('incomplete reload settings stop start-up: %j', (env, message) => {
    expect(() => loadSettings(env)).toThrow(message);
  });
});
