import type { PageCtx, PageView } from '../app';
import { problemFrom } from '../api';
import { h, replace } from '../dom';
import { creditText, expiryStanding, keyStateLook, relativeTime, shortFingerprint } from '../logic/format';
import { can } from '../logic/roles';
import { seg } from '../logic/paths';
import { badge, field, openDialog, problemBox, say, table, uid, type Column } from '../widgets';
import type { KeyVersion, PlatformKey, PoolKey, Provider } from './types';

/** Every platform key, masked, with its state, expiry and credit; rotate, disable/enable, versions and rollback, delete. */
export function keysPage(root: HTMLElement, ctx: PageCtx): PageView {
  const notice = h('div', { class: 'notice', role: 'status' });
  const content = h('div', {});
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Keys'), h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => void view.refresh(['manual']) }, 'Refresh'))),
    notice,
    content,
  );
  const api = ctx.api;
  const path = (k: PlatformKey, rest = ''): string => `/api/v1/admin/platform-keys/${seg(k.name)}${rest}`;
  // The version the page showed: a change made meanwhile by someone else is refused (412) instead of overwritten.
  const ifMatch = (k: PlatformKey): Record<string, string> => ({ 'If-Match': `"${k.version}"` });

  async function act(what: () => Promise<string>, errorRegion: HTMLElement = notice): Promise<boolean> {
    try {
      const message = await what();
      say(notice, message);
      await view.refresh(['manual']);
      return true;
    } catch (err) {
      replace(errorRegion, problemBox(problemFrom(err)));
      return false;
    }
  }

  function rotateDialog(k: PlatformKey): void {
    const input = h('input', { id: uid('new-key'), type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
    const validate = h('input', { id: uid('validate'), type: 'checkbox', checked: true });
    const error = h('div', {});
    openDialog(`Rotate ${k.name}`, (close) => {
      const form = h(
        'form',
        { novalidate: true },
        h('p', {}, `Now version ${k.version} (${k.masked_key}). The new value becomes version ${k.version + 1}; earlier versions stay for rollback.`),
        field(`New key for ${k.name}`, input),
        h('div', { class: 'check' }, validate, h('label', { for: validate.id }, 'Validate with the provider first (a refused key is not stored)')),
        error,
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Rotate'), h('button', { type: 'button', onclick: close }, 'Cancel')),
      );
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        if (!input.value) {
          replace(error, problemBox({ status: 0, title: 'Key needed', detail: 'paste the new key', errors: [] }));
          return;
        }
        const body = { api_key: input.value, validate: validate.checked };
        void act(async () => {
          const v = await api.send<PlatformKey>('PUT', path(k), body, ifMatch(k));
          input.value = '';
          close();
          return `${v.name} rotated: now version ${v.version} (${v.masked_key}, fingerprint ${shortFingerprint(v.fingerprint)})${body.validate ? ', validated with the provider' : ''}.`;
        }, error);
      });
      return form;
    });
    input.focus();
  }

  function disableDialog(k: PlatformKey): void {
    const reason = h('input', { id: uid('reason'), type: 'text', maxlength: 500, autocomplete: 'off' });
    const error = h('div', {});
    openDialog(`Take ${k.name} out of service`, (close) => {
      const form = h(
        'form',
        { novalidate: true },
        h('p', {}, `${k.name} is left out of LiteLLM's files at once, until it is enabled again.`),
        field('Reason (optional, shown in the audit trail)', reason),
        error,
        h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'danger' }, 'Disable'), h('button', { type: 'button', onclick: close }, 'Cancel')),
      );
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
        void act(async () => {
          await api.send('POST', path(k, '/disable'), body);
          close();
          return `${k.name} is out of service.`;
        }, error);
      });
      return form;
    });
  }

  function deleteDialog(k: PlatformKey): void {
    const confirmInput = h('input', { id: uid('confirm'), type: 'text', autocomplete: 'off', spellcheck: 'false' });
    const error = h('div', {});
    const submit = h('button', { type: 'submit', class: 'danger', disabled: true }, `Delete ${k.name}`);
    confirmInput.addEventListener('input', () => (submit.disabled = confirmInput.value !== k.name));
    openDialog(`Delete ${k.name}?`, (close) => {
      const form = h(
        'form',
        { novalidate: true },
        h('p', {}, `This deletes the key ${k.name} (${k.env_var}) and all ${k.version} of its versions. It cannot be undone; models that use it are no longer served with it.`),
        field(`Type ${k.name} to confirm`, confirmInput),
        error,
        h('div', { class: 'actions' }, submit, h('button', { type: 'button', onclick: close }, 'Cancel')),
      );
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        if (confirmInput.value !== k.name) return;
        void act(async () => {
          await api.send('DELETE', path(k), undefined, ifMatch(k));
          close();
          return `${k.name} deleted.`;
        }, error);
      });
      return form;
    });
    confirmInput.focus();
  }

  async function versionsDialog(k: PlatformKey): Promise<void> {
    const list = h('div', {}, 'Loading…');
    const error = h('div', {});
    openDialog(`Versions of ${k.name}`, (close) => [list, error, h('div', { class: 'actions' }, h('button', { type: 'button', onclick: close }, 'Close'))]);
    try {
      const versions = await api.all<KeyVersion>(path(k, '/versions'));
      const cols: Array<Column<KeyVersion>> = [
        { title: 'Version', cell: (v) => [String(v.version), v.current ? h('span', { class: 'tag' }, ' current') : null] },
        { title: 'Key', cell: (v) => h('code', {}, v.masked_key) },
        { title: 'Fingerprint', cell: (v) => h('code', { title: v.fingerprint }, shortFingerprint(v.fingerprint)) },
        { title: 'Written', cell: (v) => relativeTime(v.created_at, ctx.now()) },
      ];
      if (can(ctx.who.role, 'rollback')) {
        cols.push({
          title: 'Rollback',
          cell: (v) =>
            v.current
              ? ''
              : h('button', {
                  type: 'button',
                  'aria-label': `Roll ${k.name} back to version ${v.version}`,
                  onclick: () =>
                    void act(async () => {
                      const r = await api.send<PlatformKey>('POST', path(k, '/rollback'), { version: v.version }, ifMatch(k));
                      list.closest('dialog')?.close();
                      return `${k.name} rolled back: version ${r.version} now holds the value of version ${v.version}.`;
                    }, error),
                }, `Roll back to ${v.version}`),
        });
      }
      replace(list, table(`Versions of ${k.name}`, cols, versions));
    } catch (err) {
      replace(list, problemBox(problemFrom(err)));
    }
  }

  // Live too: a key the prober takes out of service shows here at once. Dialogs live outside the
  // table, and the focused button is found again after each refresh (data-focus).
  const view: PageView = {
    live: true,
    async refresh() {
      try {
        const [keys, providers] = await Promise.all([api.all<PlatformKey>('/api/v1/admin/platform-keys'), api.all<Provider>('/api/v1/admin/providers')]);
        const pools = new Map<string, { providers: string[]; key: PoolKey }>();
        for (const p of providers) for (const pk of p.keys) pools.set(pk.name, { providers: [...(pools.get(pk.name)?.providers ?? []), p.slug], key: pk });
        replace(content, render(keys, pools));
      } catch (err) {
        replace(content, problemBox(problemFrom(err)));
      }
    },
  };

  function render(keys: PlatformKey[], pools: Map<string, { providers: string[]; key: PoolKey }>): HTMLElement {
    const now = ctx.now();
    const cols: Array<Column<PlatformKey>> = [
      { title: 'Name', cell: (k) => [h('strong', {}, k.name), h('br'), h('code', { class: 'muted' }, k.env_var)] },
      { title: 'Key', cell: (k) => h('code', {}, k.masked_key) },
      { title: 'Fingerprint', cell: (k) => h('code', { title: k.fingerprint }, shortFingerprint(k.fingerprint)) },
      { title: 'Version', cell: (k) => h('span', { 'data-version': String(k.version) }, String(k.version)), class: 'num' },
      {
        title: 'State',
        cell: (k) => [badge(keyStateLook(k.state, k.state_reason)), k.state_note ? h('div', { class: 'muted' }, k.state_note) : null, k.replaced_by ? h('div', { class: 'muted' }, `replaced by ${k.replaced_by}`) : null],
      },
      { title: 'Last rotated', cell: (k) => h('time', { datetime: k.updated_at, title: k.updated_at }, relativeTime(k.updated_at, now)) },
      {
        title: 'Expiry',
        cell: (k) => {
          const e = expiryStanding(k.expires_at, now);
          return h('span', { class: `expiry-${e.level}` }, e.level === 'expiring' || e.level === 'expired' ? h('span', { 'aria-hidden': 'true' }, '⚠ ') : null, e.text);
        },
      },
      {
        title: 'Credit',
        cell: (k) => {
          const c = creditText(pools.get(k.name)?.key.health?.credit);
          return h('span', { class: c.low ? 'expiry-expiring' : '' }, c.text);
        },
      },
      { title: 'Providers', cell: (k) => pools.get(k.name)?.providers.join(', ') || '–' },
      { title: 'Actions', cell: (k) => actions(k) },
    ];
    return table('Platform keys', cols, keys, (k) => ({ 'data-key': k.name }));
  }

  function actions(k: PlatformKey): HTMLElement {
    const role = ctx.who.role;
    const b = (label: string, aria: string, onclick: () => void, cls = ''): HTMLButtonElement =>
      h('button', { type: 'button', class: cls, 'aria-label': aria, 'data-focus': aria, onclick }, label);
    return h(
      'div',
      { class: 'row-actions' },
      can(role, 'rotate') ? b('Rotate…', `Rotate ${k.name}`, () => rotateDialog(k), 'primary') : null,
      can(role, 'disable')
        ? k.state === 'disabled'
          ? b('Enable', `Enable ${k.name}`, () => void act(async () => (await api.send('POST', path(k, '/enable')), `${k.name} is back in service.`)))
          : b('Disable…', `Disable ${k.name}`, () => disableDialog(k))
        : null,
      b('Versions', `Versions of ${k.name}`, () => void versionsDialog(k)),
      can(role, 'delete-key') ? b('Delete…', `Delete ${k.name}`, () => deleteDialog(k), 'danger') : null,
    );
  }

  return view;
}
