import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { ConfigError, loadSettings, parseSyncWait } from '../src/config';
import { formatDuration, parseDuration } from '../src/duration';

const run = promisify(execFile);
const BIN = path.resolve(__dirname, '..', 'bin', 'keyplane.js');

/** The ConfigError message loadSettings gives for `env`, or undefined when it accepts it. */
function refusal(env: Record<string, string>): string | undefined {
  try {
    loadSettings(env);
    return undefined;
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
}

describe('durations: one syntax, a unit always, values that can work', () => {
  it('parses a number with a unit, and refuses a bare number by naming the units', () => {
    expect(parseDuration('250ms')).toEqual({ ms: 250 });
    expect(parseDuration(' 1.5s ')).toEqual({ ms: 1500 });
    expect(parseDuration('5m')).toEqual({ ms: 300_000 });
    expect(parseDuration('2h')).toEqual({ ms: 7_200_000 });
    expect(parseDuration('7d')).toEqual({ ms: 604_800_000 });
    expect(parseDuration('10')).toEqual({ problem: '"10" has no unit: write 10ms, 10s, 10m, 10h or 10d' });
    expect(parseDuration('soon')).toEqual({ problem: '"soon" is not a duration such as 500ms, 30s, 5m, 1h or 7d' });
    expect(parseDuration('-5s')).toHaveProperty('problem');
    expect(formatDuration(86_400_000)).toBe('1d');
    expect(formatDuration(90_000)).toBe('90s');
    expect(formatDuration(100)).toBe('100ms');
  });

  const SETTINGS = ['KEYPLANE_RECONCILE_INTERVAL', 'KEYPLANE_RELOAD_TIMEOUT', 'KEYPLANE_READY_TIMEOUT', 'KEYPLANE_HEALTH_TIMEOUT', 'KEYPLANE_HEALTH_RETENTION', 'KEYPLANE_DOCKER_STOP_TIMEOUT'];

  it.each(SETTINGS.filter((s) => s !== 'KEYPLANE_DOCKER_STOP_TIMEOUT'))('%s: a bare number is refused with one line that names the setting and the units', (name) => {
    expect(refusal({ [name]: '10' })).toBe(`${name}: "10" has no unit: write 10ms, 10s, 10m, 10h or 10d`);
  });

  it.each(SETTINGS)('%s: zero is refused (it cannot work)', (name) => {
    expect(refusal({ [name]: '0s' })).toMatch(new RegExp(`^${name}: "0s" is too short: at least \\d+(ms|s|h)$`));
  });

  it.each([
    ['KEYPLANE_RECONCILE_INTERVAL', '30d', 'at most 1d'],
    ['KEYPLANE_RELOAD_TIMEOUT', '2h', 'at most 1h'],
    ['KEYPLANE_READY_TIMEOUT', '2h', 'at most 1h'],
    ['KEYPLANE_HEALTH_TIMEOUT', '10m', 'at most 5m'],
    ['KEYPLANE_HEALTH_RETENTION', '4000d', 'at most 3650d'],
    ['KEYPLANE_DOCKER_STOP_TIMEOUT', '11m', 'at most 10m'],
  ])('%s=%s is refused as absurd (%s)', (name, value, bound) => {
    expect(refusal({ [name]: value })).toBe(`${name}: "${value}" is too long: ${bound}`);
  });

  it('the values people write are read as they mean them', () => {
    const s = loadSettings({
      KEYPLANE_RECONCILE_INTERVAL: '5m',
      KEYPLANE_RELOAD_TIMEOUT: '90s',
      KEYPLANE_READY_TIMEOUT: '2m',
      KEYPLANE_HEALTH_TIMEOUT: '10s',
      KEYPLANE_HEALTH_RETENTION: '30d',
      KEYPLANE_DOCKER_STOP_TIMEOUT: '30s',
      KEYPLANE_SYNC_WAIT: '50ms:2s',
    });
    expect(s).toMatchObject({ reconcileIntervalMs: 300_000, reloadTimeoutMs: 90_000, readyTimeoutMs: 120_000, healthTimeoutMs: 10_000, healthRetentionMs: 30 * 86_400_000, dockerStopTimeoutS: 30 });
    expect(s.syncWait).toEqual({ minMs: 50, maxMs: 2000 });
  });

  it('KEYPLANE_DOCKER_STOP_TIMEOUT takes whole seconds with a unit (Docker counts seconds)', () => {
    expect(loadSettings({ KEYPLANE_DOCKER_STOP_TIMEOUT: '2m' }).dockerStopTimeoutS).toBe(120);
    // It was a bare number of seconds: the message says which unit to add.
    expect(refusal({ KEYPLANE_DOCKER_STOP_TIMEOUT: '30' })).toBe('KEYPLANE_DOCKER_STOP_TIMEOUT: "30" has no unit (it used to mean seconds): write 30s');
    expect(refusal({ KEYPLANE_DOCKER_STOP_TIMEOUT: '1500ms' })).toBe('KEYPLANE_DOCKER_STOP_TIMEOUT: "1500ms" is not a whole number of seconds');
  });

  it('KEYPLANE_DOCKER_STOP_TIMEOUT unset leaves each container its own; KEYPLANE_ROLLOUT_SETTLE defaults to 5s and may be 0s', () => {
    expect(loadSettings({}).dockerStopTimeoutS).toBeUndefined();
    expect(loadSettings({}).rolloutSettleMs).toBe(5_000);
    expect(loadSettings({ KEYPLANE_ROLLOUT_SETTLE: '0s' }).rolloutSettleMs).toBe(0);
    expect(loadSettings({ KEYPLANE_ROLLOUT_SETTLE: '1500ms' }).rolloutSettleMs).toBe(1_500);
    expect(refusal({ KEYPLANE_ROLLOUT_SETTLE: '5' })).toBe('KEYPLANE_ROLLOUT_SETTLE: "5" has no unit: write 5ms, 5s, 5m, 5h or 5d');
    expect(refusal({ KEYPLANE_ROLLOUT_SETTLE: '1h' })).toBe('KEYPLANE_ROLLOUT_SETTLE: "1h" is too long: at most 10m');
  });

  it('KEYPLANE_RELOAD_TARGETS: name=url pairs for the command reloader', () => {
    const s = loadSettings({ KEYPLANE_RELOAD: 'command', KEYPLANE_RELOAD_COMMAND: 'systemctl restart "$KEYPLANE_TARGET"', KEYPLANE_RELOAD_TARGETS: 'litellm@4001.service=http://127.0.0.1:4001, litellm@4002.service=http://127.0.0.1:4002/' });
    expect(s.reloadTargets).toEqual([
      { name: 'litellm@4001.service', url: 'http://127.0.0.1:4001' },
      { name: 'litellm@4002.service', url: 'http://127.0.0.1:4002' },
    ]);
    const cmd = { KEYPLANE_RELOAD: 'command', KEYPLANE_RELOAD_COMMAND: 'true' };
    expect(refusal({ ...cmd, KEYPLANE_RELOAD_TARGETS: 'http://127.0.0.1:4001' })).toMatch(/^KEYPLANE_RELOAD_TARGETS: "http:\/\/127\.0\.0\.1:4001" is not name=url/);
    expect(refusal({ ...cmd, KEYPLANE_RELOAD_TARGETS: 'a;rm -rf /=http://127.0.0.1:1' })).toMatch(/^KEYPLANE_RELOAD_TARGETS: "a;rm -rf \/" is not name=url/);
    expect(refusal({ ...cmd, KEYPLANE_RELOAD_TARGETS: 'a=ftp://x' })).toBe('KEYPLANE_RELOAD_TARGETS: is not an http(s) URL');
    expect(refusal({ ...cmd, KEYPLANE_RELOAD_TARGETS: 'a=http://x:1,a=http://x:2' })).toBe('KEYPLANE_RELOAD_TARGETS: names a twice');
    expect(refusal({ KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_LABEL: 'x=y', KEYPLANE_RELOAD_TARGETS: 'a=http://x:1' })).toMatch(/^KEYPLANE_RELOAD_TARGETS: is for KEYPLANE_RELOAD=command/);
  });

  it('KEYPLANE_SYNC_WAIT: min[:max] in the same syntax; zero (no wait) is allowed, a bare number is not', () => {
    expect(parseSyncWait('0ms')).toEqual({ minMs: 0, maxMs: 0 });
    expect(parseSyncWait('1s')).toEqual({ minMs: 1000, maxMs: 4000 });
    expect(() => parseSyncWait('50')).toThrow('KEYPLANE_SYNC_WAIT: min "50" has no unit: write 50ms, 50s, 50m, 50h or 50d (the form is min[:max], such as 50ms:2s)');
    expect(() => parseSyncWait('50ms:2')).toThrow('KEYPLANE_SYNC_WAIT: max "2" has no unit');
    expect(() => parseSyncWait('1h')).toThrow('KEYPLANE_SYNC_WAIT: min "1h" is too long: at most 10m');
    expect(() => parseSyncWait('1s:2s:3s')).toThrow('is not min[:max]');
    expect(() => parseSyncWait('2s:50ms')).toThrow('KEYPLANE_SYNC_WAIT: max 50ms is below min 2s');
  });

  it('the settings file takes the same syntax (the example file loads)', () => {
    const s = loadSettings({ KEYPLANE_CONFIG: path.resolve(__dirname, '..', 'config', 'keyplane.example.yaml') });
    expect(s.reconcileIntervalMs).toBe(300_000);
    expect(s.readyTimeoutMs).toBe(60_000);
    expect(s.healthRetentionMs).toBe(7 * 86_400_000);
  });

  it('KEYPLANE_RECONCILE_INTERVAL=0 stops start-up with one line (it used to busy-loop)', async () => {
    const res = await run(process.execPath, [BIN, 'serve'], { env: { PATH: process.env.PATH!, KEYPLANE_RECONCILE_INTERVAL: '0' } }).catch((e: { code: number; stderr: string }) => e);
    expect(res).toMatchObject({ code: 78 });
    expect((res as { stderr: string }).stderr).toBe('keyplane: KEYPLANE_RECONCILE_INTERVAL: "0" has no unit: write 0ms, 0s, 0m, 0h or 0d\n');
  });
});
