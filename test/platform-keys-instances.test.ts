import { startTestApp, type TestApp } from './helpers/app';

/** Two keyplane instances on one database: each remembers the head it wrote, and must notice the other's writes. */
describe('platform keys written through two instances', () => {
  let a: TestApp;
  let b: TestApp;
  beforeAll(async () => {
    a = await startTestApp();
    b = await startTestApp({ db: a.db, masterKey: a.masterKey });
  });
  afterAll(async () => {
    await b.close();
    await a.close();
  });

  it('rotations alternate between instances with consecutive versions and the right value', async () => {
    const expected: string[] = [];
    for (let i = 1; i <= 6; i++) {
      const via = i % 2 ? a : b;
      const value = `sk-two-instances-${i}-abcdef`;
      expected.push(value);
      const res = await via.api().put('/api/v1/admin/platform-keys/shared').send({ api_key: value }).expect(200);
      expect(res.body.version).toBe(i);
    }
    // Twice in a row through one instance after the other wrote: its remembered head is stale.
    await a.api().put('/api/v1/admin/platform-keys/shared').send({ api_key: 'sk-two-instances-7-abcdef' }).expect(200);
    const dec = await b.api().get('/api/v1/admin/platform-keys/shared/decrypted').expect(200);
    expect(dec.body).toMatchObject({ api_key: 'sk-two-instances-7-abcdef', version: 7 });
    const versions = await a.api().get('/api/v1/admin/platform-keys/shared/versions').expect(200);
    expect(versions.body.items.map((v: { version: number }) => v.version)).toEqual([7, 6, 5, 4, 3, 2, 1]);
    const verify = await a.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(verify.body.ok).toBe(true);
  });

  it('If-Match is judged against the database, not a remembered head', async () => {
    const cur = await a.api().get('/api/v1/admin/platform-keys/shared').expect(200);
    await b.api().put('/api/v1/admin/platform-keys/shared').send({ api_key: 'sk-two-instances-b-abcdef' }).expect(200);
    // a last wrote version cur; b moved it on. a must refuse a write that expects cur.
    const stale = await a.api().put('/api/v1/admin/platform-keys/shared').set('If-Match', `"${cur.body.version}"`).send({ api_key: 'sk-two-instances-x-abcdef' }).expect(412);
    expect(stale.body.current_version).toBe(cur.body.version + 1);
    await a.api().put('/api/v1/admin/platform-keys/shared').set('If-Match', `"${cur.body.version + 1}"`).send({ api_key: 'sk-two-instances-y-abcdef' }).expect(200);
  });

  it('a key deleted and re-created through the other instance starts again at version 1', async () => {
    await a.api().put('/api/v1/admin/platform-keys/cycle').send({ api_key: 'sk-cycle-1-abcdefgh' }).expect(200);
    await b.api().delete('/api/v1/admin/platform-keys/cycle').expect(204);
    await b.api().put('/api/v1/admin/platform-keys/cycle').send({ api_key: 'sk-cycle-2-abcdefgh' }).expect(200);
    const res = await a.api().put('/api/v1/admin/platform-keys/cycle').send({ api_key: 'sk-cycle-3-abcdefgh' }).expect(200);
    expect(res.body.version).toBe(2);
    const dec = await a.api().get('/api/v1/admin/platform-keys/cycle/decrypted').expect(200);
    expect(dec.body.api_key).toBe('sk-cycle-3-abcdefgh');
  });
});
