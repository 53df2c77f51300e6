import { defaultEnvVar } from '../features/platform-keys/platform-keys-service';
import { NAME_RE } from '../http/validate';
import { envVarProblem, isReservedKey, keyValueProblem } from '../key-rules';
import { pathText, type ConfigSource, type EnvEntry, type ImportProblem, type YamlPath } from './source';

/** A platform key the import stores (or finds unchanged), with where its value came from. */
export interface PlannedKey {
  name: string;
  envVar: string;
  value: string;
  from: { file: string; line?: number; field: string };
}

/** Something the import left out, and why (names only, never a value). */
export interface Skipped {
  what: string;
  where?: string;
  why: string;
}

/** What is already stored, read inside the import's transaction. */
export interface ExistingState {
  keys: Array<{ name: string; env_var: string; value: string }>;
  providers: Array<{ slug: string; kind: string; key_name: string; api_base: string | null }>;
}

/** OPENROUTER_API_KEY -> openrouter; LITELLM_MASTER_KEY -> litellm_master_key. */
export function keyNameForVar(v: string): string {
  const lower = v.toLowerCase();
  const base = lower.endsWith('_api_key') ? lower.slice(0, -'_api_key'.length) : lower;
  return /^[a-z]/.test(base) ? base.slice(0, 63) : `k_${base}`.slice(0, 63);
}

/** Any name -> a platform key or provider name (`^[a-z][a-z0-9_-]{0,62}$`): `Azure EU` -> `azure-eu`. */
export function toName(raw: string): string {
  let out = '';
  for (const ch of raw.toLowerCase()) out += /[a-z0-9_-]/.test(ch) ? ch : '-';
  if (!/^[a-z]/.test(out)) out = `k-${out}`;
  return out.slice(0, 63);
}

/**
 * The import's bookkeeping while it reads the files: which platform keys it will store (one per env
 * var, one per value written in clear), which names are taken, what it skipped and every problem.
 * Nothing here writes; the plan is applied in one transaction afterwards.
 */
export class Planner {
  readonly problems: ImportProblem[] = [];
  readonly skipped: Skipped[] = [];
  readonly notes: string[] = [];
  readonly keys = new Map<string, PlannedKey>();
  /** Env vars whose value the import used (the rest of the env file is reported as not imported). */
  readonly usedEnv = new Set<string>();
  private readonly envOwner = new Map<string, string>();
  private readonly existingByName = new Map<string, { env_var: string; value: string }>();

  constructor(
    readonly src: ConfigSource | undefined,
    readonly env: Map<string, EnvEntry>,
    readonly envFile: string,
    readonly existing: ExistingState,
  ) {
    for (const k of existing.keys) {
      this.envOwner.set(k.env_var, k.name);
      this.existingByName.set(k.name, { env_var: k.env_var, value: k.value });
    }
  }

  problemAt(path: YamlPath, rule: string, field = pathText(path)): void {
    this.problems.push(this.src ? this.src.problem(path, rule, field) : { file: '(config)', field, rule });
  }

  where(path: YamlPath): string | undefined {
    const line = this.src?.lineOf(path);
    return this.src ? `${this.src.file}${line ? `:${line}` : ''}` : undefined;
  }

  skip(what: string, path: YamlPath | undefined, why: string): void {
    this.skipped.push({ what, ...(path && this.where(path) ? { where: this.where(path) } : {}), why });
  }

  /** The platform key that owns `envVar` (stored already or planned), if any. */
  ownerOf(envVar: string): string | undefined {
    return this.envOwner.get(envVar);
  }

  /** A planned key holding exactly `value` (8+ characters), to reference instead of writing it in clear. */
  keyWithValue(value: string): PlannedKey | undefined {
    if (value.length < 8) return undefined;
    for (const k of this.keys.values()) if (k.value === value) return k;
    return undefined;
  }

  /** A name no stored or planned key has: `base`, else `base-2`, `base-3`, ... */
  private freeName(base: string): string {
    const name = toName(base);
    const taken = (n: string): boolean => this.existingByName.has(n) || this.keys.has(n);
    if (!taken(name)) return name;
    for (let i = 2; ; i++) {
      const candidate = `${name.slice(0, 60)}-${i}`;
      if (!taken(candidate)) return candidate;
    }
  }

  private plan(name: string, envVar: string, value: string, from: PlannedKey['from']): void {
    this.keys.set(name, { name, envVar, value, from });
    this.envOwner.set(envVar, name);
  }

  /**
   * The platform key for `os.environ/VAR` at `at`: the key that already owns VAR, else a new one
   * named after VAR (or `name`) holding the env file's value. Undefined when the env file lacks VAR
   * (reported as skipped) or the key would break a rule (reported as a problem).
   */
  refKey(envVar: string, at: YamlPath, opts: { name?: string } = {}): string | undefined {
    const entry = this.env.get(envVar);
    const owner = this.envOwner.get(envVar);
    if (entry) this.usedEnv.add(envVar);
    if (owner) {
      if (entry && !this.keys.has(owner)) this.planValue(owner, envVar, entry);
      return owner;
    }
    if (!entry) {
      this.skip(envVar, at, `referenced at ${pathText(at)} but not in the env file: not imported (store it as platform key ${opts.name ?? keyNameForVar(envVar)} later)`);
      return undefined;
    }
    const name = this.freeName(opts.name ?? keyNameForVar(envVar));
    const rule = envVarProblem(envVar, name);
    if (rule) {
      this.problemAt(at, `cannot be a platform key's env var: it ${rule}`, `${pathText(at)} (${envVar})`);
      return undefined;
    }
    this.planValue(name, envVar, entry);
    return name;
  }

  private planValue(name: string, envVar: string, entry: EnvEntry): void {
    const rule = keyValueProblem(entry.value);
    if (rule) this.problems.push({ file: this.envFile, line: entry.line, field: envVar, rule });
    this.plan(name, envVar, entry.value, { file: this.envFile, line: entry.line, field: envVar });
  }

  /**
   * The platform key for a key written in clear at `at`: one already holding the value, else a new
   * one named `base` with the first of `envVars` (default: `<NAME>_API_KEY`) that is free and allowed.
   */
  literalKey(value: string, at: YamlPath, base: string, envVars?: string[]): { name: string; envVar: string } | undefined {
    const rule = keyValueProblem(value);
    if (rule) {
      this.problemAt(at, `holds a secret in clear that cannot be a platform key (${rule}): keep it in LiteLLM's own environment and write os.environ/VAR here`);
      return undefined;
    }
    const planned = this.keyWithValue(value);
    if (planned) return { name: planned.name, envVar: planned.envVar };
    const from = { file: this.src?.file ?? '(config)', line: this.src?.lineOf(at), field: pathText(at) };
    const stored = this.existing.keys.find((k) => k.value === value && !this.keys.has(k.name));
    if (stored) {
      this.plan(stored.name, stored.env_var, value, from);
      return { name: stored.name, envVar: stored.env_var };
    }
    const name = this.freeName(base);
    const candidates = envVars ?? [defaultEnvVar(name)];
    const envVar = [...candidates, ...candidates.map((v) => `KP_${v}`)].find((v) => !this.envOwner.has(v) && !envVarProblem(v, name));
    if (!envVar) {
      const why = envVarProblem(candidates[0]!, name) ?? 'is already used by another key';
      this.problemAt(at, `holds a secret in clear; the env var keyplane would store it under (${candidates[0]}) ${why}`);
      return undefined;
    }
    this.plan(name, envVar, value, from);
    this.notes.push(`${pathText(at)}: a secret written in clear is now platform key ${name} (${envVar}), referenced as os.environ/${envVar}`);
    return { name, envVar };
  }

  /** A new value, written in clear at `at`, for the stored key `name` (a new version unless it is the same). */
  storedKeyValue(name: string, envVar: string, value: string, at: YamlPath): void {
    const rule = keyValueProblem(value);
    if (rule) this.problemAt(at, `holds a secret in clear that cannot be a platform key (${rule})`);
    this.plan(name, envVar, value, { file: this.src?.file ?? '(config)', line: this.src?.lineOf(at), field: pathText(at) });
  }

  /** Stores a reserved key (LiteLLM's master or salt key) under its own name and variable, whatever variable the config used. */
  reservedKey(name: string, envVar: string, value: string, from: PlannedKey['from']): void {
    this.plan(name, envVar, value, from);
  }

  /** Whether `name` may be a provider's key: LiteLLM's own keys never are. */
  providerKeyProblem(name: string): string | undefined {
    return isReservedKey(name) ? `${name} is LiteLLM's own key and is never sent to a provider` : undefined;
  }

  /** A provider slug nobody has: `base`, else `<base>-2`, ... (`health` is reserved). */
  freeSlug(base: string, taken: (slug: string) => boolean): string {
    const name = toName(base).replace(/_/g, '-');
    const free = (s: string): boolean => s !== 'health' && NAME_RE.test(s) && !taken(s);
    if (free(name)) return name;
    for (let i = 2; ; i++) {
      const candidate = `${name.slice(0, 60)}-${i}`;
      if (free(candidate)) return candidate;
    }
  }
}
