import { setTimeout as pause } from 'node:timers/promises';
import type { Keyplane } from '../../src/main';
import { TEST_CTX, keyValue } from './sync';

type Services = Pick<Keyplane, 'platformKeys' | 'providers' | 'models'>;

/** Platform keys the churn works on; the seeded providers of the same name use the first four. */
const PROVIDER_KEYS = ['openai', 'anthropic', 'groq', 'openrouter'] as const;
const MODEL_OF: Record<(typeof PROVIDER_KEYS)[number], string> = {
  openai: 'openai/gpt-4o-mini',
  anthropic: 'anthropic/claude-3-5-haiku',
  groq: 'groq/llama-3.1-8b-instant',
  openrouter: 'openrouter/mistralai/mixtral-8x7b',
};
/** A key no provider uses (it is still rendered into litellm.env), and LiteLLM's master key (rotated, never deleted). */
const OTHER_KEYS = ['search-api', 'litellm_master_key'] as const;

export interface ChurnCounts {
  rotate: number;
  deleteKey: number;
  addKey: number;
  createModel: number;
  replaceModel: number;
  deleteModel: number;
  toggleProvider: number;
}

/**
 * Keeps changing what keyplane renders, through the services the admin API uses (straight to the
 * database, independent of any keyplane process): mostly key rotations, sometimes a key deleted
 * and later added again, a deployment created, changed or deleted, a provider switched off or on.
 * Sequential: one change at a time, a few ms apart. Every value it stores is kept in `values`.
 */
export class KeyChurn {
  readonly values: string[] = [];
  readonly counts: ChurnCounts = { rotate: 0, deleteKey: 0, addKey: 0, createModel: 0, replaceModel: 0, deleteModel: 0, toggleProvider: 0 };
  private readonly present = new Set<string>();
  private readonly models: Array<{ id: string; provider: (typeof PROVIDER_KEYS)[number] }> = [];
  private readonly inactive = new Set<string>();
  private loop: Promise<void> | undefined;
  private stopping = false;
  private failure: Error | undefined;
  private n = 0;

  constructor(private readonly kp: Services) {}

  /** Stores every key and one deployment per provider. */
  async seed(): Promise<void> {
    for (const name of [...PROVIDER_KEYS, ...OTHER_KEYS]) await this.putKey(name);
    for (const p of PROVIDER_KEYS) await this.createModel(p);
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** The first change that failed, if any (any failure is a test failure: every change here is valid). */
  get error(): Error | undefined {
    return this.failure;
  }

  /** Finishes the change in flight and stops; throws the first failure. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.loop;
    if (this.failure) throw this.failure;
  }

  /**
   * After stop(): every key stored again, every provider switched on with a deployment (the final
   * state renders deployments of each: the churn's deletes may have left a provider without one), and
   * one more rotation, so that this is a change whatever was rendered last.
   */
  async restoreAll(): Promise<void> {
    await this.putKey(this.pick([...this.present]));
    for (const name of [...PROVIDER_KEYS, OTHER_KEYS[0]]) if (!this.present.has(name)) await this.putKey(name);
    for (const p of PROVIDER_KEYS) if (!this.models.some((m) => m.provider === p)) await this.createModel(p);
    for (const slug of [...this.inactive]) {
      const cur = await this.kp.providers.get(slug);
      await this.kp.providers.put(slug, { kind: cur.kind, active: true }, TEST_CTX);
      this.inactive.delete(slug);
    }
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.step();
      } catch (err) {
        this.failure = err as Error;
        return;
      }
      // Pacing, not waiting for anything: keeps renders and reloads running back to back.
      await pause(3 + Math.random() * 20);
    }
  }

  private pick<T>(items: readonly T[]): T {
    return items[Math.floor(Math.random() * items.length)]!;
  }

  private async step(): Promise<void> {
    const r = Math.random();
    if (r < 0.65) {
      const name = this.pick([...this.present]);
      this.counts.rotate++;
      await this.putKey(name);
    } else if (r < 0.75) {
      // Delete a key, or add one that was deleted back (never the master key: the API refuses that).
      const name = this.pick([...PROVIDER_KEYS, OTHER_KEYS[0]]);
      if (this.present.has(name)) {
        this.counts.deleteKey++;
        this.present.delete(name);
        await this.kp.platformKeys.delete(name, TEST_CTX);
      } else {
        this.counts.addKey++;
        await this.putKey(name);
      }
    } else if (r < 0.9) {
      const m = Math.random();
      if (m < 0.35 || this.models.length < 3) {
        this.counts.createModel++;
        await this.createModel(this.pick(PROVIDER_KEYS));
      } else if (m < 0.7) {
        this.counts.replaceModel++;
        const { id } = this.pick(this.models);
        const cur = await this.kp.models.get(id);
        await this.kp.models.replace(id, { model_name: cur.model_name, provider: cur.provider, model: cur.model, rpm: 1 + Math.floor(Math.random() * 10_000) }, TEST_CTX);
      } else {
        this.counts.deleteModel++;
        const { id } = this.models.splice(Math.floor(Math.random() * this.models.length), 1)[0]!;
        await this.kp.models.delete(id, TEST_CTX);
      }
    } else {
      this.counts.toggleProvider++;
      const slug = this.pick(PROVIDER_KEYS);
      const cur = await this.kp.providers.get(slug);
      await this.kp.providers.put(slug, { kind: cur.kind, active: this.inactive.has(slug) }, TEST_CTX);
      if (this.inactive.has(slug)) this.inactive.delete(slug);
      else this.inactive.add(slug);
    }
  }

  private async putKey(name: string): Promise<void> {
    const value = keyValue(`sk-kill-${name}`);
    this.values.push(value);
    await this.kp.platformKeys.put(name, { api_key: value }, TEST_CTX);
    this.present.add(name);
  }

  private async createModel(provider: (typeof PROVIDER_KEYS)[number]): Promise<void> {
    const created = await this.kp.models.create({ model_name: `kill-${provider}-${++this.n}`, provider, model: MODEL_OF[provider] }, TEST_CTX);
    this.models.push({ id: created.id, provider });
  }
}
