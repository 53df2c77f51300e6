import { h, type Child } from './dom';
import type { StatusLook } from './logic/format';
import type { Problem } from './logic/problem';

/** A state in words with its symbol; the colour (by tone) only repeats what the text says. */
export function badge(look: StatusLook, extra = ''): HTMLElement {
  return h('span', { class: `badge tone-${look.tone}` }, h('span', { 'aria-hidden': 'true' }, look.icon), ' ', look.text + extra);
}

/** An error answer as the API wrote it: title, detail, and the fields it refused. */
export function problemBox(p: Problem): HTMLElement {
  return h(
    'div',
    { class: 'problem', role: 'alert' },
    h('strong', {}, p.title),
    p.status ? ` (${p.status})` : '',
    h('p', {}, p.detail),
    p.errors.length ? h('ul', {}, p.errors.map((e) => h('li', {}, `${e.field}: ${e.rule}`))) : null,
  );
}

export interface Column<T> {
  title: string;
  cell: (row: T) => Child;
  /** A class for the cell (e.g. `num`). */
  class?: string;
}

/**
 * A table whose cells carry their column's name (`data-label`): on a narrow screen the CSS shows
 * each row as a block of labelled lines instead of scrolling sideways.
 */
export function table<T>(caption: string, columns: Array<Column<T>>, rows: T[], rowProps: (row: T) => Record<string, string> = () => ({})): HTMLElement {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { class: 'data' },
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c.title)))),
      h(
        'tbody',
        {},
        rows.length
          ? rows.map((r) => h('tr', rowProps(r), columns.map((c) => h('td', { 'data-label': c.title, class: c.class }, h('div', {}, c.cell(r))))))
          : h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, 'Nothing here yet.')),
      ),
    ),
  );
}

/** A labelled input; every control of the dashboard has a visible label. */
export function field(label: string, input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement, hint?: string): HTMLElement {
  const hintId = hint ? `${input.id}-hint` : undefined;
  if (hintId) input.setAttribute('aria-describedby', hintId);
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, hint ? h('p', { class: 'hint', id: hintId }, hint) : null);
}

let ids = 0;
/** A unique id for a control and its label. */
export function uid(prefix: string): string {
  return `${prefix}-${++ids}`;
}

/**
 * A modal dialog (the browser's own <dialog>: focus stays inside, Escape closes it, focus returns
 * to the button that opened it). The dialog is removed from the page when it closes, with whatever
 * was typed into it.
 */
export function openDialog(title: string, build: (close: () => void) => Child): HTMLDialogElement {
  const headingId = uid('dialog-title');
  const dialog = h('dialog', { 'aria-labelledby': headingId, class: 'dialog' });
  // Removed at once, not on the close event a moment later: a key shown once leaves the page with it.
  const close = (): void => {
    dialog.close();
    dialog.remove();
  };
  dialog.append(h('h2', { id: headingId }, title));
  const body = build(close);
  const holder = h('div', {}, body);
  dialog.append(holder);
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** The page's status line for the outcome of an action (read out by screen readers). */
export function say(region: HTMLElement, text: string, tone: 'ok' | 'bad' = 'ok'): void {
  region.className = `notice tone-${tone}`;
  region.textContent = text;
}
