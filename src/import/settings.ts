import YAML from 'yaml';
import { ValidationFailed } from '../http/errors';
import { parse } from '../http/validate';
import { envVarProblem, MASTER_KEY_ENV, MASTER_KEY_NAME, SALT_KEY_ENV, SALT_KEY_NAME, keyValueProblem } from '../key-rules';
import { isSecretParam } from '../secret-params';
import { routingBody } from '../features/routing/routing-routes';
import { envRef, pathText, type YamlPath } from './source';
import { keyNameForVar, type Planner } from './planner';

/** What keyplane manages in these sections (from the database); everything else in them is the admin's and is carried. */
const MANAGED: Readonly<Record<string, string>> = { router_settings: 'model_group_alias', litellm_settings: 'fallbacks', general_settings: 'master_key' };
/** Sections imported into the database, never carried. */
const IMPORTED = new Set(['model_list', 'credential_list']);

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

export interface PlannedRouting {
  aliases: Record<string, string>;
  fallbacks: Record<string, string[]>;
  /** The routing document's field -> where it was written. */
  pathOf: (field: string) => YamlPath;
}

/**
 * LiteLLM's master key (general_settings.master_key, or LITELLM_MASTER_KEY in the env file) and
 * salt key become the reserved platform keys, always under their own variables: the rendered
 * config says `master_key: os.environ/LITELLM_MASTER_KEY` whatever variable the old one used.
 */
export function planMasterKey(p: Planner): void {
  const general = p.src?.value.general_settings;
  const at: YamlPath = ['general_settings', 'master_key'];
  const mk = isMap(general) ? general.master_key : undefined;
  if (mk !== undefined && mk !== null) {
    const ref = envRef(mk);
    let found: { value: string; from: { file: string; line?: number; field: string } } | undefined;
    if (ref) {
      const entry = p.env.get(ref.envVar);
      if (entry) {
        p.usedEnv.add(ref.envVar);
        found = { value: entry.value, from: { file: p.envFile, line: entry.line, field: ref.envVar } };
        if (ref.envVar !== MASTER_KEY_ENV) p.notes.push(`general_settings.master_key: the value of ${ref.envVar} is stored as ${MASTER_KEY_NAME} (${MASTER_KEY_ENV})`);
      } else if (!p.ownerOf(ref.envVar)) {
        p.skip(ref.envVar, at, `LiteLLM's master key is not in the env file: LiteLLM runs without authentication until ${MASTER_KEY_NAME} is stored`);
      }
    } else if (typeof mk === 'string') {
      found = { value: mk, from: { file: p.src!.file, line: p.src!.lineOf(at), field: 'general_settings.master_key' } };
      p.notes.push(`general_settings.master_key: written in clear; now stored encrypted as ${MASTER_KEY_NAME}`);
    } else p.problemAt(at, 'must be a string: the key, or os.environ/VAR');
    if (found) {
      const rule = keyValueProblem(found.value) ?? (found.value.startsWith('sk-') ? undefined : "must start with sk-: LiteLLM refuses a master key that does not");
      if (rule) p.problems.push({ ...found.from, rule });
      p.reservedKey(MASTER_KEY_NAME, MASTER_KEY_ENV, found.value, found.from);
    }
  }
  // LiteLLM reads these two from its environment even when the config does not name them.
  for (const [name, envVar] of [[MASTER_KEY_NAME, MASTER_KEY_ENV], [SALT_KEY_NAME, SALT_KEY_ENV]] as const) {
    if (p.env.has(envVar) && !p.keys.has(name)) p.refKey(envVar, ['general_settings'], { name });
    else if (p.env.has(envVar)) p.usedEnv.add(envVar);
  }
}

/** router_settings.model_group_alias and litellm_settings.fallbacks -> keyplane's routing document. */
export function planRouting(p: Planner): PlannedRouting | undefined {
  const doc = p.src?.value ?? {};
  const aliasesAt: YamlPath = ['router_settings', 'model_group_alias'];
  const fallbacksAt: YamlPath = ['litellm_settings', 'fallbacks'];
  const rawAliases = isMap(doc.router_settings) ? doc.router_settings.model_group_alias : undefined;
  const rawFallbacks = isMap(doc.litellm_settings) ? doc.litellm_settings.fallbacks : undefined;
  if (rawAliases == null && rawFallbacks == null) return undefined;
  const aliases: Record<string, unknown> = {};
  if (isMap(rawAliases)) {
    for (const [alias, target] of Object.entries(rawAliases)) {
      // LiteLLM also takes {model, hidden}; keyplane keeps the target.
      if (isMap(target) && typeof target.model === 'string') {
        aliases[alias] = target.model;
        if (target.hidden !== undefined) p.skip(`${pathText([...aliasesAt, alias])}.hidden`, [...aliasesAt, alias], 'keyplane routes the alias but does not keep hidden');
      } else aliases[alias] = target;
    }
  } else if (rawAliases != null) p.problemAt(aliasesAt, 'must be a mapping of alias -> model name');
  const fallbacks: Record<string, unknown> = {};
  const fallbackIndex = new Map<string, number>();
  if (Array.isArray(rawFallbacks)) {
    for (const [i, item] of rawFallbacks.entries()) {
      if (!isMap(item)) {
        p.problemAt([...fallbacksAt, i], 'must be a mapping of model -> [fallback models]');
        continue;
      }
      for (const [from, to] of Object.entries(item)) {
        fallbacks[from] = to;
        fallbackIndex.set(from, i);
      }
    }
  } else if (rawFallbacks != null) p.problemAt(fallbacksAt, 'must be a list of {model: [fallback models]}');
  const pathOf = (field: string): YamlPath => {
    const dot = field.indexOf('.');
    const [head, rest] = dot < 0 ? [field, ''] : [field.slice(0, dot), field.slice(dot + 1)];
    if (head === 'aliases') return rest ? [...aliasesAt, rest] : aliasesAt;
    const i = fallbackIndex.get(rest);
    return i === undefined ? fallbacksAt : [...fallbacksAt, i, rest];
  };
  try {
    const body = parse(routingBody, { aliases, fallbacks });
    return { aliases: body.aliases, fallbacks: body.fallbacks, pathOf };
  } catch (err) {
    if (!(err instanceof ValidationFailed)) throw err;
    for (const e of err.errors) p.problemAt(pathOf(e.field), e.rule);
    return undefined;
  }
}

/** `redis_password` at router_settings.redis_password -> REDIS_PASSWORD (the section left out). */
function envNameFor(path: YamlPath): string {
  let out = '';
  for (const ch of path.slice(1).join('_').toUpperCase()) out += /[A-Z0-9_]/.test(ch) ? ch : '_';
  return /^[A-Z_]/.test(out) ? out : `_${out}`;
}

function hasPassword(v: string): boolean {
  if (!v.includes('://')) return false;
  try {
    return new URL(v).password !== '';
  } catch {
    return false;
  }
}

/**
 * Every top-level section but model_list and credential_list, without what keyplane manages, for
 * the base config (KEYPLANE_BASE_CONFIG). No secret stays in clear: a value under a secret's name
 * (or a URL with a password) becomes a platform key written as os.environ/VAR, and a reference to
 * a credential in the env file imports it. Other references stay, reported: LiteLLM must find them
 * in its own environment.
 */
export function carrySettings(p: Planner): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [section, value] of Object.entries(p.src?.value ?? {})) {
    if (IMPORTED.has(section)) continue;
    let v = value;
    if (isMap(value) && MANAGED[section] !== undefined) {
      const { [MANAGED[section]!]: managed, ...rest } = value;
      // master_key: null turns LiteLLM's auth off on purpose; the base config is where that is said.
      v = section === 'general_settings' && managed === null ? { ...rest, master_key: null } : rest;
    }
    const carried = section === 'environment_variables' && isMap(v) ? carryEnvironment(p, v) : carry(p, v, [section], undefined);
    if (isMap(carried) && Object.keys(carried).length === 0 && isMap(value) && Object.keys(value).length > 0) continue;
    out[section] = carried;
  }
  for (const [path, key] of contained(out, [], p)) {
    p.problemAt(path, `contains the value of platform key ${key.name} in clear: write os.environ/${key.envVar} as the whole value, or keep it in LiteLLM's own environment`);
  }
  return out;
}

/** environment_variables: LiteLLM sets each in its process; a secret one is a platform key under that very name. */
function carryEnvironment(p: Planner, vars: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, v] of Object.entries(vars)) {
    const at: YamlPath = ['environment_variables', name];
    if (typeof v !== 'string' || envRef(v) || !isSecretParam(name, v)) {
      out[name] = carry(p, v, at, name);
      continue;
    }
    const rule = envVarProblem(name, keyNameForVar(name));
    const owner = p.ownerOf(name);
    const planned = owner === undefined ? undefined : p.keys.get(owner);
    if (rule) p.problemAt(at, `holds a secret in clear under a name keyplane refuses for a key (it ${rule}): move it to LiteLLM's own environment`);
    else if (planned && planned.value !== v) p.problemAt(at, `sets ${name}, which platform key ${owner} also sets, to another value`);
    else if (owner && !planned) p.storedKeyValue(owner, name, v, at);
    else if (!owner) {
      const key = p.literalKey(v, at, keyNameForVar(name), [name]);
      if (key && key.envVar !== name) p.problemAt(at, `holds the value of platform key ${key.name}: LiteLLM reads this one as ${name}, so give it its own value`);
    }
  }
  return out;
}

function carry(p: Planner, value: unknown, at: YamlPath, key: string | undefined): unknown {
  if (typeof value === 'string') return carryString(p, value, at, key);
  // A list under a secret's name (api_keys: [...]) holds secrets too.
  if (Array.isArray(value)) return value.map((v, i) => carry(p, v, [...at, i], key));
  if (isMap(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, carry(p, v, [...at, k], k)]));
  return value;
}

function carryString(p: Planner, v: string, at: YamlPath, key: string | undefined): unknown {
  const ref = envRef(v);
  if (ref) {
    const written = `os.environ/${ref.envVar}`;
    if (ref.dollar) p.notes.push(`${pathText(at)}: \${${ref.envVar}} (which LiteLLM does not expand itself) written as ${written}`);
    const credential = key !== undefined && isSecretParam(key, 'a value');
    const rule = envVarProblem(ref.envVar);
    if (p.ownerOf(ref.envVar) || (credential && !rule && p.env.has(ref.envVar))) {
      p.refKey(ref.envVar, at);
    } else if (!p.env.has(ref.envVar)) {
      p.skip(ref.envVar, at, `referenced at ${pathText(at)} but not in the env file: LiteLLM must find it in its own environment`);
    } else {
      p.usedEnv.add(ref.envVar);
      p.skip(ref.envVar, at, credential ? `stays in LiteLLM's own environment: keyplane does not store it as a key (it ${rule})` : `stays in LiteLLM's own environment (${pathText(at)} is no credential)`);
    }
    return written;
  }
  const same = p.keyWithValue(v);
  if (same) {
    p.notes.push(`${pathText(at)}: holds the value of platform key ${same.name}; written as os.environ/${same.envVar}`);
    return `os.environ/${same.envVar}`;
  }
  if ((key !== undefined && isSecretParam(key, v)) || hasPassword(v)) {
    const envVar = envNameFor(at);
    const k = p.literalKey(v, at, keyNameForVar(envVar), [envVar]);
    return k ? `os.environ/${k.envVar}` : undefined;
  }
  if (v.includes('${')) p.notes.push(`${pathText(at)}: LiteLLM does not expand \${...} inside a value; carried as written`);
  return v;
}

/** Every string of `value` that contains a planned key's value (the last check before the base config is written). */
function* contained(value: unknown, at: YamlPath, p: Planner): Generator<[YamlPath, { name: string; envVar: string }]> {
  if (typeof value === 'string') {
    for (const k of p.keys.values()) if (k.value.length >= 8 && value.includes(k.value)) yield [at, k];
  } else if (Array.isArray(value)) for (const [i, v] of value.entries()) yield* contained(v, [...at, i], p);
  else if (isMap(value)) for (const [k, v] of Object.entries(value)) yield* contained(v, [...at, k], p);
}

const BASE_HEADER =
  '# LiteLLM settings carried over by `keyplane import`: point KEYPLANE_BASE_CONFIG at this file.\n' +
  '# keyplane adds model_list, router_settings.model_group_alias, litellm_settings.fallbacks and\n' +
  '# general_settings.master_key from its database. Secrets appear only as os.environ/VAR.\n';

/** The base config file's bytes (the same settings always give the same bytes). */
export function baseConfigText(settings: Record<string, unknown>): string {
  return BASE_HEADER + (Object.keys(settings).length ? YAML.stringify(settings, { lineWidth: 0 }) : '{}\n');
}
