import { setMaxListeners } from 'node:events';
import client from 'prom-client';
import type { Alerter, AlertEvent } from '../alerts/alerter';
import type { Pool } from '../db/pool';
import { withTransaction } from '../db/pool';
import type { SafeEmitter } from '../events';
import type { KeyStatesService, Transition } from '../features/key-pools/key-states';
import type { Logger } from '../log';
import type { KeyState } from '../sync/desired-state';
import { combineFindings, keyFinding, unsent, type Credit, type KeyFinding, type KeyOutcome } from './key-findings';
import type { KeyHealthRow, KeyHealthStore, PoolPair } from './key-health-store';
import { decideKey, type KeyDecision, type KeyNow, type KeyPolicy } from './key-policy';
import { ProbeClient } from './probe-client';
import { createProbeAgents, type ProbeAgents } from './probes';

/** One key after a probe (of every pool pair it is in), as the round's result and events show it. */
export interface KeyResult {
  name: string;
  providers: string[];
  outcome: KeyOutcome;
  endpoint: string | null;
  http_status: number | null;
  detail: string;
  checked_at: string;
  previous_state: KeyState;
  state: KeyState;
  state_reason: string | null;
  changed: boolean;
  credit: Credit | null;
}

export type KeyProbeTrigger = 'round' | 'recheck';

/** `key:result` comes once the results are stored (a state change committed before, as soon as the key's probes were in). */
export interface KeyProbeEvents {
  'key:result': KeyResult & { trigger: KeyProbeTrigger };
  'key:recheck-done': { keys: string[] };
}

/** A key's current value, as the prober reads them (PlatformKeysService.currentSecrets). */
export type Secrets = Map<string, { value: string; version: number }>;

export interface KeyProberDeps {
  pool: Pool;
  store: KeyHealthStore;
  states: Pick<KeyStatesService, 'transition' | 'announce'>;
  keys: { currentSecrets(): Promise<Array<{ name: string; version: number; value: string }>> };
  log: Logger;
  policy: KeyPolicy;
  /** Per probe (KEYPLANE_HEALTH_TIMEOUT) and at once (KEYPLANE_HEALTH_CONCURRENCY), for rechecks between rounds. */
  timeoutMs: number;
  concurrency: number;
  registry: client.Registry;
  alerter?: Alerter;
  emitter?: SafeEmitter<KeyProbeEvents>;
  /** Rechecks run only where this is true (the sync leader), like the rounds. */
  shouldRun?: () => boolean;
  now?: () => Date;
}

const ACTOR = { actor: 'prober' };

/**
 * Probes every key of every pool, at the provider that uses it, and moves the key's state by what
 * the probe proves (key-policy.ts): in each health round (Prober calls `round`), and between rounds
 * for keys it disabled, which are probed again on their own schedule until they pass (`start`).
 * A state change commits as soon as the key's probes are in, so its render starts at once.
 */
export class KeyProber {
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly probes: client.Counter<'provider' | 'outcome'>;
  private readonly abort = new AbortController();
  private readonly agents: ProbeAgents = createProbeAgents();
  private readonly pendingAlerts = new Set<Promise<void>>();
  /** Rounds and rechecks take turns: streaks are read, advanced and written by one at a time. */
  private turn: Promise<unknown> = Promise.resolve();
  /**
   * State changes commit one at a time: each counts the keys its pools still have in service, and two
   * keys of one pool changed side by side would each see the other still in service (no
   * `provider.no_keys` when both go).
   */
  private changes: Promise<unknown> = Promise.resolve();
  private timer?: NodeJS.Timeout;
  private ticking = false;
  private nudged = false;
  private started = false;
  private stopped = false;

  constructor(private readonly deps: KeyProberDeps) {
    setMaxListeners(0, this.abort.signal);
    this.log = deps.log.child({ component: 'key-prober' });
    this.now = deps.now ?? (() => new Date());
    this.probes = new client.Counter({
      name: 'keyplane_key_probes_total',
      help: 'Key probes by provider and outcome (ok, auth_failed, quota_exhausted, rate_limited, error, not_approved, no_probe)',
      labelNames: ['provider', 'outcome'],
      registers: [deps.registry],
    });
  }

  /** Starts the rechecks of disabled keys; the first runs at once (a restart resumes the schedule in the database). */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    this.schedule(0);
  }

  /** A key got a new version: an automatically disabled one is probed now rather than at its next time. */
  nudge(): void {
    if (!this.started || this.stopped) return;
    if (this.ticking) this.nudged = true;
    else this.schedule(0);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.abort.abort();
    await this.turn.catch(() => undefined);
    this.agents.http.destroy();
    this.agents.https.destroy();
    await Promise.all([...this.pendingAlerts]);
  }

  /** Every pool key, through the round's requests (shared with the provider probes). */
  round(probes: ProbeClient, secrets: Secrets): Promise<KeyResult[]> {
    return this.inTurn(() => this.probeKeys('round', undefined, probes, secrets));
  }

  private inTurn<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  private schedule(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.timer = undefined;
    this.ticking = true;
    let wait = this.deps.policy.recheck.minMs;
    try {
      if (!this.deps.shouldRun || this.deps.shouldRun()) wait = await this.inTurn(() => this.recheckDue());
    } catch (err) {
      if (!this.stopped) this.log.warn('key recheck failed', { err });
    } finally {
      this.ticking = false;
    }
    if (this.stopped) return;
    if (this.nudged) wait = 0;
    this.nudged = false;
    this.schedule(wait);
  }

  /** Probes the disabled keys that are due; returns how long until the next look (at most the shortest interval, so writes made elsewhere are seen). */
  private async recheckDue(): Promise<number> {
    const { minMs } = this.deps.policy.recheck;
    const due = await this.deps.store.due(this.now());
    if (due.names.length) {
      const secrets: Secrets = new Map((await this.deps.keys.currentSecrets()).map((s) => [s.name, s]));
      const probes = new ProbeClient({ concurrency: this.deps.concurrency, timeoutMs: this.deps.timeoutMs, signal: this.abort.signal, agents: this.agents, now: this.now });
      await this.probeKeys('recheck', due.names, probes, secrets);
      this.deps.emitter?.emit('key:recheck-done', { keys: due.names });
      return minMs;
    }
    return due.nextAt ? Math.max(0, Math.min(due.nextAt.getTime() - this.now().getTime(), minMs)) : minMs;
  }

  private async probeKeys(trigger: KeyProbeTrigger, names: string[] | undefined, probes: ProbeClient, secrets: Secrets): Promise<KeyResult[]> {
    const [pairs, health] = await Promise.all([this.deps.store.pairs(names), this.deps.store.health(names)]);
    const byKey = new Map<string, PoolPair[]>();
    for (const p of pairs) {
      const list = byKey.get(p.name);
      if (list) list.push(p);
      else byKey.set(p.name, [p]);
    }
    const decided = await Promise.all([...byKey].map(([name, ps]) => this.probeKey(name, ps, health.get(name), secrets.get(name), probes)));
    if (probes.signal.aborted) throw new Error('the prober stopped during the key probes; their results were not stored');
    await this.deps.store.save(decided.map((d) => d.decision.health));
    for (const d of decided) {
      if (d.decision.credit) this.creditAlert(d);
      this.deps.emitter?.emit('key:result', { ...d.result, trigger });
    }
    return decided.map((d) => d.result);
  }

  private async probeKey(name: string, pairs: PoolPair[], prev: KeyHealthRow | undefined, secret: { value: string; version: number } | undefined, probes: ProbeClient) {
    const findings = await Promise.all(pairs.map((p) => this.findingFor(p, secret, probes)));
    pairs.forEach((p, i) => this.probes.inc({ provider: p.provider, outcome: findings[i]!.outcome }));
    const finding = combineFindings(findings);
    const first = pairs[0]!;
    const before: KeyNow = { state: first.state, state_reason: first.state_reason, state_until: first.state_until, current_version: secret?.version ?? first.current_version };
    let decision = decideKey(name, before, prev, finding, this.deps.policy, this.now());
    // The state the key was in when the change was decided (re-read under its lock).
    let current = before;
    if (decision.change && !probes.signal.aborted) ({ decision, current } = await this.apply(name, before, prev, finding, decision));
    const result: KeyResult = {
      name,
      providers: pairs.map((p) => p.provider),
      outcome: finding.outcome,
      endpoint: finding.endpoint,
      http_status: finding.httpStatus,
      detail: finding.detail,
      checked_at: finding.checkedAt.toISOString(),
      previous_state: before.state,
      state: decision.change?.state ?? current.state,
      state_reason: decision.change ? decision.change.reason : current.state_reason,
      changed: decision.change !== undefined,
      credit: finding.credit,
    };
    return { result, decision };
  }

  private async findingFor(p: PoolPair, secret: { value: string; version: number } | undefined, probes: ProbeClient): Promise<KeyFinding> {
    const now = this.now();
    if (!p.enabled) return unsent('no_probe', `provider ${p.provider} is switched off`, now);
    // The key goes only where an admin approved it; the prober is no way around that.
    if (!p.approved) return unsent('not_approved', `sending ${p.name} to ${p.provider}'s api_base is not approved by an admin`, now);
    if (!secret) return unsent('no_probe', `${p.name} has no current value`, now);
    // Kinds that take no key (a local Ollama) have nothing to prove.
    if (p.kind === 'ollama') return unsent('no_probe', `a ${p.kind} provider takes no key`, now);
    const answer = await probes.send({ kind: p.kind, apiBase: p.api_base, keyName: p.name, version: secret.version, apiKey: secret.value });
    return keyFinding(answer, secret.value, now);
  }

  /**
   * Decides again under the key's row lock (an operator may have moved it meanwhile) and commits the
   * change; alerts after the commit. A finding about a version that is no longer current moves nothing.
   */
  private async apply(name: string, before: KeyNow, prev: KeyHealthRow | undefined, finding: KeyFinding, early: KeyDecision): Promise<{ decision: KeyDecision; current: KeyNow }> {
    const { change: _, ...unchanged } = early;
    try {
      const commit = (): Promise<{ decision: KeyDecision; current: KeyNow; t: Transition | undefined } | undefined> => withTransaction(this.deps.pool, async (c) => {
        const cur = (await c.query<KeyNow>('SELECT state, state_reason, state_until, current_version FROM platform_keys WHERE name = $1 FOR UPDATE', [name])).rows[0];
        if (!cur || cur.current_version !== before.current_version) return undefined;
        const decision = decideKey(name, cur, prev, finding, this.deps.policy, this.now());
        const t: Transition | undefined = decision.change ? await this.deps.states.transition(c, name, decision.change, ACTOR) : undefined;
        return { decision, current: cur, t };
      });
      const run = this.changes.then(commit, commit);
      this.changes = run.catch(() => undefined);
      const out = await run;
      if (!out) return { decision: unchanged, current: before };
      // A slow webhook must not hold the round up; stop() waits for it.
      this.track(this.deps.states.announce(out.t));
      return { decision: out.decision, current: out.current };
    } catch (err) {
      this.log.warn('could not change the state of a key after its probe; the next probe tries again', { key_name: name, err });
      return { decision: unchanged, current: before };
    }
  }

  private creditAlert(d: { result: KeyResult; decision: KeyDecision }): void {
    const h = d.decision.health;
    const fields = { key_name: d.result.name, providers: d.result.providers, limit: h.credit_limit, usage: h.credit_usage, remaining: h.credit_remaining, threshold: this.deps.policy.creditAlert };
    if (d.decision.credit === 'rearmed') {
      this.log.info(`platform key ${d.result.name} has credit again`, fields);
      return;
    }
    this.log.warn(`platform key ${d.result.name} is low on credit: ${h.credit_remaining} of ${h.credit_limit} left`, fields);
    this.alert({ type: 'key.credit_low', ...fields });
  }

  private alert(event: Omit<AlertEvent, 'at' | 'instance'>): void {
    const alerter = this.deps.alerter;
    if (!alerter) return;
    this.track(
      alerter.send(event).catch((err: unknown) => {
        this.log.warn('alert not sent', { type: event.type, err });
      }),
    );
  }

  private track(alert: Promise<void>): void {
    const p = alert.finally(() => this.pendingAlerts.delete(p));
    this.pendingAlerts.add(p);
  }
}
