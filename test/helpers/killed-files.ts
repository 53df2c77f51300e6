import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Pool } from '../../src/db/pool';
import { CONFIG_FILE, ENV_FILE } from '../../src/sync/writer';
import { parseSystemdEnvFile } from './env-readers';
import { loadWithPyYaml } from './pyyaml';

export const sha256 = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

/** What is on disk: config.yaml by SHA-256, litellm.env by the keyed digest revisions record; null when missing. */
export interface Pair {
  config: string | null;
  env: string | null;
}

export interface Revision {
  revision: number;
  config: string;
  env: string;
  instance: string;
}

export interface Observed {
  pair: Pair;
  config: Buffer | null;
  env: Buffer | null;
}

/** Where a kill left the files: no revision of the instance, before its last swap, between that swap's two renames, after it. */
export type Cut = 'none' | 'before-swap' | 'mid-swap' | 'done';

export const samePair = (a: Pair, b: Pair): boolean => a.config === b.config && a.env === b.env;
const show = (p: Pair): string => `config ${p.config?.slice(0, 12) ?? '(missing)'} / env ${p.env?.slice(-12) ?? '(missing)'}`;

/** LiteLLM's two files in `dir`, checked against the revisions recorded in the database after a keyplane instance was killed. */
export class KilledFiles {
  private readonly parsedConfigs = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly pool: Pool,
    /** The keyed digest revisions record for litellm.env (the fingerprinter's). */
    private readonly digest: (text: string) => string,
  ) {}

  read(name: string): Buffer | null {
    try {
      return readFileSync(path.join(this.dir, name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  observe(): Observed {
    const config = this.read(CONFIG_FILE);
    const env = this.read(ENV_FILE);
    return { pair: { config: config && sha256(config), env: env && this.digest(env.toString('utf8')) }, config, env };
  }

  async revisions(): Promise<Revision[]> {
    const { rows } = await this.pool.query('SELECT revision, config_sha256, env_digest, instance_id FROM sync_revisions ORDER BY revision');
    return rows.map((r) => ({ revision: Number(r.revision), config: r.config_sha256, env: r.env_digest, instance: r.instance_id }));
  }

  /** config.yaml as LiteLLM loads it (PyYAML), litellm.env line by line and as systemd reads it. Throws what does not parse. */
  checkParses(o: Observed): void {
    if (o.config && !this.parsedConfigs.has(o.pair.config!)) {
      const doc = loadWithPyYaml(path.join(this.dir, CONFIG_FILE)) as { model_list?: unknown };
      if (typeof doc !== 'object' || doc === null || !Array.isArray(doc.model_list)) throw new Error(`config.yaml loads, but not as a config with a model_list: ${JSON.stringify(doc).slice(0, 200)}`);
      this.parsedConfigs.add(o.pair.config!);
    }
    if (o.env) {
      const text = o.env.toString('utf8');
      if (!text.endsWith('\n')) throw new Error('litellm.env does not end with a newline (cut short?)');
      const vars: Record<string, string> = {};
      for (const line of text.slice(0, -1).split('\n')) {
        if (line.startsWith('#')) continue;
        const eq = line.indexOf('=');
        const name = line.slice(0, eq);
        if (eq < 1 || !/^[A-Z_][A-Z0-9_]*$/.test(name) || !/^[A-Za-z0-9_.+/=:@,-]+$/.test(line.slice(eq + 1))) throw new Error(`litellm.env has a line that is not VAR=key: ${line.slice(0, 40)}`);
        vars[name] = line.slice(eq + 1);
      }
      const systemd = parseSystemdEnvFile(text);
      if (JSON.stringify(systemd) !== JSON.stringify(vars)) throw new Error(`systemd reads litellm.env as other variables: ${Object.keys(systemd).join(', ')} for ${Object.keys(vars).join(', ')}`);
    }
  }

  /**
   * The files after `instance` was killed; `start` is what was on disk when it started (what the
   * check of the kill before saw). Both parse, and each is a file of some recorded revision. The
   * pair is exact: an instance writes its revisions one after the other, each recorded before its
   * swap, so only its last one can have been cut. The pair is therefore the files before that last
   * revision (cut before the swap), its config.yaml with the previous litellm.env (cut between the
   * two renames: config.yaml goes first), or that revision whole. With no revision of its own, the
   * instance changed nothing.
   */
  async afterKill(where: string, instance: string, start: Pair): Promise<{ pair: Pair; cut: Cut }> {
    const o = this.observe();
    try {
      this.checkParses(o);
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}`);
    }
    const all = await this.revisions();
    if (o.pair.config !== null && !all.some((r) => r.config === o.pair.config)) throw new Error(`${where}: config.yaml (${show(o.pair)}) is no recorded revision's`);
    if (o.pair.env !== null && !all.some((r) => r.env === o.pair.env)) throw new Error(`${where}: litellm.env (${show(o.pair)}) is no recorded revision's`);
    const mine = all.filter((r) => r.instance === instance);
    const last = mine.at(-1);
    if (!last) {
      if (!samePair(o.pair, start)) throw new Error(`${where}: it recorded no revision, yet the files changed from ${show(start)} to ${show(o.pair)}`);
      return { pair: o.pair, cut: 'none' };
    }
    const prior: Pair = mine.length >= 2 ? mine.at(-2)! : start;
    const done: Pair = { config: last.config, env: last.env };
    const mid: Pair = { config: last.config, env: prior.env };
    if (samePair(o.pair, done)) return { pair: o.pair, cut: 'done' };
    if (samePair(o.pair, prior)) return { pair: o.pair, cut: 'before-swap' };
    if (samePair(o.pair, mid)) return { pair: o.pair, cut: 'mid-swap' };
    throw new Error(
      `${where}: the files (${show(o.pair)}) are neither revision ${last.revision} (${show(done)}), nor the files before it (${show(prior)}), ` +
        `nor its config.yaml with the previous litellm.env; revisions of this instance: ${mine.map((r) => r.revision).join(', ')}`,
    );
  }
}
