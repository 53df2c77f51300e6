import { destinationOf } from '../../src/destinations';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import client from 'prom-client';
import { Fingerprinter, Keyring } from '../../src/crypto/keyring';
import { SafeEmitter } from '../../src/events';
import { PlatformKeysService } from '../../src/features/platform-keys/platform-keys-service';
import { createKeyValidator } from '../../src/health/key-validator';
import { HealthStore } from '../../src/health/health-store';
import { Prober, type HealthEvents, type ProberDeps } from '../../src/health/prober';
import { CLI_PRINCIPAL } from '../../src/http/principal';
import { createLogger, SecretRegistry, type Logger } from '../../src/log';
import type { Pool } from '../../src/db/pool';

export const HEALTH_SETTINGS = {
  healthSchedule: '*/5 * * * *',
  healthConcurrency: 20,
  healthTimeoutMs: 2000,
  healthFailThreshold: 2,
  healthRecoverThreshold: 2,
  healthRetentionMs: 7 * 86_400_000,
};

const EVENT_NAMES: Array<keyof HealthEvents> = ['health:round-started', 'health:round-done', 'health:round-skipped', 'health:round-failed', 'probe:result', 'health:transition'];

/**
 * The health parts against a test database. The logger's secret registry is NOT the keyring's, so
 * a key that reached a log line would show up in `logs()` instead of being redacted away.
 */
export class HealthEnv {
  readonly logSecrets = new SecretRegistry();
  readonly keyringSecrets = new SecretRegistry();
  readonly keyring = Keyring.parse(Keyring.generateSpec('t'), this.keyringSecrets);
  readonly keys: PlatformKeysService;
  readonly store: HealthStore;
  readonly log: Logger;
  readonly emitter = new SafeEmitter<HealthEvents>();
  readonly events: Array<{ name: string; payload: unknown }> = [];
  private captured = '';

  /** `validate: true` backs PUT {validate: true} with the prober's probes. */
  constructor(readonly pool: Pool, opts: { validate?: boolean } = {}) {
    this.store = new HealthStore(pool);
    const stream = new PassThrough();
    stream.on('data', (c: Buffer) => (this.captured += c.toString('utf8')));
    this.log = createLogger({ secrets: this.logSecrets, stream, json: true, level: 'debug' });
    const validator = opts.validate ? createKeyValidator({ store: this.store, log: this.log, timeoutMs: 2000, secrets: this.keyringSecrets }) : undefined;
    this.keys = new PlatformKeysService(pool, this.keyring, new Fingerprinter(randomBytes(32)), validator);
    for (const name of EVENT_NAMES) this.emitter.on(name, (payload) => this.events.push({ name, payload }));
  }

  logs(): string {
    return this.captured;
  }

  prober(over: Omit<Partial<ProberDeps>, 'settings'> & { settings?: Partial<ProberDeps['settings']> } = {}): Prober {
    const { settings, ...rest } = over;
    return new Prober({
      store: this.store,
      keys: this.keys,
      log: this.log,
      registry: new client.Registry(),
      emitter: this.emitter,
      settings: { ...HEALTH_SETTINGS, litellmUrl: 'http://127.0.0.1:1', ...settings },
      ...rest,
    });
  }

  async putKey(name: string, value: string, expiresAt?: Date): Promise<void> {
    await this.keys.put(name, { api_key: value, expires_at: expiresAt?.toISOString() ?? null }, { principal: CLI_PRINCIPAL, requestId: 'test' });
  }

  async reset(): Promise<void> {
    await this.pool.query('DELETE FROM models; DELETE FROM providers; DELETE FROM platform_keys; DELETE FROM health_history; DELETE FROM litellm_health');
    this.events.length = 0;
  }

  /** Adds a provider as an admin would: its (key, destination) pair approved unless `approved: false`. */
  async addProvider(slug: string, p: { kind?: string; apiBase: string | null; keyName?: string; enabled?: boolean; degradedMs?: number; approved?: boolean }): Promise<void> {
    const kind = p.kind ?? 'openai';
    const keyName = p.keyName ?? slug;
    await this.pool.query('INSERT INTO providers (slug, kind, api_base, key_name, enabled, degraded_ms) VALUES ($1,$2,$3,$4,$5,$6)', [
      slug,
      kind,
      p.apiBase,
      keyName,
      p.enabled ?? true,
      p.degradedMs ?? 2000,
    ]);
    if (p.approved !== false) {
      await this.pool.query('INSERT INTO key_destinations (key_name, destination, approved_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [
        keyName,
        destinationOf(kind, p.apiBase),
        'test',
      ]);
    }
  }

  async provider(slug: string): Promise<Record<string, unknown>> {
    const { rows } = await this.pool.query('SELECT * FROM providers WHERE slug = $1', [slug]);
    return rows[0] as Record<string, unknown>;
  }

  /** Fails the test when any captured log line or event holds one of `secrets`. */
  expectNoSecrets(secrets: string[], extra: string[] = []): void {
    const haystacks = [this.logs(), JSON.stringify(this.events), ...extra];
    for (const s of secrets) for (const h of haystacks) expect(h).not.toContain(s);
  }
}

/** A webhook receiver on 127.0.0.1 that records every JSON body; `failFirst` answers that many requests with 500. */
export async function startReceiver(opts: { failFirst?: number; status?: number } = {}): Promise<{
  url: string;
  bodies: Array<Record<string, unknown>>;
  raw: string[];
  hits: () => number;
  waitFor: (n: number, timeoutMs?: number) => Promise<void>;
  close: () => Promise<void>;
}> {
  const bodies: Array<Record<string, unknown>> = [];
  const raw: string[] = [];
  let hits = 0;
  const waiters: Array<() => void> = [];
  const server: Server = createServer((req, res) => {
    let data = '';
    req.on('data', (c: Buffer) => (data += c.toString('utf8')));
    req.on('end', () => {
      hits++;
      raw.push(data);
      if (hits <= (opts.failFirst ?? 0)) {
        res.writeHead(500).end();
      } else if (opts.status && opts.status !== 200) {
        res.writeHead(opts.status).end();
      } else {
        bodies.push(JSON.parse(data) as Record<string, unknown>);
        res.writeHead(204).end();
      }
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/T0KEN-in-the-path-0123456789`;
  return {
    url,
    bodies,
    raw,
    hits: () => hits,
    async waitFor(n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (hits < n) {
        if (Date.now() > deadline) throw new Error(`receiver got ${hits} of ${n} requests`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 50).unref();
        });
      }
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
