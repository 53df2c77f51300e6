import type { PageCtx, PageView } from '../app';
import { problemFrom } from '../api';
import { h, replace } from '../dom';
import { expiryStanding, relativeTime, type StatusLook } from '../logic/format';
import { idempotencyKey, seg } from '../logic/paths';
import { can } from '../logic/roles';
import { budgetText, graceBody, limitsText, virtualKeyBody } from '../logic/virtual-keys';
import { badge, field, openDialog, problemBox, say, table, uid, type Column } from '../widgets';

/** A virtual key as the admin API lists it: keyplane's record reconciled with LiteLLM, never the key. */
interface VirtualKey {
  alias: string;
  /** active, gone (deleted in LiteLLM), unknown (LiteLLM could not be asked), creating. */
  status: string;
  litellm_error?: string;
  masked_key: string | null;
  models: string[];
  max_budget: number | null;
  budget_duration: string | null;
  rpm_limit: number | null;
  tpm_limit: number | null;
  expires_at: string | null;
  spend: number | null;
  blocked: boolean | null;
  /** Earlier keys of the alias, valid until their deadline. */
  retiring: Array<{ masked_key: string | null; delete_at: string }>;
  rotated_at: string | null;
}

/** What create and rotate answer: the record, and the key this once (null on a retried rotation). */
type Issued = VirtualKey & { key: string | null };

const STATUS_LOOK: Record<string, StatusLook> = {
  active: { icon: '✔', text: 'active', tone: 'ok' },
  creating: { icon: '…', text: 'being created', tone: 'warn' },
  gone: { icon: '✖', text: 'gone from LiteLLM', tone: 'bad' },
  unknown: { icon: '?', text: 'LiteLLM not reachable', tone: 'unknown' },
};

const base = '/api/v1/admin/virtual-keys';

/** LiteLLM's virtual keys through keyplane: budgets, limits, expiry; create (the key shown once), rotate with a grace period, delete. */
export function virtualKeysPage(root: HTMLElement, ctx: PageCtx): PageView {
  const notice = h('div', { class: 'notice', role: 'status' });
  const content = h('div', {});
  const issuer = can(ctx.who.role, 'virtual-key-issue');
  const deleter = can(ctx.who.role, 'virtual-key-delete');
  root.append(
    h(
      'div',
      { class: 'page-head' },
      h('h1', {}, 'Virtual keys'),
      h('div', { class: 'actions' }, issuer ? h('button', { type: 'button', class: 'primary', onclick: () => createDialog() }, 'Create virtual key…') : null, h('button', { type: 'button', onclick: () => void view.refresh(['manual']) }, 'Refresh')),
    ),
    notice,
    content,
  );
  const api = ctx.api;
  const random = (b: Uint8Array): Uint8Array => crypto.getRandomValues(b);

  /** The new key, once: it is in this dialog only, and gone with it. */
  function showKeyOnce(title: string, alias: string, key: string, after: string): void {
    const out = h('input', { id: uid('new-vkey'), type: 'text', readonly: true, value: key, class: 'secret-once', spellcheck: 'false', autocomplete: 'off' });
    const copied = h('span', { role: 'status' });
    openDialog(title, (close) => [
      h('p', {}, `The key of ${alias} is shown this once: store it now. keyplane keeps only its alias. ${after}`),
      field(`Key of ${alias}`, out),
      copied,
      h(
        'div',
        { class: 'actions' },
        h('button', {
          type: 'button',
          onclick: () => {
            out.select();
            // The clipboard exists only in secure contexts (HTTPS, localhost); otherwise the key is selected for Ctrl+C.
            if (navigator.clipboard) void navigator.clipboard.writeText(key).then(() => (copied.textContent = 'Copied.'), () => (copied.textContent = 'Selected: press Ctrl+C.'));
            else copied.textContent = 'Selected: press Ctrl+C.';
          },
        }, 'Copy'),
        h('button', { type: 'button', class: 'primary', onclick: close }, 'I have stored it'),
      ),
    ]);
    out.select();
  }

  function createDialog(): void {
    const inputs: Record<string, HTMLInputElement> = {
      alias: h('input', { id: uid('alias'), name: 'alias', type: 'text', required: true, autocomplete: 'off' }),
      models: h('input', { id: uid('models'), name: 'models', type: 'text', autocomplete: 'off' }),
      max_budget: h('input', { id: uid('max-budget'), name: 'max_budget', type: 'text', inputmode: 'decimal', autocomplete: 'off' }),
      budget_duration: h('input', { id: uid('budget-duration'), name: 'budget_duration', type: 'text', autocomplete: 'off' }),
      rpm_limit: h('input', { id: uid('rpm'), name: 'rpm_limit', type: 'text', inputmode: 'numeric', autocomplete: 'off' }),
      tpm_limit: h('input', { id: uid('tpm'), name: 'tpm_limit', type: 'text', inputmode: 'numeric', autocomplete: 'off' }),
      duration: h('input', { id: uid('duration'), name: 'duration', type: 'text', autocomplete: 'off' }),
    };
    const error = h('div', {});
    openDialog('Create a virtual key', (close) => {
      const form = h(
        'form',
        { novalidate: true },
        field('Alias', inputs.alias!),
        field('Models', inputs.models!, 'Model names, separated by commas; empty: every model.'),
        field('Max budget', inputs.max_budget!, 'In the currency LiteLLM counts spend in; empty: no budget.'),
        field('Budget period', inputs.budget_duration!, 'When the spend resets, such as 30d or 1mo; empty: never.'),
        field('Requests per minute', inputs.rpm_limit!),
        field('Tokens per minute', inputs.tpm_limit!),
        field('Valid for', inputs.duration!, 'The key expires this long after it is made, such as 90d; empty: never.'),
        error,
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create'), h('button', { type: 'button', onclick: close }, 'Cancel')),
      );
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const read = virtualKeyBody(Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value])));
        if ('errors' in read) {
          replace(error, problemBox({ status: 0, title: 'Check the form', detail: 'some fields are not valid', errors: read.errors }));
          return;
        }
        void (async () => {
          try {
            const created = await api.send<Issued>('POST', base, read.body);
            close();
            say(notice, `Virtual key ${created.alias} created.`);
            if (created.key) showKeyOnce(`Virtual key ${created.alias} created`, created.alias, created.key, '');
            await view.refresh(['manual']);
          } catch (err) {
            replace(error, problemBox(problemFrom(err)));
          }
        })();
      });
      return form;
    });
    inputs.alias!.focus();
  }

  function rotateDialog(vk: VirtualKey): void {
    const grace = h('input', { id: uid('grace'), type: 'text', value: '24h', autocomplete: 'off', required: true });
    const error = h('div', {});
    // One key per dialog: a submit sent twice (a retry after a lost answer) is one rotation.
    const idem = idempotencyKey(random);
    openDialog(`Rotate ${vk.alias}`, (close) => {
      const form = h(
        'form',
        { novalidate: true },
        h('p', {}, `A new key replaces the key of ${vk.alias}; the old one keeps working for the grace period, then is deleted.`),
        field('Grace period', grace, 'How long the old key keeps working, such as 10m, 24h or 7d (at most 30d).'),
        error,
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Rotate'), h('button', { type: 'button', onclick: close }, 'Cancel')),
      );
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const read = graceBody(grace.value);
        if ('errors' in read) {
          replace(error, problemBox({ status: 0, title: 'Check the form', detail: 'the grace period is not valid', errors: read.errors }));
          return;
        }
        void (async () => {
          try {
            const r = await api.send<Issued>('POST', `${base}/${seg(vk.alias)}/rotate`, read.body, { 'Idempotency-Key': idem });
            close();
            if (r.key) {
              say(notice, `Virtual key ${vk.alias} rotated; the old key works for ${read.body.grace_period} more.`);
              showKeyOnce(`Virtual key ${vk.alias} rotated`, vk.alias, r.key, `The old key stops working after ${read.body.grace_period}.`);
            } else {
              // A retry of a rotation that went through: its key was in the first answer, which was lost.
              say(notice, `Virtual key ${vk.alias} was already rotated by this request; its new key was shown only in the first answer. Rotate again for a key you can see.`, 'bad');
            }
            await view.refresh(['manual']);
          } catch (err) {
            replace(error, problemBox(problemFrom(err)));
          }
        })();
      });
      return form;
    });
    grace.focus();
  }

  function deleteDialog(vk: VirtualKey): void {
    const error = h('div', {});
    openDialog(`Delete ${vk.alias}?`, (close) => [
      h('p', {}, `The virtual key ${vk.alias} stops working at once. This cannot be undone.`),
      error,
      h(
        'div',
        { class: 'actions' },
        h('button', {
          type: 'button',
          class: 'danger',
          onclick: () =>
            void (async () => {
              try {
                await api.send('DELETE', `${base}/${seg(vk.alias)}`);
                close();
                say(notice, `Virtual key ${vk.alias} deleted.`);
                await view.refresh(['manual']);
              } catch (err) {
                replace(error, problemBox(problemFrom(err)));
              }
            })(),
        }, `Delete ${vk.alias}`),
        h('button', { type: 'button', onclick: close }, 'Cancel'),
      ),
    ]);
  }

  const view: PageView = {
    live: false,
    async refresh() {
      try {
        const items = await api.all<VirtualKey>(base);
        const now = ctx.now();
        const cols: Array<Column<VirtualKey>> = [
          { title: 'Alias', cell: (v) => [h('strong', {}, v.alias), v.masked_key ? [h('br'), h('code', { class: 'muted' }, v.masked_key)] : null] },
          {
            title: 'Status',
            cell: (v) => [
              badge(STATUS_LOOK[v.status] ?? { icon: '?', text: v.status, tone: 'unknown' }),
              v.blocked ? h('div', {}, badge({ icon: '✖', text: 'blocked', tone: 'bad' })) : null,
              v.litellm_error ? h('div', { class: 'muted' }, v.litellm_error) : null,
              v.retiring.map((r) => h('div', { class: 'muted' }, `old key ${r.masked_key ?? ''} works until ${r.delete_at.slice(0, 16).replace('T', ' ')} UTC`)),
            ],
          },
          { title: 'Models', cell: (v) => (v.models.length ? v.models.join(', ') : 'all') },
          { title: 'Budget and spend', cell: (v) => budgetText(v.spend, v.max_budget, v.budget_duration) },
          { title: 'Limits', cell: (v) => limitsText(v.rpm_limit, v.tpm_limit) },
          {
            title: 'Expires',
            cell: (v) => {
              const e = expiryStanding(v.expires_at, now);
              return h('span', { class: `expiry-${e.level}`, title: v.expires_at ?? '' }, e.level === 'none' ? 'never' : e.level === 'ok' ? `${e.text} (${relativeTime(v.expires_at, now)})` : e.text);
            },
          },
        ];
        if (issuer || deleter) {
          cols.push({
            title: 'Actions',
            cell: (v) =>
              h(
                'div',
                { class: 'row-actions' },
                issuer ? h('button', { type: 'button', class: 'primary', 'aria-label': `Rotate ${v.alias}`, onclick: () => rotateDialog(v) }, 'Rotate…') : null,
                deleter ? h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${v.alias}`, onclick: () => deleteDialog(v) }, 'Delete…') : null,
              ),
          });
        }
        replace(content, table('Virtual keys', cols, items, (v) => ({ 'data-alias': v.alias })));
      } catch (err) {
        replace(content, problemBox(problemFrom(err)));
      }
    },
  };
  return view;
}
