/**
 * Bounds for free-form JSON that keyplane renders into LiteLLM's config.yaml (a model's
 * litellm_params and model_info). Whatever the API accepts must render, and must load in PyYAML:
 * deep nesting exhausts PyYAML's recursion (and ours), a mapping key longer than 1,024 characters
 * is not a YAML implicit key, and non-finite numbers have no JSON form (they would be stored as null).
 */
export interface JsonBounds {
  /** Containers nested inside one another, the top object counting as 1. */
  depth: number;
  /** Characters of a mapping key. Quoted, a key can grow 6-fold (\uXXXX): keep 6 x this well under 1,024. */
  keyLength: number;
  /** Characters of a string value. */
  stringLength: number;
  /** Entries of one object or array. */
  entries: number;
}

export interface BoundsIssue {
  path: Array<string | number>;
  message: string;
}

const MAX_ISSUES = 10;

/** Every way `value` breaks `b`, with its path (at most 10). Never descends past `b.depth`. */
export function jsonBoundsIssues(value: unknown, b: JsonBounds): BoundsIssue[] {
  const issues: BoundsIssue[] = [];
  const walk = (v: unknown, path: Array<string | number>, depth: number): void => {
    if (issues.length >= MAX_ISSUES) return;
    if (typeof v === 'string') {
      if (v.length > b.stringLength) issues.push({ path, message: `must be at most ${b.stringLength} characters` });
      return;
    }
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) issues.push({ path, message: 'must be a finite number' });
      return;
    }
    if (v === null || typeof v !== 'object') return;
    if (depth > b.depth) {
      issues.push({ path, message: `nests too deep: at most ${b.depth} levels of objects and arrays` });
      return;
    }
    if (Array.isArray(v)) {
      if (v.length > b.entries) issues.push({ path, message: `must have at most ${b.entries} entries` });
      else v.forEach((x, i) => walk(x, [...path, i], depth + 1));
      return;
    }
    const keys = Object.keys(v);
    if (keys.length > b.entries) {
      issues.push({ path, message: `must have at most ${b.entries} entries` });
      return;
    }
    for (const k of keys) {
      if (k.length > b.keyLength) issues.push({ path: [...path, `${k.slice(0, 32)}...`], message: `is a key longer than ${b.keyLength} characters` });
      else walk((v as Record<string, unknown>)[k], [...path, k], depth + 1);
    }
  };
  walk(value, [], 1);
  return issues;
}
