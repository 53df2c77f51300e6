import { readFile } from 'node:fs/promises';
import YAML, { isMap, isSeq, LineCounter, type Document, type Node } from 'yaml';

/** The admin's own LiteLLM settings (KEYPLANE_BASE_CONFIG), parsed and checked to be mergeable. */
export type BaseConfig = Record<string, unknown>;

/** A base config that cannot be used: names the file, the line (when known) and the problem. */
export class BaseConfigError extends Error {
  constructor(readonly file: string, readonly line: number | undefined, readonly problem: string) {
    super(`KEYPLANE_BASE_CONFIG: ${file}${line ? `:${line}` : ''}: ${problem}`);
    this.name = 'BaseConfigError';
  }
}

/** Sections keyplane merges into; each must have the shape LiteLLM gives it, or the merge is refused. */
const SHAPES: Array<{ path: string[]; kind: 'map' | 'seq' }> = [
  { path: ['model_list'], kind: 'seq' },
  { path: ['router_settings'], kind: 'map' },
  { path: ['router_settings', 'model_group_alias'], kind: 'map' },
  { path: ['litellm_settings'], kind: 'map' },
  { path: ['litellm_settings', 'fallbacks'], kind: 'seq' },
  { path: ['general_settings'], kind: 'map' },
];

function lineOf(node: Node | undefined, counter: LineCounter): number | undefined {
  const start = node?.range?.[0];
  return start === undefined ? undefined : counter.linePos(start).line;
}

function check(doc: Document.Parsed, counter: LineCounter, file: string): void {
  if (doc.contents !== null && !isMap(doc.contents)) {
    throw new BaseConfigError(file, lineOf(doc.contents as Node, counter), 'the top level must be a mapping of LiteLLM settings');
  }
  for (const { path, kind } of SHAPES) {
    const node = doc.getIn(path, true) as Node | undefined;
    if (node === undefined || node === null || (YAML.isScalar(node) && node.value === null)) continue;
    const ok = kind === 'map' ? isMap(node) : isSeq(node);
    if (!ok) throw new BaseConfigError(file, lineOf(node, counter), `${path.join('.')} must be a ${kind === 'map' ? 'mapping' : 'list'} for keyplane to merge into it`);
  }
  const list = doc.getIn(['model_list'], true);
  if (isSeq(list)) {
    for (const item of list.items) {
      const node = item as Node;
      if (!isMap(node) || typeof node.get('model_name') !== 'string' || typeof node.getIn(['litellm_params', 'model']) !== 'string') {
        throw new BaseConfigError(file, lineOf(node, counter), 'each model_list entry must be a mapping with model_name and litellm_params.model');
      }
    }
  }
}

/** Parses base config text; every problem is a BaseConfigError with the file and line. */
export function parseBaseConfig(text: string, file: string): BaseConfig {
  const counter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: counter, merge: true, prettyErrors: false, uniqueKeys: true });
  const err = doc.errors[0];
  if (err) {
    // Only the first line of the parser's message: the rest quotes the file, which may hold secrets.
    const line = err.linePos?.[0]?.line ?? counter.linePos(err.pos[0]).line;
    throw new BaseConfigError(file, line, err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, ''));
  }
  check(doc, counter, file);
  const value = doc.toJS({ maxAliasCount: 1000 }) as unknown;
  if (value === null || value === undefined) return {};
  return value as BaseConfig;
}

export async function loadBaseConfig(file: string): Promise<BaseConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new BaseConfigError(file, undefined, `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseBaseConfig(text, file);
}
