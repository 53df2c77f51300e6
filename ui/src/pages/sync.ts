import type { PageCtx, PageView } from '../app';
import { problemFrom } from '../api';
import { h, replace } from '../dom';
import { diffCounts, diffLines } from '../logic/diff';
import { errorText, relativeTime, resultLook, shortFingerprint, shortHash, skippedText, warningText } from '../logic/format';
import { can } from '../logic/roles';
import { badge, problemBox, say, table } from '../widgets';
import type { SyncStatus } from './types';

interface Preview {
  changed: Record<string, boolean>;
  config: string;
  env: string;
  diff: Record<string, string>;
  deployments: number;
  skipped: unknown[];
  warnings: unknown[];
}

interface Revision {
  revision: number;
  created_at: string;
  trigger: string;
  changed_files: string[];
  changed_keys: string[];
  config_sha256: string;
}

/** What LiteLLM's files hold and would hold: status, the next render's preview (values masked) and diff, revisions, sync now. */
export function syncPage(root: HTMLElement, ctx: PageCtx): PageView {
  const notice = h('div', { class: 'notice', role: 'status' });
  const content = h('div', {});
  const syncBtn = can(ctx.who.role, 'sync-now') ? h('button', { type: 'button', class: 'primary', onclick: () => void syncNow() }, 'Sync now') : null;
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Sync'), h('div', { class: 'actions' }, syncBtn, h('button', { type: 'button', onclick: () => void view.refresh(['manual']) }, 'Refresh'))),
    notice,
    content,
  );

  async function syncNow(): Promise<void> {
    if (!syncBtn) return;
    syncBtn.disabled = true;
    try {
      const r = await ctx.api.send<{ status: string; revision?: number | null; changed_files?: string[]; reason?: string }>('POST', '/api/v1/admin/sync', {});
      say(notice, r.status === 'forwarded' ? 'Sent to the leading instance.' : `Rendered: ${r.changed_files?.length ? `${r.changed_files.join(' and ')} changed, revision ${r.revision}` : 'nothing changed'}.`);
      await view.refresh(['manual']);
    } catch (err) {
      replace(notice, problemBox(problemFrom(err)));
    } finally {
      syncBtn.disabled = false;
    }
  }

  const view: PageView = {
    live: false,
    async refresh() {
      const now = ctx.now();
      try {
        const [status, revisions] = await Promise.all([ctx.api.get<SyncStatus>('/api/v1/admin/sync'), ctx.api.get<{ items: Revision[] }>('/api/v1/admin/sync/revisions?limit=20')]);
        // A preview that fails (a render error) is shown in its place; the rest of the page stands.
        const preview = await ctx.api.get<Preview>('/api/v1/admin/sync/preview').catch((err: unknown) => problemFrom(err));
        replace(content, statusSection(status, now), previewSection(preview), revisionsSection(revisions.items, now));
      } catch (err) {
        replace(content, problemBox(problemFrom(err)));
      }
    },
  };
  return view;
}

function statusSection(s: SyncStatus, now: number): HTMLElement {
  const r = s.last_render;
  return h(
    'section',
    { 'aria-labelledby': 'sync-status-title' },
    h('h2', { id: 'sync-status-title' }, 'Status'),
    s.alert ? h('div', { class: 'alert', role: 'alert' }, s.alert) : null,
    h(
      'dl',
      { class: 'glance' },
      h('dt', {}, 'Revision'),
      h('dd', { 'data-glance': 'sync-revision' }, s.revision ? `${s.revision.revision} (${s.revision.trigger}, ${relativeTime(s.revision.created_at, now)})` : 'none yet'),
      h('dt', {}, 'Last render'),
      h('dd', {}, r ? [badge(resultLook(r.status)), ` ${r.trigger}, ${relativeTime(r.at, now)}`, r.error ? h('span', { class: 'error-text' }, `: ${errorText(r.error)}`) : null] : 'none yet'),
      h('dt', {}, 'Leader'),
      h('dd', {}, s.leader.instance ? `${s.leader.instance}${s.leader.this_instance ? ' (this instance)' : ''}` : 'none'),
      h('dt', {}, 'Pending'),
      h('dd', {}, `${s.pending.changes} change(s)${s.pending.rendering ? ', rendering' : ''}${s.pending.reload ? ', a reload' : ''}`),
      Object.entries(s.files).map(([name, f]) => [h('dt', {}, name), h('dd', {}, f.exists ? h('code', { title: f.sha256 ?? f.digest ?? '' }, f.sha256 ? shortHash(f.sha256) : shortFingerprint(f.digest)) : 'not written yet')]),
    ),
  );
}

function previewSection(p: Preview | ReturnType<typeof problemFrom>): HTMLElement {
  const head = h('h2', { id: 'preview-title' }, 'Next render');
  if ('title' in p) return h('section', { 'aria-labelledby': 'preview-title' }, head, problemBox(p));
  const files = Object.keys(p.diff).sort();
  return h(
    'section',
    { 'aria-labelledby': 'preview-title' },
    head,
    h('p', {}, `${p.deployments} deployment(s) rendered. Values of keys are masked.`),
    p.skipped.length ? h('div', { class: 'alert' }, h('strong', {}, 'Left out: '), h('ul', {}, p.skipped.map((s) => h('li', {}, skippedText(s))))) : null,
    p.warnings.length ? h('div', { class: 'alert' }, h('strong', {}, 'Warnings: '), h('ul', {}, p.warnings.map((w) => h('li', {}, warningText(w))))) : null,
    files.map((name) => {
      const d = p.diff[name] ?? '';
      const counts = diffCounts(d);
      return h(
        'div',
        { class: 'diff-file', 'data-file': name },
        h('h3', {}, name, ' ', h('span', { class: 'muted' }, p.changed[name] ? `changes: +${counts.added} −${counts.removed}` : 'unchanged')),
        d ? h('pre', { class: 'diff', tabindex: '0', 'aria-label': `Diff of ${name}` }, diffLines(d).map((l) => h('span', { class: `diff-${l.kind}` }, l.text + '\n'))) : null,
      );
    }),
    h('details', {}, h('summary', {}, 'config.yaml as it would be written'), h('pre', { tabindex: '0' }, p.config)),
    h('details', {}, h('summary', {}, 'litellm.env as it would be written (masked)'), h('pre', { tabindex: '0', 'data-file-body': 'litellm.env' }, p.env)),
  );
}

function revisionsSection(items: Revision[], now: number): HTMLElement {
  return h(
    'section',
    { 'aria-labelledby': 'revisions-title' },
    h('h2', { id: 'revisions-title' }, 'Revisions'),
    table('Revisions, newest first', [
      { title: 'Revision', cell: (r) => String(r.revision), class: 'num' },
      { title: 'When', cell: (r) => h('time', { datetime: r.created_at, title: r.created_at }, relativeTime(r.created_at, now)) },
      { title: 'Trigger', cell: (r) => r.trigger },
      { title: 'Files', cell: (r) => r.changed_files.join(', ') || '–' },
      { title: 'Keys', cell: (r) => r.changed_keys.join(', ') || '–' },
    ], items),
  );
}
