import { setTimeout as delay } from 'node:timers/promises';
import { redactValue, type Logger, type SecretRegistry } from '../log';
import type { Alerter, AlertEvent } from './alerter';

export interface WebhookAlerterOptions {
  /** KEYPLANE_ALERT_WEBHOOK. Often a secret itself (Slack-style URLs): it is never logged. */
  url: string;
  /** KEYPLANE_INSTANCE_ID, so a receiver can tell instances apart. */
  instance: string;
  log: Logger;
  /** Known secret values are masked out of every payload, whatever field they hide in. */
  secrets: SecretRegistry;
  timeoutMs?: number;
  /** Tries per alert, the first included. */
  attempts?: number;
  backoffMs?: number;
  now?: () => Date;
  random?: () => number;
}

/**
 * Posts each alert as JSON to a webhook, retrying network errors, timeouts, 408, 429 and 5xx with
 * jittered exponential backoff. A failure is logged, never thrown: an alert must not break the
 * part that raised it.
 */
export class WebhookAlerter implements Alerter {
  private readonly log: Logger;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly now: () => Date;
  private readonly random: () => number;
  private readonly closing = new AbortController();

  constructor(private readonly opts: WebhookAlerterOptions) {
    this.log = opts.log.child({ component: 'alerts' });
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.attempts = Math.max(1, opts.attempts ?? 4);
    this.backoffMs = opts.backoffMs ?? 500;
    this.now = opts.now ?? (() => new Date());
    this.random = opts.random ?? Math.random;
    opts.secrets.pin(opts.url);
  }

  async send(event: Omit<AlertEvent, 'at' | 'instance'>): Promise<void> {
    const payload = redactValue({ ...event, at: this.now().toISOString(), instance: this.opts.instance }, this.opts.secrets);
    const body = JSON.stringify(payload);
    let problem = 'keyplane is stopping';
    let tries = 0;
    while (tries < this.attempts && !this.closing.signal.aborted) {
      tries++;
      const outcome = await this.post(body);
      if (outcome === 'ok') return;
      problem = outcome.problem;
      if (!outcome.retry) break;
      if (tries < this.attempts) await this.wait(this.backoffMs * 2 ** (tries - 1) * (0.5 + this.random()));
    }
    this.log.error('alert not delivered to the webhook', { type: event.type, problem, attempts: tries });
  }

  /** Cancels posts in flight and retries still waiting (for shutdown); later sends are dropped and logged. */
  stop(): void {
    this.closing.abort();
  }

  private async post(body: string): Promise<'ok' | { problem: string; retry: boolean }> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    try {
      const res = await fetch(this.opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'keyplane-alerts' },
        body,
        signal: AbortSignal.any([timeout, this.closing.signal]),
        redirect: 'manual',
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.status >= 200 && res.status <= 299) return 'ok';
      return { problem: `HTTP ${res.status}`, retry: res.status === 408 || res.status === 429 || res.status >= 500 };
    } catch (err) {
      if (this.closing.signal.aborted) return { problem: 'keyplane is stopping', retry: false };
      if (timeout.aborted) return { problem: `no answer within ${this.timeoutMs} ms`, retry: true };
      const code = (err as { cause?: { code?: unknown } }).cause?.code;
      // The error's own message can name the URL; only its code is logged.
      return { problem: `network error (${typeof code === 'string' ? code : 'unknown'})`, retry: true };
    }
  }

  private async wait(ms: number): Promise<void> {
    await delay(ms, undefined, { signal: this.closing.signal }).catch(() => undefined);
  }
}
