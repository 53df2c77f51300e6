import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Pool } from './db/pool';
import { scopedPool, withTransaction } from './db/pool';
import type { Keyring } from './crypto/keyring';
import { loadFingerprinter } from './crypto/secret-tables';
import { CLI_PRINCIPAL, type RequestContext } from './http/principal';
import { PAGE_MAX, type PageRequest } from './http/paging';
import { appendAudit } from './features/audit/audit-store';
import { PlatformKeysService } from './features/platform-keys/platform-keys-service';
import { ProvidersService, type ProviderView } from './features/providers/providers-service';
import { ModelsService, type ModelCursor, type ModelView } from './features/models/models-service';
import { DestinationsService } from './features/destinations/destinations-service';
import { parseBaseConfig } from './sync/base-config';
import { ConfigSource, ImportRefused, readEnvFile, type EnvEntry, type ImportProblem } from './import/source';
import { Planner, type Skipped } from './import/planner';
import { planDeployments } from './import/deployments';
import { baseConfigText, carrySettings, planMasterKey, planRouting } from './import/settings';
import { applyPlan } from './import/apply';
import { envVarProblem } from './key-rules';

export { parseEnvFile, ImportRefused, type ImportProblem } from './import/source';
export { keyNameForVar } from './import/planner';

export interface ImportFiles {
  /** LiteLLM's config.yaml. */
  configFile?: string;
  /** The env file LiteLLM runs with (`VAR=value` lines). */
  envFile?: string;
  /** Where to write the settings keyplane does not manage, as a base config (KEYPLANE_BASE_CONFIG). */
  baseOut?: string;
}

export interface ImportSummary {
  /** Every platform key the files map to (stored now, or found unchanged). */
  keys: string[];
  /** The keys stored now (new, or a new version). */
  keys_written: string[];
  /** Providers created. */
  providers: string[];
  /** Deployments created / already there. */
  models: number;
  models_skipped: number;
  routing: boolean;
  /** The base config written (or already up to date), if any. */
  base_config: string | null;
  /** What was not imported, and why. */
  skipped: Skipped[];
  /** How things were mapped (a key found in clear, a variable renamed, ...). */
  notes: string[];
}

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

function readText(file: string, problems: ImportProblem[]): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    problems.push({ file, field: '(file)', rule: `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` });
    return undefined;
  }
}

/**
 * Imports an existing LiteLLM setup in one transaction, as an admin: every key (referenced from the
 * env file, written in clear, or a named credential's) becomes a platform key, every deployment a
 * model of a provider bound to its key, aliases and fallbacks the routing document, and the settings
 * keyplane does not manage a base config written to `baseOut` (secrets only as os.environ/VAR).
 * Every problem is reported with its file and line, and then nothing is imported. Running it twice
 * adds nothing twice.
 */
export async function importLitellm(kp: { pool: Pool; keyring: Keyring }, files: ImportFiles): Promise<ImportSummary> {
  const ctx: RequestContext = { principal: CLI_PRINCIPAL, requestId: `import-${Date.now()}` };
  const problems: ImportProblem[] = [];
  const configText = files.configFile === undefined ? undefined : readText(files.configFile, problems);
  const envText = files.envFile === undefined ? undefined : readText(files.envFile, problems);
  const parsed = configText === undefined ? { problems: [] } : ConfigSource.parse(configText, files.configFile!);
  problems.push(...parsed.problems);
  if (problems.length) throw new ImportRefused(problems);
  const env = envText === undefined ? new Map<string, EnvEntry>() : readEnvFile(envText);

  const fingerprints = await loadFingerprinter(kp.pool, kp.keyring);
  let staged: string | undefined;
  try {
    const summary = await withTransaction(kp.pool, async (client) => {
      // A retried transaction stages the file again.
      if (staged) rmSync(staged, { force: true });
      staged = undefined;
      const scope = scopedPool(client);
      const destinations = new DestinationsService(scope);
      const svc = {
        keys: new PlatformKeysService(scope, kp.keyring, fingerprints),
        providers: new ProvidersService(scope, destinations),
        models: new ModelsService(scope, destinations, fingerprints),
      };
      const existing = {
        keys: (await svc.keys.currentSecrets(client)).map((k) => ({ name: k.name, env_var: k.env_var, value: k.value })),
        providers: await all<ProviderView, string>((page) => svc.providers.list(page)),
        models: await all<ModelView, ModelCursor>((page) => svc.models.list({}, page)),
      };
      const p = new Planner(parsed.source, env, files.envFile ?? '(env)', existing);
      planMasterKey(p);
      const { providers, models } = planDeployments(p);
      const routing = planRouting(p);
      const base = carrySettings(p);
      reportUnusedEnv(p);
      const baseText = baseOutput(p, base, files.baseOut);
      if (p.problems.length) throw new ImportRefused(p.problems);

      const applied = await applyPlan(p, { keys: [...p.keys.values()], providers, models, routing }, svc, client, existing, ctx);
      if (p.problems.length) throw new ImportRefused(p.problems);
      if (baseText !== undefined && files.baseOut) staged = stage(files.baseOut, baseText);
      await appendAudit(client, {
        actor: ctx.principal.actor,
        action: 'import.litellm',
        target: 'import',
        requestId: ctx.requestId,
        details: { keys_written: applied.keysWritten.length, providers: applied.providers.length, models: applied.models, routing: applied.routing, base_config: baseText !== undefined },
      });
      return {
        keys: [...p.keys.keys()],
        keys_written: applied.keysWritten,
        providers: applied.providers,
        models: applied.models,
        models_skipped: applied.modelsSkipped,
        routing: applied.routing,
        base_config: baseText !== undefined && files.baseOut ? path.resolve(files.baseOut) : null,
        skipped: p.skipped,
        notes: p.notes,
      } satisfies ImportSummary;
    });
    // Committed: the base config takes its place (rename, atomic); it names only references.
    if (staged) renameSync(staged, files.baseOut!);
    staged = undefined;
    return summary;
  } finally {
    if (staged) rmSync(staged, { force: true });
  }
}

/** Env file variables nothing in the config used: named (never their values) with what becomes of them. */
function reportUnusedEnv(p: Planner): void {
  for (const [name, entry] of p.env) {
    if (p.usedEnv.has(name)) continue;
    const rule = envVarProblem(name);
    p.skipped.push({
      what: name,
      where: `${p.envFile}:${entry.line}`,
      why: rule ? `not referenced by the config; stays in LiteLLM's own environment (keyplane does not manage it: it ${rule})` : 'not referenced by the config: not imported',
    });
  }
}

/**
 * The base config's bytes, or undefined when there is nothing to carry and no file was asked for.
 * Settings with nowhere to go, and a file that exists with other content, are problems.
 */
function baseOutput(p: Planner, base: Record<string, unknown>, baseOut: string | undefined): string | undefined {
  const sections = Object.keys(base);
  if (!baseOut) {
    if (sections.length) p.problemAt([sections[0]!], `settings keyplane does not manage (${sections.join(', ')}) need a place: give --base-out FILE and point KEYPLANE_BASE_CONFIG at it`, sections.join(', '));
    return undefined;
  }
  const text = baseConfigText(base);
  try {
    parseBaseConfig(text, baseOut);
  } catch (err) {
    p.problems.push({ file: baseOut, field: '--base-out', rule: `would not be a usable base config: ${(err as Error).message}` });
  }
  let current: string | undefined;
  try {
    current = readFileSync(baseOut, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') p.problems.push({ file: baseOut, field: '--base-out', rule: `cannot be read (${(err as NodeJS.ErrnoException).code})` });
  }
  if (current !== undefined && current !== text) {
    p.problems.push({ file: baseOut, field: '--base-out', rule: 'exists with other content: keyplane does not overwrite it; remove it or name another file' });
  }
  return text;
}

/** Writes the base config next to its final name (synced), to be renamed into place once the transaction commits. */
function stage(file: string, text: string): string {
  const tmp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.kp-import-${randomBytes(4).toString('hex')}`);
  const fd = openSync(tmp, 'wx', 0o644);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return tmp;
}
