import type { PageCtx, PageView } from '../app';
import { problemFrom } from '../api';
import { h, replace } from '../dom';
import { groupDeployments, routingLines, type Deployment, type RouteLine } from '../logic/models';
import { problemBox, table } from '../widgets';

/** The deployments per model name (LiteLLM balances them), the aliases and the fallbacks. Read-only. */
export function modelsPage(root: HTMLElement, ctx: PageCtx): PageView {
  const content = h('div', {});
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Models and routing'), h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => void view.refresh(['manual']) }, 'Refresh'))),
    content,
  );
  const view: PageView = {
    live: false,
    async refresh() {
      try {
        const [models, routing] = await Promise.all([
          ctx.api.all<Deployment>('/api/v1/admin/models'),
          ctx.api.get<{ aliases?: Record<string, string>; fallbacks?: Record<string, string[]> }>('/api/v1/admin/routing'),
        ]);
        const groups = groupDeployments(models);
        const lines = routingLines(routing ?? {}, new Set(groups.map((g) => g.modelName)));
        replace(
          content,
          h(
            'section',
            { 'aria-labelledby': 'deployments-title' },
            h('h2', { id: 'deployments-title' }, 'Deployments by model name'),
            groups.length
              ? groups.map((g) =>
                  h(
                    'div',
                    { class: 'group', 'data-model': g.modelName },
                    h('h3', {}, g.modelName, ' ', h('span', { class: 'muted' }, `${g.deployments.length} deployment${g.deployments.length === 1 ? '' : 's'}`)),
                    table(`Deployments of ${g.modelName}`, [
                      { title: 'Provider', cell: (d) => d.provider },
                      { title: 'Upstream model', cell: (d) => h('code', {}, d.model) },
                      { title: 'API base', cell: (d) => (d.api_base ? h('code', {}, d.api_base) : 'provider default') },
                      { title: 'RPM', cell: (d) => (d.rpm ?? '–'), class: 'num' },
                      { title: 'TPM', cell: (d) => (d.tpm ?? '–'), class: 'num' },
                    ], g.deployments),
                  ),
                )
              : h('p', {}, 'No deployments yet.'),
          ),
          routes('Aliases', 'aliases-title', lines.aliases, 'points to'),
          routes('Fallbacks', 'fallbacks-title', lines.fallbacks, 'falls back to'),
        );
      } catch (err) {
        replace(content, problemBox(problemFrom(err)));
      }
    },
  };
  return view;
}

function routes(title: string, id: string, lines: RouteLine[], verb: string): HTMLElement {
  return h(
    'section',
    { 'aria-labelledby': id },
    h('h2', { id }, title),
    lines.length
      ? h(
          'ul',
          { class: 'plain routes' },
          lines.map((l) =>
            h(
              'li',
              {},
              h('code', {}, l.from),
              ` ${verb} `,
              l.to.map((t, i) => [i ? ', then ' : '', h('code', {}, t)]),
              l.missing.length ? h('span', { class: 'expiry-expiring' }, h('span', { 'aria-hidden': 'true' }, ' ⚠'), ` no deployment serves ${l.missing.join(', ')}`) : null,
            ),
          ),
        )
      : h('p', {}, 'None.'),
  );
}
