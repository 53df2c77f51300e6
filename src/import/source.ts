import YAML, { isMap, LineCounter, type Document, type Node } from 'yaml';

/** Something the import cannot do, with its place in the file: `file:line: field: rule`. Never holds a value. */
export interface ImportProblem {
  file: string;
  line?: number;
  field: string;
  rule: string;
}

export const describeProblem = (p: ImportProblem): string => `${p.file}${p.line ? `:${p.line}` : ''}: ${p.field}: ${p.rule}`;

/** The import found problems and wrote nothing. The message lists each, one a line. */
export class ImportRefused extends Error {
  readonly problems: ImportProblem[];

  constructor(problems: ImportProblem[]) {
    // One report per place and rule, however many checks found it.
    const unique = [...new Map(problems.map((p) => [describeProblem(p), p])).values()];
    super(`import refused, nothing was imported: ${unique.length} problem(s)\n${unique.map((p) => `  ${describeProblem(p)}`).join('\n')}`);
    this.name = 'ImportRefused';
    this.problems = unique;
  }
}

export type YamlPath = Array<string | number>;

/** `model_list[0].litellm_params.api_key`, as problems and notes name a place. */
export function pathText(path: YamlPath): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

/** A LiteLLM config.yaml, parsed, that can say on which line any of its values sits. */
export class ConfigSource {
  private constructor(
    readonly file: string,
    private readonly doc: Document.Parsed,
    private readonly counter: LineCounter,
    readonly value: Record<string, unknown>,
  ) {}

  /** Parses `text`; every syntax error is a problem with its line (the parser's first line only: the rest quotes the file). */
  static parse(text: string, file: string): { source?: ConfigSource; problems: ImportProblem[] } {
    const counter = new LineCounter();
    const doc = YAML.parseDocument(text, { lineCounter: counter, merge: true, prettyErrors: false, uniqueKeys: true });
    if (doc.errors.length) {
      const problems = doc.errors.map((err) => ({
        file,
        line: err.linePos?.[0]?.line ?? counter.linePos(err.pos[0]).line,
        field: '(yaml)',
        rule: err.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, ''),
      }));
      return { problems };
    }
    if (doc.contents !== null && !isMap(doc.contents)) {
      return { problems: [{ file, line: lineOf(doc.contents as Node, counter), field: '(top level)', rule: 'must be a mapping of LiteLLM settings (model_list, litellm_settings, ...)' }] };
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 1000 });
    } catch (err) {
      return { problems: [{ file, field: '(yaml)', rule: (err as Error).message.split('\n')[0]! }] };
    }
    return { source: new ConfigSource(file, doc, counter, (value ?? {}) as Record<string, unknown>), problems: [] };
  }

  /** The line of the value at `path`, or of the nearest enclosing value that exists. */
  lineOf(path: YamlPath): number | undefined {
    for (let n = path.length; n > 0; n--) {
      const node = this.doc.getIn(path.slice(0, n), true) as Node | undefined;
      const line = lineOf(node, this.counter);
      if (line !== undefined) return line;
    }
    return undefined;
  }

  problem(path: YamlPath, rule: string, field = pathText(path)): ImportProblem {
    return { file: this.file, line: this.lineOf(path), field, rule };
  }
}

function lineOf(node: Node | undefined | null, counter: LineCounter): number | undefined {
  const start = node && typeof node === 'object' ? node.range?.[0] : undefined;
  return start === undefined ? undefined : counter.linePos(start).line;
}

export interface EnvEntry {
  value: string;
  /** 1-based line of the (last) assignment. */
  line: number;
}

/**
 * Reads `VAR=value` lines as systemd and docker do: comments, blank lines, `export ` and surrounding
 * quotes allowed; a variable set twice keeps its last value.
 */
export function readEnvFile(text: string): Map<string, EnvEntry> {
  const out = new Map<string, EnvEntry>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('export ') || line.startsWith('export\t')) line = line.slice('export'.length).trimStart();
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const name = line.slice(0, eq).trimEnd();
    if (!isEnvName(name)) continue;
    let v = line.slice(eq + 1).trimStart();
    if (v.length >= 2 && ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'")))) v = v.slice(1, -1);
    out.delete(name);
    out.set(name, { value: v, line: i + 1 });
  }
  return out;
}

/** `VAR -> value` of an env file (see readEnvFile). */
export function parseEnvFile(text: string): Record<string, string> {
  return Object.fromEntries([...readEnvFile(text)].map(([k, e]) => [k, e.value]));
}

function isEnvName(s: string): boolean {
  if (!s) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const letter = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 95;
    if (!letter && !(i > 0 && c >= 48 && c <= 57)) return false;
  }
  return true;
}

/**
 * The variable a config value refers to: `os.environ/VAR` (LiteLLM's syntax) or a whole `${VAR}`
 * (the envsubst style some teams render their config with; LiteLLM itself does not expand it).
 */
export function envRef(value: unknown): { envVar: string; dollar: boolean } | undefined {
  if (typeof value !== 'string') return undefined;
  if (value.startsWith('os.environ/')) {
    const v = value.slice('os.environ/'.length);
    return isEnvName(v) ? { envVar: v, dollar: false } : undefined;
  }
  if (value.startsWith('${') && value.endsWith('}')) {
    const v = value.slice(2, -1);
    return isEnvName(v) ? { envVar: v, dollar: true } : undefined;
  }
  return undefined;
}
