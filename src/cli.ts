import { parseArgs } from 'node:util';
import { accessSync, constants, mkdirSync } from 'node:fs';
import { ConfigError, describeSettings, loadSettings, type Settings } from './config';
import { createLogger, SecretRegistry, type Logger } from './log';
import { Keyring, MissingMasterKeyError } from './crypto/keyring';
import { rewrapAll } from './crypto/secret-tables';
import { createKeyplane, openStore, stopAll, type Keyplane } from './main';
import { TokensStore } from './features/tokens/tokens-store';
import type { Role } from './http/principal';
import { importLitellm } from './import';
import { displayUrl } from './url';
import type { Pool } from './db/pool';
import type { Keyring as KeyringT } from './crypto/keyring';

const USAGE = `usage: keyplane <command> [options]

commands:
  serve                              run the admin API, sync, reload and health prober
  migrate                            apply database migrations and exit
  render [--dry-run]                 render LiteLLM's files now (--dry-run: print what would change)
  master-key generate                print a new master key entry (id:base64) for KEYPLANE_MASTER_KEY
  master-key rotate                  re-encrypt every stored secret under the first KEYPLANE_MASTER_KEY entry
  token create --role R --name N     create an API token (shown once); R is admin, operator or viewer
  import --config FILE --env FILE [--base-out FILE]
                                     import an existing LiteLLM config.yaml and env file in one transaction;
                                     the settings keyplane does not manage go to --base-out (KEYPLANE_BASE_CONFIG)
  doctor                             check settings, database, keyring, output dir and LiteLLM

options:
  --settings FILE                    keyplane settings file (YAML; same names as the env vars, lower case, with or without keyplane_)
  -h, --help                         this help`;

export class UsageError extends Error {}

async function withStore<T>(settings: Settings, log: Logger, fn: (pool: Pool, keyring: KeyringT) => Promise<T>): Promise<T> {
  const stoppers: Array<{ name: string; stop: () => Promise<void> | void }> = [];
  try {
    const { pool, keyring } = await openStore(settings, log, new SecretRegistry(), stoppers);
    return await fn(pool, keyring);
  } finally {
    await stopAll(stoppers, log);
  }
}

async function serve(settings: Settings): Promise<void> {
  // Signals are taken before start-up begins: a SIGTERM during start must still stop the embedded
  // Postgres and everything else, not kill the process and orphan them.
  let stopping: string | undefined;
  let kp: Keyplane | undefined;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = signal;
    setTimeout(() => process.exit(1), 30_000).unref();
    if (!kp) return; // still starting: stopped as soon as the start finishes (or fails)
    kp.log.info('signal received, shutting down', { signal });
    kp.stop().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  kp = await createKeyplane(settings);
  if (stopping) {
    const signal = stopping;
    stopping = undefined;
    shutdown(signal);
  }
}

export async function run(argv: string[], out: (line: string) => void = (l) => process.stdout.write(l + '\n')): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string' },
      settings: { type: 'string' },
      'dry-run': { type: 'boolean' },
      role: { type: 'string' },
      name: { type: 'string' },
      env: { type: 'string' },
      'base-out': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  const [cmd, sub] = positionals;
  if (values.help || !cmd) {
    out(USAGE);
    return cmd || values.help ? 0 : 2;
  }
  if (cmd === 'master-key' && sub === 'generate') {
    out(Keyring.generateSpec());
    return 0;
  }
  // --config is import's LiteLLM config.yaml (the contract's name); keyplane's own settings file is --settings.
  const settings = loadSettings(process.env, values.settings ? { KEYPLANE_CONFIG: values.settings } : {});
  const log = createLogger({ level: cmd === 'serve' ? settings.logLevel : 'warn', secrets: new SecretRegistry() });
  switch (cmd) {
    case 'serve':
      await serve(settings);
      return -1;
    case 'migrate':
      await withStore(settings, createLogger({ level: 'info', secrets: new SecretRegistry() }), async () => undefined);
      out('migrations are up to date');
      return 0;
    case 'master-key': {
      if (sub !== 'rotate') throw new UsageError('master-key takes generate or rotate');
      const r = await withStore(settings, log, async (pool, keyring) => ({ ...(await rewrapAll(pool, keyring)), kid: keyring.primaryId }));
      out(`re-encrypted ${r.rewrapped} secret(s) under master key ${r.kid}; ${r.unchanged} already used it`);
      return 0;
    }
    case 'token': {
      if (sub !== 'create') throw new UsageError('token takes create --role R --name N');
      const role = values.role as Role | undefined;
      if (!role || !['admin', 'operator', 'viewer'].includes(role)) throw new UsageError('--role must be admin, operator or viewer');
      if (!values.name || !/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/.test(values.name)) throw new UsageError('--name must be 1 to 64 letters, digits, _ . @ -');
      const name = values.name;
      const { token, row } = await withStore(settings, log, (pool) => new TokensStore(pool).create(name, role, 'cli'));
      out(`created token ${row.id} (${row.role}, ${row.name}); it is shown only once:`);
      out(token);
      return 0;
    }
    case 'import': {
      if (!values.config && !values.env) throw new UsageError('import needs --config FILE and/or --env FILE');
      const kp = await createKeyplane({ ...settings, logLevel: 'warn' }, { listen: false, logStream: process.stderr });
      try {
        const summary = await importLitellm(kp, { configFile: values.config, envFile: values.env, baseOut: values['base-out'] });
        out(JSON.stringify(summary, null, 2));
      } finally {
        await kp.stop();
      }
      return 0;
    }
    case 'render': {
      const kp = await createKeyplane({ ...settings, logLevel: 'warn' }, { listen: false, logStream: process.stderr });
      try {
        const r = await kp.renderOnce({ dryRun: Boolean(values['dry-run']) });
        out(typeof r === 'string' ? r : JSON.stringify(r, null, 2));
      } finally {
        await kp.stop();
      }
      return 0;
    }
    case 'doctor':
      return doctor(settings, log, out);
    default:
      throw new UsageError(`unknown command "${cmd}"`);
  }
}

async function doctor(settings: Settings, log: Logger, out: (l: string) => void): Promise<number> {
  let failed = 0;
  const check = async (what: string, fn: () => Promise<string> | string): Promise<void> => {
    try {
      out(`ok    ${what}: ${await fn()}`);
    } catch (err) {
      failed++;
      out(`FAIL  ${what}: ${(err as Error).message}`);
    }
  };
  out('settings:');
  for (const s of describeSettings(settings)) out(`  ${s.setting} = ${s.value}`);
  await check('database and keyring', () =>
    withStore(settings, log, async (pool, keyring) => {
      const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM platform_keys');
      return `${rows[0]!.n} platform key(s); master keys ${keyring.describe().join(', ')}`;
    }),
  );
  await check('output directory', () => {
    mkdirSync(settings.outputDir, { recursive: true, mode: 0o755 });
    accessSync(settings.outputDir, constants.W_OK);
    return `${settings.outputDir} is writable`;
  });
  if (settings.reload !== 'none' || process.env.KEYPLANE_LITELLM_URL) {
    await check('LiteLLM liveliness', async () => {
      const res = await fetch(`${settings.litellmUrl}/health/liveliness`, { signal: AbortSignal.timeout(3000) });
      if (!res.ok) throw new Error(`${displayUrl(settings.litellmUrl)} answered ${res.status}`);
      return `${displayUrl(settings.litellmUrl)} is alive`;
    });
  }
  out(failed ? `${failed} check(s) failed` : 'all checks passed');
  return failed ? 1 : 0;
}

/** Entry point of the `keyplane` command: exit codes 0 ok, 1 failure, 2 usage, 78 configuration. */
export function main(argv: string[] = process.argv.slice(2)): void {
  run(argv).then(
    (code) => {
      if (code >= 0) process.exit(code);
    },
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err ?? 'start-up failed'));
      process.stderr.write(`keyplane: ${e.message}\n`);
      if (e instanceof UsageError) process.exit(2);
      if (e instanceof ConfigError || e instanceof MissingMasterKeyError) process.exit(78);
      process.exit(1);
    },
  );
}

if (require.main === module) main();
