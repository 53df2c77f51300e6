import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { WebhookAlerter } from '../src/alerts/webhook';
import { createLogger, SecretRegistry } from '../src/log';
import { closedPort } from './helpers/fake-provider';
import { startReceiver } from './helpers/health-env';

function capture(): { log: ReturnType<typeof createLogger>; logs: () => string } {
  let out = '';
  const stream = new PassThrough();
  stream.on('data', (c: Buffer) => (out += c.toString('utf8')));
  return { log: createLogger({ secrets: new SecretRegistry(), stream, json: true }), logs: () => out };
}

const event = { type: 'provider.status_changed' as const, provider: 'openai', from: 'healthy', to: 'down', reason: 'server_error' };

describe('WebhookAlerter', () => {
  it('posts the event as JSON with its time and instance', async () => {
    const rx = await startReceiver();
    try {
      const { log } = capture();
      const alerter = new WebhookAlerter({ url: rx.url, instance: 'kp-a', log, secrets: new SecretRegistry(), now: () => new Date('2030-01-02T03:04:05.000Z') });
      await alerter.send(event);
      expect(rx.bodies).toEqual([{ ...event, at: '2030-01-02T03:04:05.000Z', instance: 'kp-a' }]);
    } finally {
      await rx.close();
    }
  });

  it('retries a 5xx with backoff and then delivers', async () => {
    const rx = await startReceiver({ failFirst: 2 });
    try {
      const { log, logs } = capture();
      const alerter = new WebhookAlerter({ url: rx.url, instance: 'kp-a', log, secrets: new SecretRegistry(), backoffMs: 5 });
      await alerter.send(event);
      expect(rx.hits()).toBe(3);
      expect(rx.bodies).toHaveLength(1);
      expect(logs()).not.toContain('not delivered');
    } finally {
      await rx.close();
    }
  });

  it('gives up at once on a 4xx, logs it without the URL, and never throws', async () => {
    const rx = await startReceiver({ status: 404 });
    try {
      const { log, logs } = capture();
      const alerter = new WebhookAlerter({ url: rx.url, instance: 'kp-a', log, secrets: new SecretRegistry(), backoffMs: 5 });
      await expect(alerter.send(event)).resolves.toBeUndefined();
      expect(rx.hits()).toBe(1);
      expect(logs()).toContain('alert not delivered to the webhook');
      expect(logs()).toContain('HTTP 404');
      expect(logs()).toContain('"attempts":1');
      expect(logs()).not.toContain('T0KEN-in-the-path');
    } finally {
      await rx.close();
    }
  });

  it('times out a receiver that never answers, retries, then gives up', async () => {
    let hits = 0;
    const server = createServer(() => void hits++);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { log, logs } = capture();
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const alerter = new WebhookAlerter({ url, instance: 'kp-a', log, secrets: new SecretRegistry(), timeoutMs: 150, attempts: 2, backoffMs: 5 });
      await alerter.send(event);
      expect(hits).toBe(2);
      expect(logs()).toContain('no answer within 150 ms');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('an unreachable webhook is retried and logged by error code only', async () => {
    const { log, logs } = capture();
    const url = `http://127.0.0.1:${await closedPort()}/hooks/T0KEN-in-the-path-0123456789`;
    const alerter = new WebhookAlerter({ url, instance: 'kp-a', log, secrets: new SecretRegistry(), attempts: 3, backoffMs: 1 });
    await alerter.send(event);
    expect(logs()).toContain('network error (ECONNREFUSED)');
    expect(logs()).toContain('"attempts":3');
    expect(logs()).not.toContain('T0KEN-in-the-path');
  });

  it('never sends a secret: known values and secret-named fields are masked', async () => {
    const rx = await startReceiver();
    try {
      const { log } = capture();
      const secrets = new SecretRegistry();
      secrets.add('sk-live-should-never-leave-0000');
      const alerter = new WebhookAlerter({ url: rx.url, instance: 'kp-a', log, secrets });
      await alerter.send({ type: 'reload.failed', error: 'exit 1: LITELLM_MASTER_KEY=sk-live-should-never-leave-0000', api_key: 'anything-here', key_name: 'openai' });
      expect(rx.raw[0]).not.toContain('sk-live-should-never-leave-0000');
      expect(rx.bodies[0]).toMatchObject({ error: 'exit 1: LITELLM_MASTER_KEY=[REDACTED]', api_key: '[REDACTED]', key_name: 'openai' });
    } finally {
      await rx.close();
    }
  });

  it('stop() cuts short a retry that is waiting', async () => {
    const rx = await startReceiver({ status: 503 });
    try {
      const { log } = capture();
      const alerter = new WebhookAlerter({ url: rx.url, instance: 'kp-a', log, secrets: new SecretRegistry(), backoffMs: 60_000 });
      const sending = alerter.send(event);
      await rx.waitFor(1);
      const started = Date.now();
      alerter.stop();
      await sending;
      expect(Date.now() - started).toBeLessThan(1000);
      expect(rx.hits()).toBe(1);
    } finally {
      await rx.close();
    }
  });
});
