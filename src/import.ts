import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import type { Keyplane } from './main';
import { CLI_PRINCIPAL, type RequestContext } from './http/principal';
import { parse } from './http/validate';
import { putKeyBody } from './features/platform-keys/platform-keys-routes';
import { modelBody } from './features/models/models-routes';
import { routingBody } from './features/routing/routing-routes';
import { withTransaction } from './db/pool';
import { appendAudit } from './features/audit/audit-store';
import { envVarProblem, keyValueProblem, MASTER_KEY_ENV, SALT_KEY_ENV } from './key-rules';
import { ValidationFailed, type FieldError } from './http/errors';
import { PAGE_MAX, type PageRequest } from './http/paging';
import type { PlatformKeyView } from './features/platform-keys/platform-keys-service';
import type { ProviderView } from './features/providers/providers-service';
import type { ModelCursor, ModelView } from './features/models/models-service';

/** Reads `VAR=value` lines as systemd and docker do: comments, blank lines, `export ` and surrounding quotes allowed. */
export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    let line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    if (line.startsWith('export ') || line.startsWith('export\t')) line = line.slice('export'.length).trimStart();
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const name = line.slice(0, eq).trimEnd();
    if (!isEnvName(name)) continue;
    let v = line.slice(eq + 1).trimStart();
    if (v.length >= 2 && ((v.startsWith('"') && v.endsWith('"')) || (v.startsWith("'") && v.endsWith("'")))) v = v.slice(1, -1);
    out[name] = v;
  }
  return out;
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

const ENV_REF = /^os\.environ\/([A-Za-z_][A-Za-z0-9_]*)$/;

/** Every page of a keyset-paged list. */
async function all<T, K>(list: (page: PageRequest<K>) => Promise<{ items: T[]; next: K | undefined }>): Promise<T[]> {
  const out: T[] = [];
  let after: K | undefined;
  do {
    const page = await list({ limit: PAGE_MAX, after });
    out.push(...page.items);
    after = page.next;
  } while (after !== undefined);
  return out;
}

/**
 * The key values and env vars the import would store that the API would refuse: values no env
 * file reader takes literally, env vars that steer LiteLLM's process. Named by variable or by
 * config path, never by value.
 */
function keyProblems(doc: Record<string, unknown>, env: Record<string, string>, existingKeys: Map<string, string>): FieldError[] {
  const problems: FieldError[] = [];
  const check = (ref: unknown, where: string): void => {
    if (typeof ref !== 'string' || !ref) return;
    const m = ENV_REF.exec(ref);
    if (!m) {
      const rule = keyValueProblem(ref);
      if (rule) problems.push({ field: where, rule });
      return;
    }
    const envVar = m[1]!;
    const envRule = envVarProblem(envVar, existingKeys.get(envVar) ?? keyNameForVar(envVar));
    if (envRule) problems.push({ field: `${where} (${envVar})`, rule: `cannot be a platform key's env var: it ${envRule}` });
    const value = env[envVar];
    const valueRule = value === undefined ? undefined : keyValueProblem(value);
    if (valueRule) problems.push({ field: `${envVar} (env file)`, rule: valueRule });
  };
  check(((doc.general_settings ?? {}) as Record<string, unknown>).master_key, 'general_settings.master_key');
  for (const v of [MASTER_KEY_ENV, SALT_KEY_ENV]) if (env[v]) check(`os.environ/${v}`, v);
  for (const [i, entry] of ((doc.model_list ?? []) as Array<Record<string, unknown>>).entries()) {
    check(((entry?.litellm_params ?? {}) as Record<string, unknown>).api_key, `model_list[${i}].litellm_params.api_key`);
  }
  // One report per field: a variable used by several models is named once.
  return [...new Map(problems.map((p) => [`${p.field}\u0000${p.rule}`, p])).values()];
}

/** OPENROUTER_API_KEY -> openrouter; LITELLM_MASTER_KEY -> litellm_master_key. */
export function keyNameForVar(v: string): string {
  const lower = v.toLowerCase();
  const base = lower.endsWith('_api_key') ? lower.slice(0, -'_api_key'.length) : lower;
  return /^[a-z]/.test(base) ? base.slice(0, 63) : `k_${base}`.slice(0, 63);
}

export interface ImportSummary {
  keys: string[];
  providers: string[];
  models: number;
  models_skipped: number;
  routing: boolean;
  warnings: string[];
}

/**
 * Imports an existing LiteLLM setup: every `os.environ/VAR` key (value from the env file) becomes a
 * platform key, every deployment a model of a provider with that kind and key, aliases and fallbacks
 * the routing document. Running it twice adds nothing twice.
 */
export async function importLitellm(kp: Keyplane, files: { configFile?: string; envFile?: string }): Promise<ImportSummary> {
  const ctx: RequestContext = { principal: CLI_PRINCIPAL, requestId: `import-${Date.now()}` };
  const env = files.envFile ? parseEnvFile(readFileSync(files.envFile, 'utf8')) : {};
  const doc = files.configFile ? ((YAML.parse(readFileSync(files.configFile, 'utf8')) ?? {}) as Record<string, unknown>) : {};
  const summary: ImportSummary = { keys: [], providers: [], models: 0, models_skipped: 0, routing: false, warnings: [] };
  const existingKeys = new Map((await all<PlatformKeyView, string>((page) => kp.platformKeys.list(page))).map((k) => [k.env_var, k.name]));
  // Every key value and env var is checked before anything is written: an import is refused whole.
  const problems = keyProblems(doc, env, existingKeys);
  if (problems.length) throw new ValidationFailed(problems);

  const importKey = async (ref: unknown, fallbackName: string): Promise<string | undefined> => {
    let value: string | undefined;
    let envVar: string | undefined;
    let name = fallbackName;
    const m = typeof ref === 'string' ? ENV_REF.exec(ref) : null;
    if (m) {
      envVar = m[1]!;
      value = env[envVar];
      name = existingKeys.get(envVar) ?? keyNameForVar(envVar);
      if (value === undefined) {
        if (existingKeys.has(envVar)) return existingKeys.get(envVar);
        summary.warnings.push(`${envVar} is referenced but not in the env file; not imported`);
        return undefined;
      }
    } else if (typeof ref === 'string' && ref) {
      value = ref;
      summary.warnings.push(`a raw key for ${fallbackName} was found in the config; it is now stored encrypted`);
    } else {
      return undefined;
    }
    const body = parse(putKeyBody, { api_key: value, ...(envVar ? { env_var: envVar } : {}) }, envVar ?? name);
    const current = (await kp.platformKeys.currentSecrets()).find((k) => k.name === name);
    if (current?.value !== body.api_key) await kp.platformKeys.put(name, body, ctx);
    existingKeys.set(envVar ?? (await kp.platformKeys.get(name)).env_var, name);
    if (!summary.keys.includes(name)) summary.keys.push(name);
    return name;
  };

  const general = (doc.general_settings ?? {}) as Record<string, unknown>;
  if (general.master_key) await importKey(general.master_key, 'litellm_master_key');
  for (const v of [MASTER_KEY_ENV, SALT_KEY_ENV]) if (env[v] && !existingKeys.has(v)) await importKey(`os.environ/${v}`, keyNameForVar(v));

  const providers = await all<ProviderView, string>((page) => kp.providers.list(page));
  const existingModels = await all<ModelView, ModelCursor>((page) => kp.models.list({}, page));
  for (const [i, entry] of ((doc.model_list ?? []) as Array<Record<string, unknown>>).entries()) {
    const lp = { ...((entry.litellm_params ?? {}) as Record<string, unknown>) };
    const full = String(lp.model ?? '');
    const slash = full.indexOf('/');
    if (slash <= 0) {
      summary.warnings.push(`model_list[${i}] (${String(entry.model_name)}): model "${full}" has no provider prefix; skipped`);
      continue;
    }
    const kind = full.slice(0, slash);
    const upstream = full.slice(slash + 1);
    const keyName = await importKey(lp.api_key, kind.replace(/_ai$/, ''));
    let provider = providers.find((p) => p.kind === kind && (!keyName || p.key_name === keyName));
    if (!provider) {
      const slug = (keyName && !providers.some((p) => p.slug === keyName) ? keyName : `${kind}-${keyName ?? 'nokey'}`).replace(/_/g, '-').slice(0, 63);
      provider = (await kp.providers.put(slug, { kind, key_name: keyName ?? slug }, ctx)).view;
      providers.push(provider);
      summary.providers.push(slug);
    }
    const { model: _m, api_key: _k, api_base, rpm, tpm, ...rest } = lp;
    const input = parse(
      modelBody,
      {
        model_name: entry.model_name,
        provider: provider.slug,
        model: upstream,
        ...(api_base ? { api_base } : {}),
        ...(rpm != null ? { rpm: Number(rpm) } : {}),
        ...(tpm != null ? { tpm: Number(tpm) } : {}),
        litellm_params: rest,
        model_info: (entry.model_info ?? {}) as Record<string, unknown>,
      },
      `model_list[${i}]`,
    );
    if (existingModels.some((m) => m.model_name === input.model_name && m.provider === input.provider && m.model === input.model)) {
      summary.models_skipped++;
      continue;
    }
    existingModels.push(await kp.models.create(input, ctx));
    summary.models++;
  }

  const aliases = ((doc.router_settings ?? {}) as Record<string, unknown>).model_group_alias as Record<string, unknown> | undefined;
  const fallbackList = ((doc.litellm_settings ?? {}) as Record<string, unknown>).fallbacks as Array<Record<string, string[]>> | undefined;
  if (aliases || fallbackList) {
    const routing = parse(routingBody, {
      aliases: Object.fromEntries(Object.entries(aliases ?? {}).map(([k, v]) => [k, typeof v === 'object' && v ? String((v as { model?: string }).model) : String(v)])),
      fallbacks: Object.assign({}, ...(fallbackList ?? [])),
    });
    await withTransaction(kp.pool, async (c) => {
      await c.query('UPDATE routing SET aliases = $1, fallbacks = $2, version = version + 1, updated_at = now() WHERE id = 1', [routing.aliases, routing.fallbacks]);
      await appendAudit(c, { actor: ctx.principal.actor, action: 'routing.import', target: 'routing', requestId: ctx.requestId });
    });
    summary.routing = true;
  }
  return summary;
}
