import client from 'prom-client';
import type { KeyState } from '../sync/desired-state';
import type { KeyHealthStore } from './key-health-store';

const STATES: KeyState[] = ['active', 'cooling', 'disabled', 'retiring'];

/**
 * Pool keys by provider and state, and the credit each reports, read from the database at scrape
 * time (so every instance shows the same, not only the one that probes). /metrics is
 * unauthenticated: a key is labelled by its provider and its position in the pool (`slot`), never
 * by name.
 */
export function registerKeyPoolMetrics(registry: client.Registry, store: KeyHealthStore): void {
  const registers = [registry];
  new client.Gauge({
    name: 'keyplane_pool_keys',
    help: 'Keys of each provider pool by state (active, cooling, disabled, retiring)',
    labelNames: ['provider', 'state'],
    registers,
    async collect() {
      const rows = await store.poolStates();
      this.reset();
      for (const provider of new Set(rows.map((r) => r.provider))) {
        for (const state of STATES) this.set({ provider, state }, rows.find((r) => r.provider === provider && r.state === state)?.n ?? 0);
      }
    },
  });
  new client.Gauge({
    name: 'keyplane_key_credit_remaining',
    help: 'Credit left on a pool key, as its provider last reported it (keys with a limit only), by provider and pool slot',
    labelNames: ['provider', 'slot'],
    registers,
    async collect() {
      const rows = await store.credits();
      this.reset();
      for (const r of rows) if (r.remaining !== null) this.set({ provider: r.provider, slot: String(r.slot) }, r.remaining);
    },
  });
  new client.Gauge({
    name: 'keyplane_key_credit_limit',
    help: 'The spending limit of a pool key, as its provider last reported it (keys with a limit only), by provider and pool slot',
    labelNames: ['provider', 'slot'],
    registers,
    async collect() {
      const rows = await store.credits();
      this.reset();
      for (const r of rows) if (r.limit !== null) this.set({ provider: r.provider, slot: String(r.slot) }, r.limit);
    },
  });
}
