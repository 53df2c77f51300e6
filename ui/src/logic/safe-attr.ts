/**
 * The one gate every attribute the dashboard sets goes through (dom.ts). Text is always set as
 * text; an attribute could still run script (`onclick="..."`, `href="javascript:..."`) or style a
 * page against the policy, so those are refused outright, whatever the value's origin.
 */

const URL_ATTRS = new Set(['href', 'src', 'action', 'formaction', 'xlink:href']);

export function attrProblem(name: string, value: string): string | undefined {
  const n = name.toLowerCase();
  if (n.startsWith('on')) return `${name}: event handlers are attached with addEventListener, never as attributes`;
  if (n === 'style' || n === 'srcdoc') return `${name}: not allowed (the Content-Security-Policy forbids inline styles and documents)`;
  // Only links inside the dashboard: its own hash routes and paths on this server.
  if (URL_ATTRS.has(n) && !/^(#|\/(?!\/)|\.\/)/.test(value)) return `${name}: only links within keyplane (#..., /..., ./...)`;
  return undefined;
}
