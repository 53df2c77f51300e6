import type { PageCtx, PageView } from '../app';
import { problemFrom } from '../api';
import { h, replace } from '../dom';
import { compactJson, relativeTime } from '../logic/format';
import { badge, field, problemBox, table, uid } from '../widgets';

interface AuditRow {
  id: number | string;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  version?: number | null;
  details?: unknown;
}

/** The audit trail: whether its hash chain holds, and the latest entries, filtered by target. Admins only (the API says so). */
export function auditPage(root: HTMLElement, ctx: PageCtx): PageView {
  const chain = h('div', {});
  const list = h('div', {});
  const more = h('div', {});
  const target = h('input', { id: uid('target'), type: 'search', autocomplete: 'off', spellcheck: 'false' });
  const form = h(
    'form',
    { class: 'filter', role: 'search', 'aria-label': 'Filter the audit trail' },
    field('Target', target, 'Exactly as the list shows it, such as platform_key/openrouter; or pick one in the list.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter'), h('button', { type: 'button', onclick: () => ((target.value = ''), void load()) }, 'Clear')),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void load();
  });
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Audit')), chain, form, list, more);

  let rows: AuditRow[] = [];
  async function load(cursor?: string): Promise<void> {
    const q = new URLSearchParams({ limit: '50' });
    if (target.value.trim()) q.set('target', target.value.trim());
    if (cursor) q.set('cursor', cursor);
    try {
      const page = await ctx.api.get<{ items: AuditRow[]; next_cursor: string | null }>(`/api/v1/admin/audit?${q.toString()}`);
      rows = cursor ? [...rows, ...page.items] : page.items;
      const now = ctx.now();
      replace(
        list,
        table('Audit entries, newest first', [
          { title: 'Id', cell: (r) => String(r.id), class: 'num' },
          { title: 'When', cell: (r) => h('time', { datetime: r.at, title: r.at }, relativeTime(r.at, now)) },
          { title: 'Actor', cell: (r) => r.actor },
          { title: 'Action', cell: (r) => h('code', {}, r.action) },
          {
            title: 'Target',
            cell: (r) =>
              r.target
                ? h('button', { type: 'button', class: 'link', title: `Show only ${r.target}`, 'aria-label': `Show only ${r.target}`, onclick: () => ((target.value = r.target ?? ''), void load()) }, r.target)
                : '–',
          },
          { title: 'Version', cell: (r) => (r.version ?? '–'), class: 'num' },
          { title: 'Details', cell: (r) => h('code', { class: 'details' }, compactJson(r.details)) },
        ], rows, (r) => ({ 'data-audit-id': String(r.id) })),
      );
      replace(more, page.next_cursor ? h('button', { type: 'button', onclick: () => void load(page.next_cursor!) }, 'Older entries') : null);
    } catch (err) {
      replace(list, problemBox(problemFrom(err)));
      replace(more);
    }
  }

  async function verify(): Promise<void> {
    try {
      const v = await ctx.api.get<{ ok: boolean; checked: number; first_bad_id?: number; problem?: string }>('/api/v1/admin/audit/verify');
      replace(
        chain,
        h(
          'p',
          { 'data-chain': v.ok ? 'intact' : 'broken', role: v.ok ? null : 'alert' },
          'Hash chain: ',
          v.ok
            ? badge({ icon: '✔', text: `intact (${v.checked} entries checked)`, tone: 'ok' })
            : badge({ icon: '✖', text: `broken${v.first_bad_id ? ` at entry ${v.first_bad_id}` : ''}: ${v.problem ?? ''}`, tone: 'bad' }),
        ),
      );
    } catch (err) {
      replace(chain, problemBox(problemFrom(err)));
    }
  }

  return {
    live: false,
    async refresh() {
      await Promise.all([verify(), load()]);
    },
  };
}
