import client from 'prom-client';
import type { Prober } from '../src/health/prober';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { HealthEnv } from './helpers/health-env';
import { nextEvent, until } from './helpers/wait';

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

  const startedRounds = () => env.events.filter((e) => e.name === 'health:round-started').map((e) => e.payload);

  it('runs the first round after a random delay, then on the cron schedule', async () => {
    const registry = new client.Registry();
    prober = env.prober({ registry, probeLitellm: false, firstRunDelayMaxMs: 20_000, random: () => 0.25, settings: { healthSchedule: '*/30 * * * * *' } });
    prober.start();
    prober.start();
    await jest.advanceTimersByTimeAsync(4_999);
    // round-started is emitted as a round begins; a request could still be on its way.
    expect(startedRounds()).toEqual([]);
    expect(fake.requestsFor('sched')).toHaveLength(0);
    // Listen before advancing: the round may end while the timers are being advanced.
    const first = nextEvent(env.emitter, 'health:round-done');
    await jest.advanceTimersByTimeAsync(1);
    expect((await first).trigger).toBe('first');
    const second = nextEvent(env.emitter, 'health:round-done');
    await jest.advanceTimersByTimeAsync(25_000);
    expect((await second).trigger).toBe('schedule');
    expect(startedRounds()).toEqual([{ round: 1, trigger: 'first' }, { round: 2, trigger: 'schedule' }]);
    expect(fake.requestsFor('sched')).toHaveLength(2);
    expect(env.logs()).toContain('prober started');
  });

  it('a round still running when the next is due makes the next one skip, logged; it never overlaps', async () => {
    fake.setMode('sched', 'hold');
    const registry = new client.Registry();
    prober = env.prober({ registry, probeLitellm: false, firstRunDelayMaxMs: 1000, random: () => 0.5, settings: { healthSchedule: '*/10 * * * * *' } });
    prober.start();
    await jest.advanceTimersByTimeAsync(500);
    await until('the first probe reached the fake provider', () => fake.requestsFor('sched').length === 1);
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
    const done = nextEvent(env.emitter, 'health:round-done');
    fake.release();
    expect((await done).round).toBe(1);
    expect(prober.running).toBe(false);

    const next = nextEvent(env.emitter, 'health:round-done');
    await jest.advanceTimersByTimeAsync(10_000);
    expect(await next).toMatchObject({ round: 2, trigger: 'schedule' });
    expect(fake.requestsFor('sched')).toHaveLength(2);
    expect(env.events.filter((e) => e.name === 'health:round-started')).toHaveLength(2);
    expect(await registry.metrics()).toContain('keyplane_health_rounds_total{outcome="skipped"} 2');
  });

  it('scheduled rounds run only where shouldRun() allows (one prober per shared database)', async () => {
    let leader = false;
    prober = env.prober({ probeLitellm: false, firstRunDelayMaxMs: 0, shouldRun: () => leader, settings: { healthSchedule: '*/10 * * * * *' } });
    prober.start();
    await jest.advanceTimersByTimeAsync(20_000);
    expect(startedRounds()).toEqual([]);
    expect(fake.requestsFor('sched')).toHaveLength(0);
    leader = true;
    const done = nextEvent(env.emitter, 'health:round-done');
    await jest.advanceTimersByTimeAsync(10_000);
    expect(await done).toMatchObject({ round: 1, trigger: 'schedule' });
    expect(fake.requestsFor('sched')).toHaveLength(1);
  });
});
