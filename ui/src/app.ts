import { Api, problemFrom } from './api';
import { h, replace } from './dom';
import { Live, type LiveState } from './live';
import { pageFromHash, pagesFor, type PageId } from './logic/roles';
import type { Problem } from './logic/problem';
import { forgetToken, storedToken, storeToken, whoFrom, type Who } from './session';
import { field, problemBox, uid } from './widgets';
import { overviewPage } from './pages/overview';
import { keysPage } from './pages/keys';
import { virtualKeysPage } from './pages/virtual-keys';
import { modelsPage } from './pages/models';
import { syncPage } from './pages/sync';
import { auditPage } from './pages/audit';

export interface PageCtx {
  api: Api;
  who: Who;
  now: () => number;
}

export interface PageView {
  /** Reads the page's data again; `topics` say what changed (from the live stream, or `poll`). */
  refresh(topics: string[]): Promise<void>;
  /** Whether live nudges refresh it (pages with forms only refresh after their own actions). */
  live: boolean;
}

export type PageFactory = (root: HTMLElement, ctx: PageCtx) => PageView;

const PAGES: Record<PageId, PageFactory> = {
  overview: overviewPage,
  keys: keysPage,
  'virtual-keys': virtualKeysPage,
  models: modelsPage,
  sync: syncPage,
  audit: auditPage,
};

const LIVE_TEXT: Record<LiveState, string> = { connecting: 'connecting…', live: 'live', polling: 'refreshing every 5 s' };

/** The dashboard: sign-in, then the pages the token's role may see, kept current by the live stream. */
export class App {
  private live?: Live;
  private page?: PageView;
  private refreshing?: Promise<void>;
  private again?: string[];
  private readonly onHash = (): void => this.show();
  private ctx?: PageCtx;
  private main?: HTMLElement;

  constructor(
    private readonly root: HTMLElement,
    private readonly storage: Storage,
  ) {}

  start(): void {
    const token = storedToken(this.storage);
    if (token) void this.signIn(token);
    else this.signInForm();
  }

  private signInForm(problem?: Problem): void {
    this.live?.stop();
    window.removeEventListener('hashchange', this.onHash);
    const input = h('input', { id: uid('token'), name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true });
    const error = h('div', {}, problem ? problemBox(problem) : null);
    const form = h(
      'form',
      { class: 'signin', 'aria-labelledby': 'signin-title', novalidate: true },
      h('h1', { id: 'signin-title' }, 'Sign in to keyplane'),
      field('API token or JWT', input, "Kept in this tab's session storage and sent only to this server, as the Authorization header."),
      h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
      error,
    );
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) {
        replace(error, problemBox({ status: 0, title: 'Token needed', detail: 'paste an API token or a JWT', errors: [] }));
        return;
      }
      input.value = '';
      void this.signIn(token, error);
    });
    replace(this.root, h('main', { id: 'main', class: 'narrow' }, form));
    input.focus();
  }

  private async signIn(token: string, errorRegion?: HTMLElement): Promise<void> {
    const api = new Api(token, (p) => this.signOut(p));
    try {
      const who = whoFrom(await api.get('/api/v1/admin/whoami'));
      storeToken(this.storage, token);
      this.shell(api, who);
    } catch (err) {
      forgetToken(this.storage);
      if (errorRegion) replace(errorRegion, problemBox(problemFrom(err)));
      else this.signInForm(problemFrom(err));
    }
  }

  private signOut(problem?: Problem): void {
    forgetToken(this.storage);
    this.page = undefined;
    this.signInForm(problem);
  }

  private shell(api: Api, who: Who): void {
    this.ctx = { api, who, now: () => Date.now() };
    const liveText = h('span', { class: 'live-state', role: 'status' }, LIVE_TEXT.connecting);
    const nav = h(
      'nav',
      { 'aria-label': 'Pages' },
      h('ul', {}, pagesFor(who.role).map((p) => h('li', {}, h('a', { href: `#/${p.id}`, 'data-page': p.id }, p.title)))),
    );
    this.main = h('main', { id: 'main', tabindex: '-1' });
    const header = h(
      'header',
      { class: 'top' },
      h('a', { class: 'brand', href: '#/overview' }, 'keyplane'),
      nav,
      h(
        'div',
        { class: 'who' },
        h('span', { class: 'actor', title: `signed in via ${who.via}` }, `${who.actor} · ${who.role}`),
        ' ',
        liveText,
        ' ',
        h('button', { type: 'button', onclick: () => this.signOut() }, 'Sign out'),
      ),
    );
    replace(this.root, header, this.main);
    this.live = new Live(api, (topics) => this.nudge(topics), (s) => (liveText.textContent = LIVE_TEXT[s]));
    window.addEventListener('hashchange', this.onHash);
    this.show();
    this.live.start();
  }

  private show(): void {
    if (!this.ctx || !this.main) return;
    const id = pageFromHash(location.hash);
    const allowed = pagesFor(this.ctx.who.role).some((p) => p.id === id);
    for (const a of document.querySelectorAll<HTMLAnchorElement>('nav a[data-page]')) {
      if (a.dataset.page === id) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    this.main.replaceChildren();
    const root = h('div', { class: 'page' });
    this.main.append(root);
    // A page the role may not see is still asked for: the API's own refusal (problem+json) is shown.
    this.page = PAGES[id](root, this.ctx);
    void this.page.refresh(['open']);
    document.title = `${allowed ? (pagesFor(this.ctx.who.role).find((p) => p.id === id)?.title ?? '') : 'Not allowed'} · keyplane`;
    // Screen readers and keyboards start at the new page's content.
    this.main.focus({ preventScroll: true });
  }

  /** One refresh at a time; nudges that arrive meanwhile are folded into one more. */
  private nudge(topics: string[]): void {
    const page = this.page;
    if (!page?.live) return;
    if (this.refreshing) {
      this.again = [...(this.again ?? []), ...topics];
      return;
    }
    this.refreshing = page.refresh(topics).finally(() => {
      this.refreshing = undefined;
      const next = this.again;
      this.again = undefined;
      // Also when the page changed meanwhile: the nudges were for whatever is shown now.
      if (next) this.nudge(next);
    });
  }
}
