import { parseArgs } from 'node:util';
import { ConfigError, loadSettings, type Settings } from './config';
import { createLogger, SecretRegistry } from './log';
import { Keyring, MissingMasterKeyError, WrongMasterKeyError } from './crypto/keyring';
import { rewrapAll } from './crypto/secret-tables';
import { createKeyplane, type Keyplane } from './main';
import { TokensStore } from './features/tokens/tokens-store';
import type { Role } from './http/principal';
import { importLitellm } from './import';
import { ImportRefused } from './import/source';
import { doctor } from './doctor';
import { moveMasterKey } from './cli/master-key';
import { withStore } from './cli/store';
import { render } from './cli/render';

const USAGE = `usage: keyplane <command> [options]

commands:
  serve                              run the admin API, sync, reload and health prober
  migrate                            apply database migrations and exit
  render [--dry-run]                 render LiteLLM's files now (--dry-run: print what would change)
  master-key generate                print a new master key entry (id:base64) for KEYPLANE_MASTER_KEY
  master-key rotate                  re-encrypt every stored secret under the first KEYPLANE_MASTER_KEY entry
  master-key move --to FILE [--id ID]
                                     move every stored secret to a new master key written to FILE (0600;
                                     from the development key, typically); prints what to do next
  token create --role R --name N     create an API token (shown once); R is admin, operator or viewer
  import --config FILE --env FILE [--base-out FILE]
                                     import an existing LiteLLM config.yaml and env file in one transaction;
                                     the settings keyplane does not manage go to --base-out (KEYPLANE_BASE_CONFIG)
  doctor                             check the master key, database, migrations, secrets, output dir and
                                     reload prerequisites; changes nothing; exit 1 when a check fails

Commands other than serve also work while keyplane serve runs (on its embedded Postgres, too).

options:
  --settings FILE                    keyplane settings file (YAML; same names as the env vars, lower case, with or without keyplane_)
  -h, --help                         this help`;

export class UsageError extends Error {}

/** Signals that stop a server: Ctrl-C, `kill`, systemd and docker stop, a closed terminal. */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

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
  for (const s of STOP_SIGNALS) process.on(s, () => shutdown(s));
  try {
    kp = await createKeyplane(settings);
  } catch (err) {
    // Asked to stop while starting (systemd signals every process of the unit, Postgres too): the
    // start failing is the stop's doing, and everything started is already stopped again.
    if (!stopping) throw err;
    process.stderr.write(`keyplane: stopped by ${stopping} while starting\n`);
    process.exit(0);
  }
  kp.log.info('keyplane is running', { pid: process.pid, startup_ms: Math.round(process.uptime() * 1000) });
  if (stopping) {
    const signal = stopping;
    stopping = undefined;
    shutdown(signal);
  }
}

/** The command line; a malformed one is a usage error (exit 2). */
function parseArguments(argv: string[]) {
  try {
    return parseArgs({
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
        to: { type: 'string' },
        id: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export async function run(argv: string[], out: (line: string) => void = (l) => process.stdout.write(l + '\n')): Promise<number> {
  const { values, positionals } = parseArguments(argv);
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
      if (sub === 'move') {
        if (!values.to) throw new UsageError('master-key move needs --to FILE (the new key file; it must not exist)');
        if (values.id !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(values.id)) throw new UsageError('--id must be 1 to 64 letters, digits, _ . -');
        await moveMasterKey(settings, log, { to: values.to, id: values.id }, out);
        return 0;
      }
      if (sub !== 'rotate') throw new UsageError('master-key takes generate, rotate or move --to FILE');
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
        return await render(kp, Boolean(values['dry-run']), out);
      } finally {
        await kp.stop();
      }
    }
    case 'doctor':
      return doctor(settings, out);
    default:
      throw new UsageError(`unknown command "${cmd}"`);
  }
}

/** Entry point of the `keyplane` command: exit codes 0 ok, 1 failure, 2 usage, 78 configuration. */
export function main(argv: string[] = process.argv.slice(2)): void {
  run(argv).then(
    (code) => {
      if (code >= 0) process.exit(code);
    },
    (err: unknown) => {
      const e = err instanceof Error ? err : new Error(String(err ?? 'start-up failed'));
      // Never a stack trace: one line, or (for an import's problems) one line a problem.
      const text = e instanceof ImportRefused ? e.message : e.message.split('\n').map((l) => l.trim()).filter(Boolean).join(' ');
      process.stderr.write(`keyplane: ${text}\n`);
      if (e instanceof UsageError) process.exit(2);
      if (e instanceof ConfigError || e instanceof MissingMasterKeyError || e instanceof WrongMasterKeyError) process.exit(78);
      process.exit(1);
    },
  );
}

if (require.main === module) main();
