import type { PageCtx, PageView } from '../app';
import { problemFrom } from '../api';
import { h, replace, svg } from '../dom';
import { latencyChart, type Probe } from '../logic/chart';
import { bySeverity, errorText, expiryStanding, keyStateLook, latencyText, relativeTime, resultLook, statusLook } from '../logic/format';
import { can } from '../logic/roles';
import { seg } from '../logic/paths';
import { badge, problemBox, say } from '../widgets';
import type { HealthList, Provider, ProviderHealth, ReloadRun, SyncStatus } from './types';

// The chart shows this many of the newest probes.
const HISTORY = 30;
// Histories are read again only when a health round (or a full refresh) may have added to them.
const HISTORY_TOPICS = new Set(['open', 'poll', 'reconnect', 'health', 'manual']);

/** Providers with status, reason, latency and pool keys; sync revision, LiteLLM, last reload. Refreshes on its own. */
export function overviewPage(root: HTMLElement, ctx: PageCtx): PageView {
  const notice = h('div', { class: 'notice', role: 'status' });
  const content = h('div', { class: 'overview' });
  const histories = new Map<string, Probe[]>();
  const refreshBtn = h('button', { type: 'button', onclick: () => void view.refresh(['manual']) }, 'Refresh');
  const checkBtn = can(ctx.who.role, 'health-check') ? h('button', { type: 'button', class: 'primary', onclick: () => void check() }, 'Run health check now') : null;
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Overview'), h('div', { class: 'actions' }, checkBtn, refreshBtn)), notice, content);

  async function check(): Promise<void> {
    if (!checkBtn) return;
    checkBtn.disabled = true;
    say(notice, 'Health check running…');
    try {
      await ctx.api.send('POST', '/api/v1/admin/llm/health/check');
      say(notice, 'Health check done.');
      await view.refresh(['health']);
    } catch (err) {
      replace(notice, problemBox(problemFrom(err)));
    } finally {
      checkBtn.disabled = false;
    }
  }

  const view: PageView = {
    live: true,
    async refresh(topics) {
      try {
        const [health, providers, sync] = await Promise.all([
          ctx.api.get<HealthList>('/api/v1/admin/providers/health?limit=1000'),
          ctx.api.all<Provider>('/api/v1/admin/providers'),
          ctx.api.get<SyncStatus>('/api/v1/admin/sync'),
        ]);
        if (topics.some((t) => HISTORY_TOPICS.has(t)) || health.items.some((p) => !histories.has(p.slug))) {
          await Promise.all(
            health.items.map(async (p) => {
              const r = await ctx.api.get<{ items: Probe[] }>(`/api/v1/admin/providers/${seg(p.slug)}/health/history?limit=${HISTORY}`);
              histories.set(p.slug, r.items);
            }),
          );
        }
        replace(content, render(health, providers, sync, histories, ctx.now()));
      } catch (err) {
        replace(content, problemBox(problemFrom(err)));
      }
    },
  };
  return view;
}

function render(health: HealthList, providers: Provider[], sync: SyncStatus, histories: Map<string, Probe[]>, now: number): HTMLElement[] {
  const pools = new Map(providers.map((p) => [p.slug, p]));
  const out: HTMLElement[] = [];
  if (sync.alert) out.push(h('div', { class: 'alert', role: 'alert' }, h('strong', {}, 'Attention: '), sync.alert));
  const keys = providers.flatMap((p) => p.keys.filter((k) => k.has_key));
  const names = new Map(keys.map((k) => [k.name, k]));
  const outOfService = [...names.values()].filter((k) => k.state === 'disabled').length;
  out.push(
    h(
      'section',
      { 'aria-labelledby': 'glance-title' },
      h('h2', { id: 'glance-title', class: 'visually-hidden' }, 'At a glance'),
      h(
        'dl',
        { class: 'glance' },
        item('Sync revision', syncLine(sync, now), 'sync-revision'),
        item('LiteLLM', litellmLine(health, now), 'litellm'),
        item('Last reload', reloadLine(sync, now), 'last-reload'),
        item('Pool keys', `${names.size - outOfService} in service, ${outOfService} out of service`, 'pool-keys'),
      ),
    ),
  );
  out.push(
    h(
      'section',
      { 'aria-labelledby': 'providers-title' },
      h('h2', { id: 'providers-title' }, 'Providers'),
      health.items.length
        ? h('div', { class: 'cards' }, bySeverity(health.items).map((p) => providerCard(p, pools.get(p.slug), histories.get(p.slug) ?? [], now)))
        : h('p', {}, 'No providers yet.'),
    ),
  );
  if (health.expiring_keys.length) {
    out.push(
      h(
        'section',
        { 'aria-labelledby': 'expiring-title' },
        h('h2', { id: 'expiring-title' }, 'Keys expiring soon'),
        h('ul', { class: 'plain' }, health.expiring_keys.map((k) => {
          const e = expiryStanding(k.expires_at, now);
          return h('li', { class: `expiry-${e.level}` }, h('strong', {}, k.name), ` (version ${k.version}): `, h('span', { 'aria-hidden': 'true' }, '⚠ '), e.text);
        })),
      ),
    );
  }
  return out;
}

function item(term: string, value: Node | string, id: string): HTMLElement[] {
  return [h('dt', {}, term), h('dd', { 'data-glance': id }, value)];
}

function syncLine(sync: SyncStatus, now: number): HTMLElement {
  const r = sync.last_render;
  return h(
    'span',
    {},
    h('strong', { class: 'revision' }, sync.revision ? String(sync.revision.revision) : 'none yet'),
    r ? [' · last render ', badge(resultLook(r.status)), ` ${relativeTime(r.at, now)}`, r.error ? h('span', { class: 'error-text' }, `: ${errorText(r.error)}`) : null] : null,
    sync.pending.changes || sync.pending.rendering ? ' · changes pending' : null,
  );
}

function litellmLine(health: HealthList, now: number): HTMLElement {
  const l = health.litellm;
  if (!l) return h('span', {}, badge(statusLook('unknown'), ': not checked yet'));
  const live = l.status === 'healthy' || l.status === 'degraded';
  return h(
    'span',
    {},
    badge({ ...statusLook(l.status), text: live ? `live (${l.status})` : `not live (${l.status})` }),
    l.reason && l.status !== 'healthy' ? ` ${l.reason}` : '',
    ` · ${latencyText(l.latency_ms)}`,
    l.version ? ` · v${l.version}` : '',
    ` · checked ${relativeTime(l.checked_at, now)}`,
  );
}

function reloadLine(sync: SyncStatus, now: number): HTMLElement {
  const lr = sync.last_reload;
  if (!lr) return h('span', {}, 'none yet');
  if ('error' in lr) return h('span', { class: 'error-text' }, lr.error);
  const running = lr.running ? h('span', {}, ` · revision ${lr.running.revision} reloading since ${relativeTime(lr.running.since, now)}`) : null;
  const last: ReloadRun | null = lr.last;
  if (!last) return h('span', {}, `none yet (${lr.reloader})`, running);
  return h(
    'span',
    {},
    badge(resultLook(last.status)),
    ` revision ${last.revision} · ${relativeTime(last.finished_at ?? last.started_at, now)} · ${lr.reloader}`,
    last.error ? h('span', { class: 'error-text' }, `: ${last.error}`) : null,
    running,
  );
}

function providerCard(p: ProviderHealth, pool: Provider | undefined, history: Probe[], now: number): HTMLElement {
  const look = statusLook(p.status);
  const titleId = `provider-${p.slug}`;
  return h(
    'article',
    { class: `card tone-border-${look.tone}`, 'data-provider': p.slug, 'aria-labelledby': titleId },
    h('h3', { id: titleId }, p.slug, ' ', h('span', { class: 'kind' }, p.kind)),
    h(
      'p',
      { class: 'status-line' },
      badge(look),
      // A healthy provider's reason is just "ok": the reason is for the other states.
      p.reason && p.status !== 'healthy' ? h('span', { class: 'reason' }, ` ${p.reason}`) : null,
      p.http_status && p.status !== 'healthy' ? ` (HTTP ${p.http_status})` : null,
      p.enabled ? null : ' · disabled by an admin',
    ),
    h('p', { class: 'muted' }, p.latency_ms === null ? `No latency · checked ${relativeTime(p.checked_at, now)}` : `Latency ${latencyText(p.latency_ms)} · checked ${relativeTime(p.checked_at, now)}`),
    chart(history),
    h('h4', {}, 'Keys'),
    pool && pool.keys.length
      ? h(
          'ul',
          { class: 'plain pool' },
          pool.keys.map((k) =>
            h(
              'li',
              { 'data-key': k.name },
              h('span', { class: 'key-name' }, k.name),
              ' ',
              k.has_key ? badge(keyStateLook(k.state, k.state_reason)) : badge({ icon: '?', text: 'no such key', tone: 'bad' }),
              pool.keys.length > 1 ? h('span', { class: 'muted' }, ` weight ${k.weight}`) : null,
            ),
          ),
        )
      : h('p', { class: 'muted' }, 'No key.'),
  );
}

function chart(history: Probe[]): SVGSVGElement {
  const c = latencyChart(history);
  return svg(
    'svg',
    { class: 'chart', viewBox: `0 0 ${c.width} ${c.height}`, width: c.width, height: c.height, role: 'img', 'aria-label': `Latency: ${c.summary}` },
    svg('title', {}, `Latency: ${c.summary}`),
    svg('line', { x1: 0, y1: c.height - 0.5, x2: c.width, y2: c.height - 0.5, class: 'axis' }),
    c.path ? svg('path', { d: c.path, class: 'line' }) : null,
    c.failures.map((x) => svg('line', { x1: x, y1: c.height - 8, x2: x, y2: c.height, class: 'fail' })),
  );
}
