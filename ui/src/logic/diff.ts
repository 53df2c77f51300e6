/** Lines of a unified diff, by what they do, so that the page can mark each with a sign and a class. */

export type DiffKind = 'add' | 'del' | 'hunk' | 'meta' | 'ctx';

export function diffLines(diff: string): Array<{ kind: DiffKind; text: string }> {
  if (!diff) return [];
  return diff
    .replace(/\n$/, '')
    .split('\n')
    .map((text) => {
      if (text.startsWith('+++') || text.startsWith('---')) return { kind: 'meta' as const, text };
      if (text.startsWith('@@')) return { kind: 'hunk' as const, text };
      if (text.startsWith('+')) return { kind: 'add' as const, text };
      if (text.startsWith('-')) return { kind: 'del' as const, text };
      return { kind: 'ctx' as const, text };
    });
}

export function diffCounts(diff: string): { added: number; removed: number } {
  const lines = diffLines(diff);
  return { added: lines.filter((l) => l.kind === 'add').length, removed: lines.filter((l) => l.kind === 'del').length };
}
