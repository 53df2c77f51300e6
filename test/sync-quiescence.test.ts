import { Quiescence, type Burst } from '../src/sync/quiescence';

describe('quiescence (min:max wait)', () => {
  beforeEach(() => jest.useFakeTimers({ now: 1_000_000 }));
  afterEach(() => jest.useRealTimers());

  function setup(minMs: number, maxMs: number): { q: Quiescence; fired: Array<Burst & { at: number }> } {
    const fired: Array<Burst & { at: number }> = [];
    const q = new Quiescence({ minMs, maxMs }, (b) => fired.push({ ...b, at: Date.now() }));
    return { q, fired };
  }

  it('fires once, min after the last nudge of a burst', () => {
    const { q, fired } = setup(50, 500);
    q.nudge();
    jest.advanceTimersByTime(30);
    q.nudge();
    jest.advanceTimersByTime(30);
    q.nudge();
    expect(q.pending).toEqual({ count: 3, since: 1_000_000 });
    jest.advanceTimersByTime(49);
    expect(fired).toHaveLength(0);
    jest.advanceTimersByTime(1);
    expect(fired).toEqual([{ count: 3, firstAt: 1_000_000, at: 1_000_110 }]);
    expect(q.pending).toEqual({ count: 0, since: null });
  });

  it('never fires later than max after the first nudge, however long the burst lasts', () => {
    const { q, fired } = setup(50, 200);
    for (let t = 0; t < 1000; t += 10) {
      q.nudge();
      jest.advanceTimersByTime(10);
    }
    jest.advanceTimersByTime(100);
    expect(fired.map((f) => f.at - 1_000_000)).toEqual([200, 400, 600, 800, 1000]);
    expect(fired.reduce((n, f) => n + f.count, 0)).toBe(100);
  });

  it('with min 0 fires on the next turn, folding nudges that arrive together', () => {
    const { q, fired } = setup(0, 0);
    q.nudge();
    q.nudge();
    q.nudge();
    expect(fired).toHaveLength(0);
    jest.advanceTimersByTime(0);
    expect(fired).toEqual([{ count: 3, firstAt: 1_000_000, at: 1_000_000 }]);
    q.nudge();
    jest.advanceTimersByTime(0);
    expect(fired).toHaveLength(2);
  });

  it('cancel drops what is pending', () => {
    const { q, fired } = setup(50, 500);
    q.nudge();
    q.cancel();
    jest.advanceTimersByTime(1000);
    expect(fired).toHaveLength(0);
  });
});
