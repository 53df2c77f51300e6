import { createConnection, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { CommitOutcomeUnknown, createPool, isUnavailable, type Pool } from '../src/db/pool';
import { SecretRegistry } from '../src/log';
import { CLI_PRINCIPAL } from '../src/http/principal';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { keyService, keyValue } from './helpers/sync';

/**
 * The test database behind a TCP proxy that can play a crash at the worst moment: once armed, the
 * first statement whose text holds `marker` goes through, and when the server's answer to it comes
 * back the answer is dropped, every connection is cut and no new one is taken (Postgres "gone"
 * right after it committed, as an immediate shutdown or a crash can leave it).
 */
class CrashingProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private marker?: string;
  cut = false;

  constructor(private readonly upstreamPort: number) {}

  async start(): Promise<number> {
    const server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    return (server.address() as AddressInfo).port;
  }

  arm(marker: string): void {
    this.marker = marker;
  }

  private accept(client: Socket): void {
    const upstream = createConnection(this.upstreamPort, '127.0.0.1');
    let answerIsTheCut = false;
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d: Buffer) => {
      if (this.marker && d.includes(this.marker)) {
        this.marker = undefined;
        answerIsTheCut = true;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!answerIsTheCut) return void client.write(d);
      this.cut = true;
      this.stop();
    });
  }

  stop(): void {
    this.server?.close();
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
  }
}

describe('fault: the database goes away right after a rotation committed', () => {
  let db: TestDatabase;
  let proxy: CrashingProxy;
  let pool: Pool;
  let keys: PlatformKeysService;
  const ctx = { principal: CLI_PRINCIPAL, requestId: 'req-crash' };

  beforeAll(async () => {
    db = await createTestDatabase();
    const url = new URL(db.url);
    proxy = new CrashingProxy(Number(url.port));
    url.port = String(await proxy.start());
    pool = createPool(url.toString(), { max: 4 });
    keys = keyService(pool, new SecretRegistry());
  });
  afterAll(async () => {
    proxy.stop();
    await pool.end().catch(() => undefined);
    await db.drop();
  });

  it('a queued rotation whose commit cannot be looked up is answered "outcome unknown", never "unavailable"', async () => {
    await keys.put('crashy', { api_key: keyValue('sk-crash-first') }, ctx);
    // The second plain rotation takes the batched path: one statement (see rotateMany).
    const value = keyValue('sk-crash-second');
    proxy.arm('WITH RECURSIVE');
    const outcome = await keys.put('crashy', { api_key: value }, ctx).then(
      () => 'answered 200',
      (err: unknown) => err,
    );
    expect(proxy.cut).toBe(true);
    // It did commit: an answer that says "the database is unavailable, retry" would have it written twice.
    const stored = await db.pool.query('SELECT version, fingerprint FROM platform_key_versions WHERE name = $1 ORDER BY version', ['crashy']);
    expect(stored.rows.map((r) => [r.version, r.fingerprint])).toEqual([
      [1, expect.any(String)],
      [2, keys.fingerprint(value)],
    ]);
    expect(outcome).toBeInstanceOf(CommitOutcomeUnknown);
    expect(isUnavailable(outcome)).toBe(false);
  });
});
