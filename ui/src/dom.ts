import { attrProblem } from './logic/safe-attr';

/**
 * The only way the dashboard builds its page: elements from names, attributes through one gate
 * (logic/safe-attr.ts), and every piece of data as a text node. Nothing here parses HTML.
 */

export type Child = Node | string | number | null | undefined | false | Child[];
type Handler = (ev: Event) => void;
export type Props = Record<string, string | number | boolean | null | undefined | Handler>;

function apply(el: Element, props: Props): void {
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (typeof value === 'function') {
      if (!name.startsWith('on')) throw new Error(`${name}: only event handlers may be functions`);
      el.addEventListener(name.slice(2).toLowerCase(), value);
      continue;
    }
    const text = value === true ? '' : String(value);
    const problem = attrProblem(name, text);
    if (problem) throw new Error(problem);
    el.setAttribute(name, text);
  }
}

function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  apply(el, props);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

export function svg<K extends keyof SVGElementTagNameMap>(tag: K, props: Props = {}, ...children: Child[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag) as SVGElementTagNameMap[K];
  apply(el, props);
  append(el, children);
  return el;
}

/**
 * Replaces a region's content, keeping the keyboard where it was: the focused element's
 * `data-focus` key is looked for in the new content and focused again.
 */
export function replace(region: Element, ...children: Child[]): void {
  const active = document.activeElement;
  const key = active instanceof HTMLElement && region.contains(active) ? active.dataset.focus : undefined;
  region.replaceChildren();
  append(region, children);
  if (key) {
    const again = [...region.querySelectorAll<HTMLElement>('[data-focus]')].find((e) => e.dataset.focus === key);
    again?.focus();
  }
}
