import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { checkSync } from 'recheck';

/**
 * Issue 8: no regular expression may backtrack super-linearly. Every regex literal in src/ (found
 * with the TypeScript compiler, so none is missed or mistaken for a division) is checked by recheck's
 * automaton checker, which proves a pattern linear or finds an attack string. A RegExp built at run
 * time cannot be checked here, so src/ has none.
 */

const SRC = path.resolve(__dirname, '..', 'src');

interface Found {
  file: string;
  line: number;
  source: string;
  flags: string;
}

function* tsFiles(dir: string): Generator<string> {
  for (const f of readdirSync(dir)) {
    const p = path.join(dir, f);
    if (statSync(p).isDirectory()) yield* tsFiles(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

function scan(): { literals: Found[]; dynamic: string[] } {
  const literals: Found[] = [];
  const dynamic: string[] = [];
  for (const abs of tsFiles(SRC)) {
    const file = path.relative(SRC, abs);
    const sf = ts.createSourceFile(abs, readFileSync(abs, 'utf8'), ts.ScriptTarget.ES2022, true);
    const visit = (node: ts.Node): void => {
      const line = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
      if (node.kind === ts.SyntaxKind.RegularExpressionLiteral) {
        const text = node.getText(sf);
        const end = text.lastIndexOf('/');
        literals.push({ file, line, source: text.slice(1, end), flags: text.slice(end + 1) });
      } else if ((ts.isNewExpression(node) || ts.isCallExpression(node)) && ts.isIdentifier(node.expression) && node.expression.text === 'RegExp') {
        dynamic.push(`${file}:${line}`);
      }
      ts.forEachChild(node, visit);
    };
    visit(sf);
  }
  return { literals, dynamic };
}

describe('regular expressions in src/', () => {
  const { literals, dynamic } = scan();

  it('finds the literals (the scan itself works)', () => {
    expect(literals.length).toBeGreaterThan(40);
    expect(literals.some((l) => l.file === path.join('http', 'validate.ts') && l.source === '^[a-z][a-z0-9_-]{0,62}$')).toBe(true);
  });

  it('builds no RegExp at run time', () => {
    expect(dynamic).toEqual([]);
  });

  it('every one is proven linear', () => {
    const bad: string[] = [];
    for (const l of literals) {
      const r = checkSync(l.source, l.flags, { checker: 'automaton', timeout: 20_000 });
      if (r.status === 'safe') continue;
      const detail = r.status === 'vulnerable' ? `${r.complexity.type}, attack ${r.attack.pattern}` : `${r.status}: ${'error' in r ? JSON.stringify(r.error) : ''}`;
      bad.push(`${l.file}:${l.line} /${l.source}/${l.flags} (${detail})`);
    }
    expect(bad).toEqual([]);
  }, 120_000);

  it('recheck does find the kind of pattern it is here for', () => {
    expect(checkSync('^(a+)+$', '', { checker: 'automaton' }).status).toBe('vulnerable');
    expect(checkSync('\\s*=\\s*(.*)$', '', { checker: 'automaton' }).status).toBe('vulnerable');
  });
});
