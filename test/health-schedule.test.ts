import client from 'prom-client';
import type { Prober } from '../src/health/prober';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { HealthEnv } from './helpers/health-env';

const KEY = 'sk-sched-0123456789abcdef0000';

describe('prober schedule (fake timers)', () => {
  let db: TestDatabase;
  let fake: FakeProvider;
  let env: HealthEnv;
  let prober: Prober | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    fake = await startFakeProvider();
  });
  beforeEach(async () => {
    env = new HealthEnv(db.pool);
    await env.reset();
    fake.reset();
    await env.addProvider('sched', { apiBase: fake.base('sched') });
    await env.putKey('sched', KEY);
    // Only timers and the clock are fake: I/O (Postgres, HTTP) must keep running.
    jest.useFakeTimers({ doNotFake: ['nextTick', 'setImmediate', 'queueMicrotask', 'performance', 'hrtime'], now: new Date('2030-01-01T00:00:00.000Z') });
  });
  afterEach(async () => {
    jest.useRealTimers();
    await prober?.stop();
    prober = undefined;
  });
  afterAll(async () => {
    await fake.close();
    await db.drop();
  });

  it('runs the first round after a random delay, then on the cron schedule', async () => {
    const registry = new client.Registry();
    prober = env.prober({ registry, probeLitellm: false, firstRunDelayMaxMs: 20_000, random: () => 0.25, settings: { healthSchedule: '*/30 * * * * *' } });
    prober.start();
    prober.start();
    await jest.advanceTimersByTimeAsync(4_999);
    expect(fake.requestsFor('sched')).toHaveLength(0);
    await jest.advanceTimersByTimeAsync(1);
    const first = await env.emitter.waitFor('health:round-done');
    expect(first.trigger).toBe('first');
    await jest.advanceTimersByTimeAsync(25_000);
    const second = await env.emitter.waitFor('health:round-done');
    expect(second.trigger).toBe('schedule');
    expect(fake.requestsFor('sched')).toHaveLength(2);
    expect(env.logs()).toContain('prober started');
  });

  it('a round still running when the next is due makes the next one skip, logged; it never overlaps', async () => {
    fake.setMode('sched', 'hold');
    const registry = new client.Registry();
    prober = env.prober({ registry, probeLitellm: false, firstRunDelayMaxMs: 1000, random: () => 0.5, settings: { healthSchedule: '*/10 * * * * *' } });
    prober.start();
    await jest.advanceTimersByTimeAsync(500);
    await fake.waitForRequests('sched', 1);
    expect(prober.running).toBe(true);

    // Two schedule ticks pass while the first round is held.
    await jest.advanceTimersByTimeAsync(10_000);
    await jest.advanceTimersByTimeAsync(10_000);
    const skipped = env.events.filter((e) => e.name === 'health:round-skipped');
    expect(skipped).toEqual([
      { name: 'health:round-skipped', payload: { trigger: 'schedule', running_round: 1 } },
      { name: 'health:round-skipped', payload: { trigger: 'schedule', running_round: 1 } },
    ]);
    expect(fake.requestsFor('sched')).toHaveLength(1);
    expect(env.logs()).toContain('health round skipped: the previous round is still running');

    fake.setMode('sched', 'ok');
    const done = env.emitter.waitFor('health:round-done');
    fake.release();
    expect((await done).round).toBe(1);
    expect(prober.running).toBe(false);

    await jest.advanceTimersByTimeAsync(10_000);
    const next = await env.emitter.waitFor('health:round-done');
    expect(next).toMatchObject({ round: 2, trigger: 'schedule' });
    expect(fake.requestsFor('sched')).toHaveLength(2);
    expect(env.events.filter((e) => e.name === 'health:round-started')).toHaveLength(2);
    expect(await registry.metrics()).toContain('keyplane_health_rounds_total{outcome="skipped"} 2');
  });

  it('scheduled rounds run only where shouldRun() allows (one prober per shared database)', async () => {
    let leader = false;
    prober = env.prober({ probeLitellm: false, firstRunDelayMaxMs: 0, shouldRun: () => leader, settings: { healthSchedule: '*/10 * * * * *' } });
    prober.start();
    await jest.advanceTimersByTimeAsync(20_000);
    expect(fake.requestsFor('sched')).toHaveLength(0);
    leader = true;
    await jest.advanceTimersByTimeAsync(10_000);
    await env.emitter.waitFor('health:round-done');
    expect(fake.requestsFor('sched')).toHaveLength(1);
  });
});
