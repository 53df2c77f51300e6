import { execFileSync } from 'node:child_process';

/**
 * The three readers of litellm.env, each as the real thing reads it (or, for systemd, which does
 * not run here, its parser's rules ported from src/basic/env-file.c): what a value means to each.
 */

const WHITESPACE = ' \t\n\r';
const NEWLINE = '\n\r';
const COMMENTS = '#;';
// Inside double quotes a backslash escapes only these; before anything else it stays.
const SHELL_NEED_ESCAPE = '"\\`$';

type State = 'preKey' | 'key' | 'preValue' | 'value' | 'valueEscape' | 'single' | 'double' | 'doubleEscape' | 'comment' | 'commentEscape';

/**
 * systemd's EnvironmentFile= parser: `#`/`;` comment lines, keys and unquoted values trimmed of
 * whitespace, single quotes literal, double quotes with backslash escapes of `"\`$` only, a backslash
 * outside quotes escaping the next character, a backslash-newline joining lines. Later lines win.
 * (Then systemd drops assignments whose name is not a valid variable name.)
 */
export function parseSystemdEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let state: State = 'preKey';
  let key = '';
  let value = '';
  let keyWs = -1;
  let valueWs = -1;
  const push = (trimValue: boolean): void => {
    const k = keyWs >= 0 ? key.slice(0, keyWs) : key;
    const v = trimValue && valueWs >= 0 ? value.slice(0, valueWs) : value;
    if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) out[k] = v;
    key = '';
    value = '';
  };
  for (const c of text) {
    switch (state) {
      case 'preKey':
        if (COMMENTS.includes(c)) state = 'comment';
        else if (!WHITESPACE.includes(c)) {
          state = 'key';
          keyWs = -1;
          key = c;
        }
        break;
      case 'key':
        if (NEWLINE.includes(c)) {
          state = 'preKey';
          key = '';
        } else if (c === '=') {
          state = 'preValue';
          valueWs = -1;
        } else {
          if (!WHITESPACE.includes(c)) keyWs = -1;
          else if (keyWs < 0) keyWs = key.length;
          key += c;
        }
        break;
      case 'preValue':
        if (NEWLINE.includes(c)) {
          state = 'preKey';
          push(false);
        } else if (c === "'") state = 'single';
        else if (c === '"') state = 'double';
        else if (c === '\\') state = 'valueEscape';
        else if (!WHITESPACE.includes(c)) {
          state = 'value';
          value += c;
        }
        break;
      case 'value':
        if (NEWLINE.includes(c)) {
          state = 'preKey';
          push(true);
        } else if (c === '\\') {
          state = 'valueEscape';
          valueWs = -1;
        } else {
          if (!WHITESPACE.includes(c)) valueWs = -1;
          else if (valueWs < 0) valueWs = value.length;
          value += c;
        }
        break;
      case 'valueEscape':
        state = 'value';
        if (!NEWLINE.includes(c)) value += c;
        break;
      case 'single':
        if (c === "'") state = 'preValue';
        else value += c;
        break;
      case 'double':
        if (c === '"') state = 'preValue';
        else if (c === '\\') state = 'doubleEscape';
        else value += c;
        break;
      case 'doubleEscape':
        state = 'double';
        if (SHELL_NEED_ESCAPE.includes(c)) value += c;
        else if (c !== '\n') value += '\\' + c;
        break;
      case 'comment':
        if (c === '\\') state = 'commentEscape';
        else if (NEWLINE.includes(c)) state = 'preKey';
        break;
      case 'commentEscape':
        state = NEWLINE.includes(c) ? 'preKey' : 'comment';
        break;
    }
  }
  if (state === 'preValue' || state === 'valueEscape' || state === 'single' || state === 'double' || state === 'doubleEscape') push(false);
  else if (state === 'value') push(true);
  return out;
}

/** NUL-separated `NAME=value` entries (as `env -0` prints them) -> the variables named in `names`. */
function pick(entries: string, names: string[]): Record<string, string> {
  const wanted = new Set(names);
  const out: Record<string, string> = {};
  for (const e of entries.split('\0')) {
    const i = e.indexOf('=');
    if (i > 0 && wanted.has(e.slice(0, i))) out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

/**
 * What `shell -c 'set -a; . FILE'` exports (as LiteLLM's compose command sources the file), for the
 * variables in `names`. A file the shell cannot source throws.
 */
export function readWithShell(shell: string, file: string, names: string[]): Record<string, string> {
  // stdin closed: bash run with a socket as stdin reads ~/.bashrc as if started by rshd.
  const entries = execFileSync(shell, ['-c', 'set -a; . "$1" && env -0', 'sh', file], {
    env: { PATH: '/usr/bin:/bin' },
    encoding: 'utf8',
    timeout: 10_000,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return pick(entries, names);
}

/** What docker's own `--env-file` parsing puts into a container: one container for the whole file. */
export function readWithDocker(dockerHost: string, image: string, file: string, names: string[]): Record<string, string> {
  const entries = execFileSync('docker', ['--host', dockerHost, 'run', '--rm', '--network', 'none', '--env-file', file, '--entrypoint', '/bin/env', image, '-0'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  return pick(entries, names);
}
