import { destinationOf, type Approval } from '../../src/destinations';
import type { DesiredModel, DesiredProvider } from '../../src/sync/desired-state';

/** Approvals for every pair the given providers and models make, as an admin's writes would record them. */
export function approvalsFor(providers: DesiredProvider[], models: Array<Pick<DesiredModel, 'provider' | 'apiBase'>> = []): Approval[] {
  const bySlug = new Map(providers.map((p) => [p.slug, p]));
  const out: Approval[] = providers.map((p) => ({ keyName: p.keyName, destination: destinationOf(p.kind, p.apiBase) }));
  for (const m of models) {
    const p = bySlug.get(m.provider);
    if (p) out.push({ keyName: p.keyName, destination: destinationOf(p.kind, m.apiBase ?? p.apiBase) });
  }
  return out;
}
