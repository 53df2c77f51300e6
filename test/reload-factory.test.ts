import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadSettings } from '../src/config';
import { Keyring } from '../src/crypto/keyring';
import { createPool } from '../src/db/pool';
import { createLogger, SecretRegistry } from '../src/log';
import { SafeEmitter } from '../src/events';
import { CommandReloader } from '../src/reload/command';
import { DockerReloader } from '../src/reload/docker';
import { LitellmApiReloader } from '../src/reload/litellm-api';
import { NoneReloader } from '../src/reload/none';
import { ReloadQueue, type ReloadEvents } from '../src/reload/reload-queue';
import { createReloader } from '../src/reload/reloader-factory';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { RevisionFiles } from './helpers/reload';

const log = createLogger({ secrets: new SecretRegistry(), silent: true });
const base = { KEYPLANE_DATABASE_URL: 'postgres://x@127.0.0.1/x', KEYPLANE_MASTER_KEY: 'k1:AAAA' };

describe('createReloader', () => {
  it('builds the reloader KEYPLANE_RELOAD names', () => {
    expect(createReloader(loadSettings(base), { log })).toBeInstanceOf(NoneReloader);
    expect(createReloader(loadSettings({ ...base, KEYPLANE_RELOAD: 'command', KEYPLANE_RELOAD_COMMAND: 'systemctl try-restart litellm' }), { log })).toBeInstanceOf(CommandReloader);
    expect(createReloader(loadSettings({ ...base, KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: 'litellm' }), { log })).toBeInstanceOf(DockerReloader);
    expect(createReloader(loadSettings({ ...base, KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_LABEL: 'keyplane.litellm=true', DOCKER_HOST: 'tcp://127.0.0.1:2375' }), { log })).toBeInstanceOf(DockerReloader);
    // litellm-api keeps its ledger in keyplane's database (a pool connects only when used).
    const pool = createPool('postgres://x@127.0.0.1/x');
    const keyring = Keyring.parse(Keyring.generateSpec('k1'), new SecretRegistry());
    expect(createReloader(loadSettings({ ...base, KEYPLANE_RELOAD: 'litellm-api' }), { log, pool, keyring })).toBeInstanceOf(LitellmApiReloader);
    expect(() => createReloader(loadSettings({ ...base, KEYPLANE_RELOAD: 'litellm-api' }), { log })).toThrow(/needs keyplane's database and keyring/);
  });

  it('rejects bad reload settings with one line naming the setting', () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ KEYPLANE_RELOAD: 'sighup' }, 'KEYPLANE_RELOAD: "sighup" is not one of none, command, docker, litellm-api'],
      [{ KEYPLANE_RELOAD: 'command' }, 'KEYPLANE_RELOAD_COMMAND: is required when KEYPLANE_RELOAD=command'],
      [{ KEYPLANE_RELOAD: 'docker' }, 'KEYPLANE_DOCKER_CONTAINERS: KEYPLANE_RELOAD=docker needs KEYPLANE_DOCKER_CONTAINERS or KEYPLANE_DOCKER_LABEL'],
      [{ KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: 'litellm', KEYPLANE_DOCKER_MODE: 'kill' }, 'KEYPLANE_DOCKER_MODE: "kill" is not one of restart, recreate'],
    ];
    for (const [env, message] of cases) {
      expect(() => loadSettings({ ...base, ...env })).toThrow(new ConfigError(message.split(':')[0]!, message.slice(message.indexOf(':') + 2)));
    }
    for (const host of ['unix://', 'ftp://docker:1', 'tcp://']) {
      const s = loadSettings({ ...base, KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: 'litellm', DOCKER_HOST: host });
      expect(() => createReloader(s, { log })).toThrow(ConfigError);
      expect(() => createReloader(s, { log })).toThrow(/^DOCKER_HOST: /);
    }
  });
});

describe('docker reloader without a Docker engine', () => {
  let db: TestDatabase;
  let dir: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    dir = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-nodocker-'));
  });

  afterAll(async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('gives a failed run with a clear message in the status, and never throws', async () => {
    const settings = loadSettings({
      ...base,
      KEYPLANE_RELOAD: 'docker',
      KEYPLANE_DOCKER_CONTAINERS: 'litellm',
      DOCKER_HOST: `unix://${path.join(dir, 'no-such-docker.sock')}`,
    });
    const events = new SafeEmitter<ReloadEvents>();
    const queue = new ReloadQueue({ reloader: createReloader(settings, { log }), pool: db.pool, log, alerter: { send: async () => undefined }, emitter: events, backoffMs: 5 });
    const files = await RevisionFiles.create(path.join(dir, 'out'));
    const failed = events.waitFor('reload:failed', (e) => e.revision === 1);
    queue.submit(await files.write(1, { OPENROUTER_API_KEY: 'sk-or-nodocker-1234' }));
    const ev = await failed;
    expect(ev.attempts).toBe(3);
    const message = `cannot reach the Docker engine at unix://${path.join(dir, 'no-such-docker.sock')} (ENOENT): is Docker running, and is its socket mounted into keyplane's container? Set DOCKER_HOST to point at it`;
    expect(ev.result.error).toBe(message);
    const status = await queue.status();
    expect(status.last).toMatchObject({ reloader: 'docker', status: 'failed', error: message, targets: [{ target: 'litellm', status: 'failed', error: message }] });
    await queue.stop();
  });
});
