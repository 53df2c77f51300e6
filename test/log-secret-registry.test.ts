import { rmSync } from 'node:fs';
import { SecretRegistry } from '../src/log';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { captureLog, envLine, keyService, keyValue, syncInstance, TEST_CTX } from './helpers/sync';

describe('the secret registry is bounded', () => {
  it('keeps the most recently added values, up to its bound; adding a value again makes it recent', () => {
    const r = new SecretRegistry(3);
    for (const v of ['value-0001', 'value-0002', 'value-0003']) r.add(v);
    r.add('value-0001');
    r.add('value-0004');
    expect(r.size).toBe(3);
    expect(r.snapshot().sort()).toEqual(['value-0001', 'value-0003', 'value-0004']);
    expect(r.mask('a value-0001 b value-0002 c value-0004')).toBe('a [REDACTED] b value-0002 c [REDACTED]');
    r.add('short');
    expect(r.size).toBe(3);
  });

  it('keeps pinned values (keyplane\'s own settings) whatever is added after them', () => {
    const r = new SecretRegistry(2);
    r.pin('adm_bootstrap-token-1');
    for (let i = 0; i < 100; i++) r.add(`rotated-value-${i}`);
    r.add('adm_bootstrap-token-1');
    expect(r.size).toBe(2);
    expect(r.mask('Bearer adm_bootstrap-token-1 and rotated-value-99')).toBe('Bearer [REDACTED] and [REDACTED]');
    expect(r.snapshot()).toContain('adm_bootstrap-token-1');
  });

  describe('through many rotations', () => {
    let db: TestDatabase;
    beforeAll(async () => {
      db = await createTestDatabase();
    });
    afterAll(async () => {
      await db.drop();
    });

    it('stays within its bound and still redacts every key value in use', async () => {
      const logs = captureLog(new SecretRegistry(12));
      const keys = keyService(db.pool, logs.secrets);
      const current: Record<string, string> = {};
      for (const name of ['openai', 'groq', 'anthropic']) {
        current[name] = keyValue(`sk-${name}`);
        await keys.put(name, { api_key: current[name]! }, TEST_CTX);
      }
      const inst = syncInstance(db.url, db.pool, keys, { logs });
      await inst.runtime.start();
      try {
        for (let i = 0; i < 40; i++) {
          const value = keyValue(`sk-rot-${i}`);
          const rendered = inst.events.waitFor('render:done', (r) => r.changed && r.changedKeys.includes('openai'));
          await keys.put('openai', { api_key: value }, TEST_CTX);
          await rendered;
          current.openai = value;
          expect(logs.secrets.size).toBeLessThanOrEqual(12);
        }
        const env = (await inst.runtime.syncer.preview()).env;
        expect(envLine(env, 'OPENAI_API_KEY')).toBe(`****${current.openai!.slice(-4)}`);
        for (const v of Object.values(current)) {
          logs.log.warn('a line that quotes a key by mistake', { detail: `value=${v}` });
          expect(logs.secrets.mask(v)).toBe('[REDACTED]');
          expect(logs.text()).not.toContain(v);
        }
        expect(logs.secrets.size).toBeLessThanOrEqual(12);
      } finally {
        await inst.runtime.stop();
        rmSync(inst.dir, { recursive: true, force: true });
      }
    });
  });
});
