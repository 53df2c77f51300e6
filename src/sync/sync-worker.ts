import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { SyncTaskName, SyncTasks } from './sync-tasks';

type Input<K extends SyncTaskName> = Parameters<SyncTasks[K]>[0];
type Output<K extends SyncTaskName> = ReturnType<SyncTasks[K]>;

interface Waiting {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class SyncWorkerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SyncWorkerError';
  }
}

/**
 * Starts the worker thread from the same kind of file this module was loaded from: compiled
 * JavaScript (`node dist/...`) runs directly; TypeScript (tsx, ts-jest) first registers tsx in the
 * worker, as bin/keyplane.js does for the process.
 */
function spawn(): Worker {
  const entry = path.join(__dirname, `sync-worker-entry${path.extname(__filename)}`);
  if (entry.endsWith('.js')) return new Worker(entry);
  const tsx = require.resolve('tsx/cjs');
  return new Worker(`require(${JSON.stringify(tsx)}); require(${JSON.stringify(entry)});`, { eval: true });
}

/**
 * One worker thread for the sync stage's heavy, pure tasks (sync-tasks.ts), started on first use
 * and again after it died. Tasks run one after another in the thread. A task that runs past
 * `timeoutMs` ends the thread (it cannot be interrupted otherwise) and fails.
 */
export class SyncWorker {
  private worker: Worker | undefined;
  private readonly waiting = new Map<number, Waiting>();
  private nextId = 1;

  constructor(private readonly opts: { timeoutMs?: number } = {}) {}

  /** Starts the thread ahead of the first task (it takes a moment to load). */
  warm(): void {
    this.thread();
  }

  run<K extends SyncTaskName>(task: K, input: Input<K>): Promise<Output<K>> {
    const worker = this.thread();
    const id = this.nextId++;
    return new Promise<Output<K>>((resolve, reject) => {
      const timeoutMs = this.opts.timeoutMs ?? 120_000;
      const timer = setTimeout(() => this.fail(worker, new SyncWorkerError(`the sync worker's ${task} task ran past ${timeoutMs} ms`)), timeoutMs);
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      // Only while a task is out does the thread keep the process alive.
      worker.ref();
      worker.postMessage({ id, task, input });
    });
  }

  async stop(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    if (!worker) return;
    this.rejectAll(new SyncWorkerError('the sync worker stopped'));
    await worker.terminate();
  }

  private thread(): Worker {
    if (this.worker) return this.worker;
    const worker = spawn();
    worker.unref();
    worker.on('message', (msg: { id: number; ok: boolean; value?: unknown; error?: { name: string; message: string } }) => {
      const w = this.waiting.get(msg.id);
      if (!w) return;
      this.waiting.delete(msg.id);
      clearTimeout(w.timer);
      if (this.waiting.size === 0) worker.unref();
      if (msg.ok) w.resolve(msg.value);
      else w.reject(new SyncWorkerError(`${msg.error?.name ?? 'Error'}: ${msg.error?.message ?? 'unknown'}`));
    });
    worker.on('error', (err) => this.fail(worker, new SyncWorkerError(`the sync worker failed: ${err.message}`)));
    worker.on('exit', (code) => this.fail(worker, new SyncWorkerError(`the sync worker exited with code ${code}`)));
    this.worker = worker;
    return worker;
  }

  /** The thread is unusable: every task in it fails, and the next task starts a new one. */
  private fail(worker: Worker, err: Error): void {
    if (worker !== this.worker) return;
    this.worker = undefined;
    this.rejectAll(err);
    void worker.terminate();
  }

  private rejectAll(err: Error): void {
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiting.clear();
  }
}
