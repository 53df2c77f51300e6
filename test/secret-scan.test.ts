import { startTestApp } from './helpers/app';

/**
 * The suite's secret scan (test/helpers/app.ts): every test app, when closed, looks for each secret
 * stored through it in all of its log output and every response but the decrypted endpoint's. This
 * shows the scan itself can fail.
 */
describe('secret scan', () => {
  it('fails a test app whose log holds a stored secret', async () => {
    const t = await startTestApp();
    const value = 'sk-scan-proof-0123456789abcdef';
    // Logged before keyplane knew it was a secret (redaction only knows values it has seen).
    t.kp.log.info('a careless line', { note: value });
    await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: value }).expect(200);
    await expect(t.close()).rejects.toThrow(/secret scan: 1 stored secret value\(s\) leaked: the log holds the value ending in cdef/);
  });

  it('passes an app that only served the secret from the decrypted endpoint', async () => {
    const t = await startTestApp();
    const value = 'sk-scan-proof-fedcba9876543210';
    await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: value }).expect(200);
    const res = await t.api().get('/api/v1/admin/platform-keys/openai/decrypted').expect(200);
    expect(res.body.api_key).toBe(value);
    await t.close();
  });
});
