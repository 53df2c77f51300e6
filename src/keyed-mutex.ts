/**
 * FIFO mutual exclusion per key, inside one process. Writers of one platform key queue here, in
 * order, instead of all waiting on the same Postgres row lock (whose waiters wake together and
 * race, which makes the slowest wait long). The row lock still guards against other instances.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
