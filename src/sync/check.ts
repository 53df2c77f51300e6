import { spawn } from 'node:child_process';
import YAML from 'yaml';

export type CheckStage = 'parse' | 'validate' | 'command';

export type CheckResult =
  | { ok: true }
  | { ok: false; stage: CheckStage; message: string; stderrTail?: string; exitCode?: number | null; timedOut?: boolean };

export interface StagedPaths {
  configPath: string;
  envPath: string;
  outputDir: string;
}

const ENV_LINE = /^[A-Za-z_][A-Za-z0-9_]*=[^\s'"`\\$]*$/;
const TAIL_BYTES = 2000;

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The first string anywhere in `value` that holds one of `secrets`, as a path, or undefined. */
function findLiteralSecret(value: unknown, secrets: string[], at: string): string | undefined {
  if (typeof value === 'string') return secrets.some((s) => value.includes(s)) ? at : undefined;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const hit = findLiteralSecret(value[i], secrets, `${at}[${i}]`);
      if (hit) return hit;
    }
  } else if (isMap(value)) {
    for (const [k, v] of Object.entries(value)) {
      const hit = findLiteralSecret(v, secrets, at ? `${at}.${k}` : k);
      if (hit) return hit;
    }
  }
  return undefined;
}

/**
 * Parses the staged files again, independently of how they were written, and checks what LiteLLM
 * needs: a mapping, well-formed deployments, env lines both systemd and docker read, and no
 * managed secret written anywhere in the config in clear. `configText` is undefined when only the
 * env file changes.
 */
export function validateStaged(configText: string | undefined, envText: string, env: Record<string, string>): CheckResult {
  const config = configText === undefined ? ({ ok: true } as const) : validateConfig(configText, env);
  return config.ok ? validateEnv(envText) : config;
}

function validateConfig(configText: string, env: Record<string, string>): CheckResult {
  let doc: unknown;
  try {
    doc = YAML.parse(configText, { uniqueKeys: true, prettyErrors: false });
  } catch (err) {
    return { ok: false, stage: 'parse', message: `the staged config.yaml does not parse: ${(err as Error).message.split('\n')[0]}` };
  }
  if (!isMap(doc)) return { ok: false, stage: 'validate', message: 'the staged config.yaml is not a mapping' };
  const list = doc.model_list;
  if (list !== undefined && !Array.isArray(list)) return { ok: false, stage: 'validate', message: 'model_list is not a list' };
  for (const [i, entry] of (list ?? []).entries()) {
    const params = isMap(entry) ? entry.litellm_params : undefined;
    if (!isMap(entry) || typeof entry.model_name !== 'string' || !isMap(params) || typeof params.model !== 'string') {
      return { ok: false, stage: 'validate', message: `model_list[${i}] needs a model_name and litellm_params.model` };
    }
  }
  const secrets = Object.values(env).filter((v) => v.length >= 8);
  const leak = findLiteralSecret(doc, secrets, '');
  if (leak) return { ok: false, stage: 'validate', message: `${leak} holds a managed secret in clear instead of an os.environ/ reference` };
  return { ok: true };
}

function validateEnv(envText: string): CheckResult {
  const seen = new Set<string>();
  for (const [i, line] of envText.split('\n').entries()) {
    if (line === '' || line.startsWith('#')) continue;
    if (!ENV_LINE.test(line)) return { ok: false, stage: 'validate', message: `litellm.env line ${i + 1} is not VAR=value without spaces or quotes` };
    const name = line.slice(0, line.indexOf('='));
    if (seen.has(name)) return { ok: false, stage: 'validate', message: `litellm.env sets ${name} twice` };
    seen.add(name);
  }
  return { ok: true };
}

/** Environment for child processes: the caller's, without keyplane's own settings (they hold secrets). */
function childEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('KEYPLANE_')) out[k] = v;
  return { ...out, ...extra };
}

/**
 * Runs KEYPLANE_CHECK_COMMAND (`sh -c`, in its own process group) with the staged paths in
 * KEYPLANE_STAGED_CONFIG / KEYPLANE_STAGED_ENV. A non-zero exit or the timeout fails the check;
 * the stderr tail is passed through `mask` before it goes anywhere.
 */
export function runCheckCommand(command: string, paths: StagedPaths, opts: { timeoutMs: number; mask: (s: string) => string }): Promise<CheckResult> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', command], {
      cwd: paths.outputDir,
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      env: childEnv({ KEYPLANE_STAGED_CONFIG: paths.configPath, KEYPLANE_STAGED_ENV: paths.envPath, KEYPLANE_OUTPUT_DIR: paths.outputDir }),
    });
    let tail = '';
    let timedOut = false;
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      tail = (tail + chunk).slice(-TAIL_BYTES * 2);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // The group already exited.
      }
    }, opts.timeoutMs);
    const finish = (code: number | null, spawnError?: Error): void => {
      clearTimeout(timer);
      const stderrTail = opts.mask(tail.slice(-TAIL_BYTES)).trim();
      if (spawnError) return resolve({ ok: false, stage: 'command', message: `the check command could not start: ${spawnError.message}`, stderrTail });
      if (timedOut) return resolve({ ok: false, stage: 'command', message: `the check command timed out after ${opts.timeoutMs} ms`, stderrTail, exitCode: code, timedOut });
      if (code !== 0) return resolve({ ok: false, stage: 'command', message: `the check command exited with ${code}`, stderrTail, exitCode: code });
      resolve({ ok: true });
    };
    child.once('error', (err) => finish(null, err));
    child.once('close', (code) => finish(code));
  });
}
