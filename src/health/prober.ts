import { displayUrl } from '../url';
import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import cron, { type ScheduledTask } from 'node-cron';
import client from 'prom-client';
import type { Settings } from '../config';
import type { Alerter, AlertEvent } from '../alerts/alerter';
import type { SafeEmitter } from '../events';
import type { Logger } from '../log';
import { HealthStore, type LitellmHealthRow, type ProviderHealthRow, type ProviderHealthUpdate } from './health-store';
import type { KeyProber, KeyResult } from './key-prober';
import { ProbeClient } from './probe-client';
import { createProbeAgents, HEALTH_STATUSES, observe, probeLitellm, unprobed, type ProbeAgents, type HealthReason, type HealthStatus, type LitellmObservation, type Observation } from './probes';

export type RoundTrigger = 'first' | 'schedule' | 'manual';

/** A key shorter-lived than this shows as expiring, in the health list and in metrics. */
export const EXPIRING_WITHIN_MS = 14 * 86_400_000;

/** What one probe of a provider or of LiteLLM found, and the status it left after hysteresis. */
interface ProbeOutcome {
  status: HealthStatus;
  reason: string;
  previous_status: HealthStatus;
  changed: boolean;
  observed: { status: HealthStatus; reason: HealthReason };
  latency_ms: number | null;
  http_status: number | null;
  detail: string;
  checked_at: string;
}

export interface ProviderResult extends ProbeOutcome {
  slug: string;
  kind: string;
  key: { name: string; version: number | null; fingerprint: string | null };
}

export interface LitellmResult extends ProbeOutcome {
  url: string;
  version: string | null;
}

export interface RoundResult {
  round: number;
  trigger: RoundTrigger;
  started_at: string;
  finished_at: string;
  duration_ms: number;
  providers: ProviderResult[];
  /** Every key of every pool (empty without a key prober). */
  keys: KeyResult[];
  litellm: LitellmResult | null;
}

/** Lifecycle events; payloads carry names, versions and fingerprints, never a key. */
export interface HealthEvents {
  'health:round-started': { round: number; trigger: RoundTrigger };
  'health:round-done': RoundResult;
  'health:round-skipped': { trigger: RoundTrigger; running_round: number };
  'health:round-failed': { round: number; trigger: RoundTrigger; error: string };
  'probe:result': ProviderResult;
  'health:transition': { subject: 'provider' | 'litellm'; name: string; from: HealthStatus; to: HealthStatus; reason: string };
}

/** Where the prober gets each key's current value (PlatformKeysService satisfies it). */
export interface KeySource {
  currentSecrets(): Promise<Array<{ name: string; version: number; value: string; expires_at: Date | null; fingerprint: string }>>;
}

export interface ProberDeps {
  store: HealthStore;
  keys: KeySource;
  log: Logger;
  settings: Pick<
    Settings,
    'healthSchedule' | 'healthConcurrency' | 'healthTimeoutMs' | 'healthFailThreshold' | 'healthRecoverThreshold' | 'healthRetentionMs' | 'litellmUrl'
  >;
  registry: client.Registry;
  emitter?: SafeEmitter<HealthEvents>;
  alerter?: Alerter;
  /** Scheduled rounds run only where this is true (e.g. the sync leader), so instances sharing a database do not double-count. */
  shouldRun?: () => boolean;
  /** The first round runs after a random delay up to this (default 15 s), so restarts and instances do not probe in lockstep. */
  firstRunDelayMaxMs?: number;
  /** False: do not probe LiteLLM itself. */
  probeLitellm?: boolean;
  /** Probes every pool key in each round, sharing the round's requests (the provider's key is asked once). */
  keyProber?: Pick<KeyProber, 'round'>;
  now?: () => Date;
  random?: () => number;
}

export interface HysteresisState {
  status: HealthStatus;
  reason: string;
  okStreak: number;
  failStreak: number;
}

/**
 * The state after one observation. A healthy observation counts toward recovery, any other toward
 * failure; the status moves only after `recover` (or `fail`) of them in a row, so one blip does not
 * flap it. From `unknown` (never checked, no key, or a different key than last time) the first
 * observation counts at once: there is no earlier state worth protecting.
 */
export function nextState(prev: HysteresisState, obs: { status: HealthStatus; reason: string }, t: { fail: number; recover: number }): HysteresisState & { changed: boolean } {
  if (obs.status === 'unknown') return { status: 'unknown', reason: obs.reason, okStreak: 0, failStreak: 0, changed: prev.status !== 'unknown' };
  const fresh = prev.status === 'unknown';
  if (obs.status === 'healthy') {
    const okStreak = prev.okStreak + 1;
    if (fresh || prev.status === 'healthy' || okStreak >= t.recover) return { status: 'healthy', reason: obs.reason, okStreak, failStreak: 0, changed: prev.status !== 'healthy' };
    return { ...prev, okStreak, failStreak: 0, changed: false };
  }
  const failStreak = prev.failStreak + 1;
  if (fresh || failStreak >= t.fail) return { status: obs.status, reason: obs.reason, okStreak: 0, failStreak, changed: prev.status !== obs.status };
  return { ...prev, okStreak: 0, failStreak, changed: false };
}

/** Runs `fn` over `items` with at most `limit` at a time; results keep the input order. */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}


interface ProberMetrics {
  status: client.Gauge<'provider' | 'status'>;
  latency: client.Histogram<'provider'>;
  litellmStatus: client.Gauge<'status'>;
  keysExpiring: client.Gauge;
  earliestExpiry: client.Gauge;
  rounds: client.Counter<'outcome'>;
  roundDuration: client.Gauge;
}

function createMetrics(registry: client.Registry): ProberMetrics {
  const registers = [registry];
  return {
    status: new client.Gauge({ name: 'keyplane_provider_health_status', help: '1 for the status each provider is in, 0 for the others', labelNames: ['provider', 'status'], registers }),
    latency: new client.Histogram({
      name: 'keyplane_provider_probe_latency_seconds',
      help: 'Latency of health probes by provider',
      labelNames: ['provider'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers,
    }),
    litellmStatus: new client.Gauge({ name: 'keyplane_litellm_health_status', help: "1 for LiteLLM's status, 0 for the others", labelNames: ['status'], registers }),
    // Aggregates only: /metrics is unauthenticated, and key names say which providers and teams
    // a company pays for. The health API (viewer) lists the keys themselves.
    keysExpiring: new client.Gauge({ name: 'keyplane_platform_keys_expiring', help: 'Platform keys that expire within 14 days or have expired', registers }),
    earliestExpiry: new client.Gauge({
      name: 'keyplane_platform_key_earliest_expiry_timestamp_seconds',
      help: 'The earliest expires_at among platform keys (Unix time; +Inf when none has one, NaN before the first health round)',
      registers,
    }),
    rounds: new client.Counter({ name: 'keyplane_health_rounds_total', help: 'Health rounds by outcome (done, skipped, failed)', labelNames: ['outcome'], registers }),
    roundDuration: new client.Gauge({ name: 'keyplane_health_round_duration_seconds', help: 'Wall time of the last health round', registers }),
  };
}

interface Probed {
  row: ProviderHealthRow;
  obs: Observation;
  key: { version: number; fingerprint: string } | undefined;
  probed: boolean;
}

/**
 * Probes every provider (and LiteLLM) on a cron schedule, with a concurrency limit and a per-probe
 * timeout, applies hysteresis, stores the result and the history, and reports transitions. A round
 * never overlaps another: a scheduled round that comes due while one runs is skipped (logged), and
 * a manual one joins the running round.
 */
export class Prober {
  private readonly log: Logger;
  private readonly metrics: ProberMetrics;
  private readonly now: () => Date;
  private readonly random: () => number;
  private readonly litellmUrl: string;
  private task?: ScheduledTask;
  private firstTimer?: NodeJS.Timeout;
  private current?: { round: number; promise: Promise<RoundResult> };
  private readonly abort = new AbortController();
  private readonly agents: ProbeAgents = createProbeAgents();
  private rounds = 0;
  private started = false;
  private stopped = false;
  private readonly pendingAlerts = new Set<Promise<void>>();
  private readonly expiryAlerted = new Set<string>();

  constructor(private readonly deps: ProberDeps) {
    // Every probe in flight listens on this one signal (up to KEYPLANE_HEALTH_CONCURRENCY at once).
    setMaxListeners(0, this.abort.signal);
    this.log = deps.log.child({ component: 'prober' });
    this.metrics = createMetrics(deps.registry);
    this.metrics.earliestExpiry.set(NaN);
    this.now = deps.now ?? (() => new Date());
    this.random = deps.random ?? Math.random;
    this.litellmUrl = displayUrl(deps.settings.litellmUrl);
  }

  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    const delay = Math.floor(this.random() * (this.deps.firstRunDelayMaxMs ?? 15_000));
    this.firstTimer = setTimeout(() => this.trigger('first'), delay);
    this.task = cron.schedule(this.deps.settings.healthSchedule, () => this.trigger('schedule'), { name: 'keyplane-health' });
    this.log.info('prober started', { schedule: this.deps.settings.healthSchedule, first_round_in_ms: delay, concurrency: this.deps.settings.healthConcurrency });
  }

  /** Stops the schedule, cancels probes in flight (their results are not stored) and waits for the round and alerts to end. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.firstTimer) clearTimeout(this.firstTimer);
    if (this.task) await this.task.destroy();
    this.abort.abort();
    await this.current?.promise.catch(() => undefined);
    this.agents.http.destroy();
    this.agents.https.destroy();
    await Promise.all([...this.pendingAlerts]);
  }

  get running(): boolean {
    return this.current !== undefined;
  }

  /** Runs a round now and returns its results; joins the round already running, if any. */
  runNow(): Promise<RoundResult> {
    if (this.stopped) return Promise.reject(new Error('the prober is stopped'));
    return this.current?.promise ?? this.begin('manual');
  }

  private trigger(trigger: RoundTrigger): void {
    if (this.stopped) return;
    if (this.deps.shouldRun && !this.deps.shouldRun()) {
      this.log.debug('health round not run here: another instance probes', { trigger });
      return;
    }
    if (this.current) {
      this.metrics.rounds.inc({ outcome: 'skipped' });
      this.log.warn('health round skipped: the previous round is still running', { trigger, running_round: this.current.round });
      this.deps.emitter?.emit('health:round-skipped', { trigger, running_round: this.current.round });
      return;
    }
    this.begin(trigger).catch(() => undefined);
  }

  private begin(trigger: RoundTrigger): Promise<RoundResult> {
    const round = ++this.rounds;
    const promise = this.round(round, trigger).then(
      (result) => {
        this.current = undefined;
        this.deps.emitter?.emit('health:round-done', result);
        return result;
      },
      (err: unknown) => {
        this.current = undefined;
        const error = err instanceof Error ? err.message : String(err);
        if (!this.stopped) {
          this.metrics.rounds.inc({ outcome: 'failed' });
          this.log.warn('health round failed', { round, trigger, err });
          this.deps.emitter?.emit('health:round-failed', { round, trigger, error });
        }
        throw err;
      },
    );
    this.current = { round, promise };
    return promise;
  }

  private async round(round: number, trigger: RoundTrigger): Promise<RoundResult> {
    const { settings, store } = this.deps;
    const startedAt = this.now();
    const t0 = performance.now();
    this.deps.emitter?.emit('health:round-started', { round, trigger });
    const signal = this.abort.signal;
    const [providers, keyList] = await Promise.all([store.providers(), this.deps.keys.currentSecrets()]);
    const keys = new Map(keyList.map((k) => [k.name, k]));
    const litellmProbe = this.deps.probeLitellm === false ? undefined : probeLitellm(settings.litellmUrl, { timeoutMs: settings.healthTimeoutMs, signal, agents: this.agents, now: this.now });
    const probes = new ProbeClient({ concurrency: settings.healthConcurrency, timeoutMs: settings.healthTimeoutMs, signal, agents: this.agents, now: this.now });
    // A failure of the key probes (the database, say) leaves the providers' health to be stored.
    const keyRound = (this.deps.keyProber?.round(probes, keys) ?? Promise.resolve([])).catch((err: unknown): KeyResult[] => {
      if (!signal.aborted) this.log.warn('key probes failed', { round, err });
      return [];
    });
    const probed = await mapLimit(providers, settings.healthConcurrency, (row) => this.probe(row, keys, probes));
    const [litellmObs, keyResults] = await Promise.all([litellmProbe, keyRound]);
    if (signal.aborted) throw new Error('the prober stopped during the round; its results were not stored');

    const thresholds = { fail: settings.healthFailThreshold, recover: settings.healthRecoverThreshold };
    const updates = probed.map((p) => this.providerUpdate(p, thresholds));
    const litellmUpdate = litellmObs ? await this.litellmUpdate(litellmObs, thresholds) : undefined;
    await store.saveRound(updates, litellmUpdate?.row, new Date(this.now().getTime() - settings.healthRetentionMs));

    const results = updates.map((u, i): ProviderResult => {
      const p = probed[i]!;
      return {
        slug: u.slug,
        kind: p.row.kind,
        status: u.status,
        reason: u.reason,
        previous_status: p.row.health_status,
        changed: u.changed,
        observed: { status: u.observed_status, reason: u.observed_reason },
        latency_ms: u.latency_ms,
        http_status: u.http_status,
        detail: u.detail,
        checked_at: u.checked_at.toISOString(),
        key: { name: u.key_name, version: u.key_version, fingerprint: u.key_fingerprint },
      };
    });
    const litellm = litellmUpdate && litellmObs ? this.litellmResult(litellmUpdate, litellmObs) : null;
    const finishedAt = this.now();
    const result: RoundResult = {
      round,
      trigger,
      started_at: startedAt.toISOString(),
      finished_at: finishedAt.toISOString(),
      duration_ms: Math.round(performance.now() - t0),
      providers: results,
      keys: keyResults,
      litellm,
    };
    this.report(result, keyList);
    return result;
  }

  private async probe(row: ProviderHealthRow, keys: Map<string, { version: number; value: string; fingerprint: string }>, probes: ProbeClient): Promise<Probed> {
    if (!row.enabled) return { row, obs: unprobed('disabled', 'the provider is disabled', this.now()), key: undefined, probed: false };
    // The key goes only where an admin approved it; the prober is no way around that.
    if (!row.approved) {
      return { row, obs: unprobed('not_approved', `sending ${row.key_name} to this provider's api_base is not approved by an admin`, this.now()), key: undefined, probed: false };
    }
    const key = keys.get(row.key_name);
    if (!key) return { row, obs: unprobed('no_key', `no platform key named ${row.key_name}`, this.now()), key: undefined, probed: false };
    const answer = await probes.send({ kind: row.kind, apiBase: row.api_base, keyName: row.key_name, version: key.version, apiKey: key.value });
    const obs = observe(answer, row.degraded_ms, key.value, this.now());
    return { row, obs, key: { version: key.version, fingerprint: key.fingerprint }, probed: obs.reason !== 'unsupported' };
  }

  private providerUpdate(p: Probed, t: { fail: number; recover: number }): ProviderHealthUpdate {
    const { row, obs, key } = p;
    // A result about another key than last time says nothing about the new one: start afresh.
    const keyChanged = key !== undefined && row.health_key_fingerprint !== null && row.health_key_fingerprint !== key.fingerprint;
    const prev = keyChanged
      ? { status: 'unknown' as const, reason: row.health_reason, okStreak: 0, failStreak: 0 }
      : { status: row.health_status, reason: row.health_reason, okStreak: row.health_ok_streak, failStreak: row.health_fail_streak };
    const next = nextState(prev, obs, t);
    return {
      slug: row.slug,
      status: next.status,
      reason: next.reason as HealthReason,
      observed_status: obs.status,
      observed_reason: obs.reason,
      latency_ms: obs.latencyMs,
      http_status: obs.httpStatus,
      detail: obs.detail,
      checked_at: obs.checkedAt,
      changed: next.status !== row.health_status,
      ok_streak: next.okStreak,
      fail_streak: next.failStreak,
      key_name: row.key_name,
      key_version: key?.version ?? null,
      key_fingerprint: key?.fingerprint ?? null,
      probed: p.probed,
    };
  }

  private async litellmUpdate(obs: LitellmObservation, t: { fail: number; recover: number }): Promise<{ row: LitellmHealthRow; previous: HealthStatus }> {
    const prevRow = await this.deps.store.litellm(this.litellmUrl);
    const prev = prevRow
      ? { status: prevRow.status, reason: prevRow.reason, okStreak: prevRow.ok_streak, failStreak: prevRow.fail_streak }
      : { status: 'unknown' as const, reason: 'never_checked', okStreak: 0, failStreak: 0 };
    const next = nextState(prev, obs, t);
    const row: LitellmHealthRow = {
      url: this.litellmUrl,
      status: next.status,
      reason: next.reason,
      observed_status: obs.status,
      observed_reason: obs.reason,
      latency_ms: obs.latencyMs,
      http_status: obs.httpStatus,
      detail: obs.detail,
      litellm_version: obs.version,
      checked_at: obs.checkedAt,
      changed_at: prevRow && !next.changed ? prevRow.changed_at : obs.checkedAt,
      ok_streak: next.okStreak,
      fail_streak: next.failStreak,
    };
    return { row, previous: prev.status };
  }

  private litellmResult({ row, previous }: { row: LitellmHealthRow; previous: HealthStatus }, obs: LitellmObservation): LitellmResult {
    return {
      url: row.url,
      status: row.status,
      reason: row.reason,
      previous_status: previous,
      changed: row.status !== previous,
      observed: { status: obs.status, reason: obs.reason },
      latency_ms: row.latency_ms,
      http_status: row.http_status,
      detail: obs.detail,
      version: obs.version,
      checked_at: obs.checkedAt.toISOString(),
    };
  }

  /** Metrics, events, logs and alerts for a stored round. */
  private report(result: RoundResult, keys: Array<{ name: string; version: number; expires_at: Date | null }>): void {
    const { metrics, log } = this;
    const emitter = this.deps.emitter;
    metrics.status.reset();
    for (const r of result.providers) {
      for (const s of HEALTH_STATUSES) metrics.status.set({ provider: r.slug, status: s }, s === r.status ? 1 : 0);
      if (r.latency_ms !== null) metrics.latency.observe({ provider: r.slug }, r.latency_ms / 1000);
      emitter?.emit('probe:result', r);
      if (r.changed) this.transition('provider', r.slug, r.previous_status, r);
    }
    if (result.litellm) {
      for (const s of HEALTH_STATUSES) metrics.litellmStatus.set({ status: s }, s === result.litellm.status ? 1 : 0);
      if (result.litellm.changed) this.transition('litellm', result.litellm.url, result.litellm.previous_status, result.litellm);
    }
    this.reportExpiry(keys);
    metrics.rounds.inc({ outcome: 'done' });
    metrics.roundDuration.set(result.duration_ms / 1000);
    const count = (s: HealthStatus): number => result.providers.filter((r) => r.status === s).length;
    log.info('health round done', {
      round: result.round,
      trigger: result.trigger,
      duration_ms: result.duration_ms,
      healthy: count('healthy'),
      degraded: count('degraded'),
      down: count('down'),
      unknown: count('unknown'),
      keys: result.keys.length,
      keys_changed: result.keys.filter((k) => k.changed).length,
      litellm: result.litellm?.status ?? 'not probed',
    });
  }

  private transition(subject: 'provider' | 'litellm', name: string, from: HealthStatus, r: ProviderResult | LitellmResult): void {
    const fields = { [subject]: name, from, to: r.status, reason: r.reason, detail: r.detail, http_status: r.http_status, latency_ms: r.latency_ms };
    const message = `${subject} ${name} is ${r.status} (${r.reason})`;
    // The first good result of something never checked is no news.
    const news = !(from === 'unknown' && r.status === 'healthy');
    // A bad key needs a person; an outage usually heals itself.
    if (r.status === 'down' && r.reason === 'auth_failed') this.log.error(message, fields);
    else if (r.status === 'down' || r.status === 'degraded') this.log.warn(message, fields);
    else if (news) this.log.info(message, fields);
    else this.log.debug(message, fields);
    this.deps.emitter?.emit('health:transition', { subject, name, from, to: r.status, reason: r.reason });
    if (!news) return;
    const key = 'key' in r ? { key_name: r.key.name, key_version: r.key.version } : {};
    this.alert({ type: subject === 'provider' ? 'provider.status_changed' : 'litellm.status_changed', ...fields, ...key });
  }

  private reportExpiry(keys: Array<{ name: string; version: number; expires_at: Date | null }>): void {
    const now = this.now().getTime();
    let expiringCount = 0;
    let earliest = Infinity;
    for (const k of keys) {
      const expiresAt = k.expires_at?.getTime();
      const expiring = expiresAt !== undefined && expiresAt - now < EXPIRING_WITHIN_MS;
      if (expiring) expiringCount++;
      if (expiresAt === undefined) continue;
      earliest = Math.min(earliest, Math.floor(expiresAt / 1000));
      const id = `${k.name}@${k.version}`;
      if (!expiring || this.expiryAlerted.has(id)) continue;
      this.expiryAlerted.add(id);
      const daysLeft = Math.floor((expiresAt - now) / 86_400_000);
      this.log.warn(`platform key ${k.name} ${daysLeft < 0 ? 'has expired' : `expires in ${daysLeft} days`}`, { key_name: k.name, version: k.version, expires_at: k.expires_at });
      this.alert({ type: 'key.expiring', key_name: k.name, key_version: k.version, expires_at: k.expires_at!.toISOString(), days_left: daysLeft });
    }
    this.metrics.keysExpiring.set(expiringCount);
    this.metrics.earliestExpiry.set(earliest);
  }

  private alert(event: Omit<AlertEvent, 'at' | 'instance'>): void {
    const alerter = this.deps.alerter;
    if (!alerter) return;
    const p: Promise<void> = alerter
      .send(event)
      .catch((err: unknown) => {
        this.log.warn('alert not sent', { type: event.type, err });
      })
      .finally(() => this.pendingAlerts.delete(p));
    this.pendingAlerts.add(p);
  }
}
