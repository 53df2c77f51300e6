/** The Models and routing page's view of deployments, aliases and fallbacks. */

export interface Deployment {
  id: string;
  model_name: string;
  provider: string;
  model: string;
  api_base?: string | null;
  rpm?: number | null;
  tpm?: number | null;
}

export interface ModelGroup {
  modelName: string;
  deployments: Deployment[];
}

/** Deployments by model name (LiteLLM balances the deployments of one name), names in order. */
export function groupDeployments(items: Deployment[]): ModelGroup[] {
  const by = new Map<string, Deployment[]>();
  for (const d of items) by.set(d.model_name, [...(by.get(d.model_name) ?? []), d]);
  return [...by.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([modelName, deployments]) => ({ modelName, deployments: [...deployments].sort((a, b) => (a.provider < b.provider ? -1 : a.provider > b.provider ? 1 : 0)) }));
}

export interface RouteLine {
  from: string;
  to: string[];
  /** Targets no deployment serves (an alias or fallback that leads nowhere). */
  missing: string[];
}

export function routingLines(routing: { aliases?: Record<string, string>; fallbacks?: Record<string, string[]> }, modelNames: Set<string>): { aliases: RouteLine[]; fallbacks: RouteLine[] } {
  const line = (from: string, to: string[]): RouteLine => ({ from, to, missing: to.filter((t) => !modelNames.has(t)) });
  const sorted = <T>(o: Record<string, T> | undefined): Array<[string, T]> => Object.entries(o ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
  return {
    aliases: sorted(routing.aliases).map(([from, to]) => line(from, [to])),
    fallbacks: sorted(routing.fallbacks).map(([from, to]) => line(from, to)),
  };
}
