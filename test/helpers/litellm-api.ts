import { randomBytes, randomUUID } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { Fingerprinter } from '../../src/crypto/keyring';
import { LitellmStateStore } from '../../src/litellm/litellm-state-store';
import { createLogger, SecretRegistry, type Logger } from '../../src/log';
import { LitellmApiReloader } from '../../src/reload/litellm-api';
import { litellmModelId } from '../../src/reload/litellm-plan';
import type { ReloadRequest } from '../../src/reload/reloader';
import { destinationOf } from '../../src/destinations';
import type { DesiredModel, DesiredState, KeyState } from '../../src/sync/desired-state';
import type { TestDatabase } from './db';
import type { FakeLitellm } from './fake-litellm';
import { approvalsFor } from './state';

/** Hand-built desired states and requests for the litellm-api reloader, against the fake LiteLLM. */

export const fingerprints = new Fingerprinter(randomBytes(32));
export const MASTER = `sk-master-${randomBytes(12).toString('hex')}`;

export function key(name: string, envVar: string, value: string, version = 1) {
  return { name, envVar, version, value, fingerprint: fingerprints.of(value), expiresAt: null };
}

export function model(id: string, modelName: string, provider: string, upstream: string, extra: Partial<DesiredModel> = {}): DesiredModel {
  return { id, modelName, provider, model: upstream, apiBase: null, rpm: null, tpm: null, litellmParams: {}, modelInfo: {}, ...extra };
}

export const M_OPENAI = randomUUID();
export const M_CLAUDE = randomUUID();
export const M_GROQ = randomUUID();
export const M_FIREWORKS = randomUUID();
/** Their ids in LiteLLM: one DB model per (model, key), each provider's key named after it. */
export const D_OPENAI = litellmModelId(M_OPENAI, 'openai');
export const D_CLAUDE = litellmModelId(M_CLAUDE, 'anthropic');
export const D_GROQ = litellmModelId(M_GROQ, 'groq');
export const D_FIREWORKS = litellmModelId(M_FIREWORKS, 'fireworks');

/** Four providers (one disabled, one without a key) and one model each; every pair approved. */
export function baseState(): DesiredState {
  const state: DesiredState = {
    keys: [
      key('openai', 'OPENAI_API_KEY', `sk-openai-${randomBytes(16).toString('hex')}`),
      key('anthropic', 'ANTHROPIC_API_KEY', `sk-ant-${randomBytes(16).toString('hex')}`),
      key('fireworks', 'FIREWORKS_API_KEY', `fw-${randomBytes(16).toString('hex')}`),
      key('litellm_master_key', 'LITELLM_MASTER_KEY', MASTER),
    ],
    providers: [
      { slug: 'anthropic', kind: 'anthropic', apiBase: null, keyName: 'anthropic', enabled: true },
      { slug: 'fireworks', kind: 'fireworks_ai', apiBase: 'https://api.fireworks.ai/inference/v1', keyName: 'fireworks', enabled: false },
      { slug: 'groq', kind: 'groq', apiBase: 'https://api.groq.com/openai/v1', keyName: 'groq', enabled: true },
      { slug: 'openai', kind: 'openai', apiBase: 'https://api.openai.com/v1', keyName: 'openai', enabled: true },
    ],
    models: [
      model(M_OPENAI, 'gpt-4o-mini', 'openai', 'gpt-4o-mini', { rpm: 100, modelInfo: { team: 'core' } }),
      model(M_CLAUDE, 'claude-3-5-sonnet', 'anthropic', 'claude-3-5-sonnet-20241022'),
      model(M_GROQ, 'llama-3', 'groq', 'llama3-70b-8192'),
      model(M_FIREWORKS, 'fw-llama', 'fireworks', 'llama-v3-70b'),
    ],
    routing: { aliases: {}, fallbacks: {} },
    approvals: [],
    authRequired: false,
  };
  state.approvals = approvalsFor(state.providers, state.models);
  return state;
}

export const M_POOL = randomUUID();
export const POOL_KEYS = ['pool-a', 'pool-b', 'pool-c'] as const;
export const POOL_BASE = 'https://api.pooled.example/v1';

/** baseState and a provider `pooled` whose pool has three keys (weights 3, 1, 1), with one model; every key approved for its host. */
export function poolState(): DesiredState {
  const state = baseState();
  for (const name of POOL_KEYS) state.keys.push(key(name, `${name.replace('-', '_').toUpperCase()}_API_KEY`, `sk-${name}-${randomBytes(16).toString('hex')}`));
  state.providers.push({
    slug: 'pooled',
    kind: 'openai',
    apiBase: POOL_BASE,
    keyName: 'pool-a',
    keys: [{ name: 'pool-a', weight: 3 }, { name: 'pool-b', weight: 1 }, { name: 'pool-c', weight: 1 }],
    enabled: true,
  });
  state.models.push(model(M_POOL, 'pooled-mini', 'pooled', 'gpt-4o-mini'));
  for (const name of POOL_KEYS) state.approvals.push({ keyName: name, destination: destinationOf('openai', POOL_BASE) });
  return state;
}

export function setKeyState(state: DesiredState, name: string, keyState: KeyState): void {
  state.keys.find((k) => k.name === name)!.state = keyState;
}

/** The request the syncer hands over; `trigger` as the syncer names it (`reconcile` on the periodic run). */
export function request(state: DesiredState, revision: number, env: Record<string, string> = { LITELLM_MASTER_KEY: MASTER }, trigger?: string): ReloadRequest {
  return {
    revision,
    outputDir: '/nonexistent',
    configPath: '/nonexistent/config.yaml',
    envPath: '/nonexistent/litellm.env',
    env,
    state,
    restorePrevious: async () => false,
    ...(trigger ? { trigger } : {}),
  };
}

export function setKey(state: DesiredState, name: string, value: string): void {
  const k = state.keys.find((x) => x.name === name)!;
  Object.assign(k, { value, version: k.version + 1, fingerprint: fingerprints.of(value) });
}

/** A logger writing JSON lines into a string, with an empty registry: redaction must not be what keeps secrets out. */
export function capturingLogger(): { log: Logger; logs: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString('utf8')));
  return { log: createLogger({ secrets: new SecretRegistry(), stream, json: true, level: 'debug' }), logs: () => text };
}

/** Empties the ledger and marks the one-time adoption done (as on an install that never had an older keyplane). */
export async function resetLitellmState(db: TestDatabase, opts: { adopted?: boolean } = {}): Promise<void> {
  await db.pool.query('DELETE FROM litellm_owned');
  await db.pool.query('UPDATE litellm_api_state SET known_master_version = NULL, adopted_at = $1', [opts.adopted === false ? null : new Date()]);
}

export async function ledger(db: TestDatabase): Promise<string[]> {
  const { rows } = await db.pool.query<{ kind: string; name: string }>('SELECT kind, name FROM litellm_owned ORDER BY kind, name');
  return rows.map((r) => `${r.kind}:${r.name}`);
}

export function storeFor(db: TestDatabase): LitellmStateStore {
  return new LitellmStateStore(db.pool, async () => {
    throw new Error('these tests store no master key versions');
  });
}

export function reloaderFor(fake: FakeLitellm, db: TestDatabase, log: Logger, opts: { masterKey?: string; url?: string; timeoutMs?: number } = {}): LitellmApiReloader {
  return new LitellmApiReloader({ url: opts.url ?? fake.url, masterKey: opts.masterKey, store: storeFor(db), log, timeoutMs: opts.timeoutMs });
}
