import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { KEY_MAX, keyValueProblem } from '../src/key-rules';
import { render } from '../src/sync/renderer';
import type { DesiredState } from '../src/sync/desired-state';
import { connectDocker, ensureStandInImage } from './helpers/docker';
import { parseSystemdEnvFile, readWithDocker, readWithShell } from './helpers/env-readers';

/**
 * Item 2 of issue 8: every key value the API accepts means the same to every reader of the
 * rendered litellm.env: POSIX sh and bash with `set -a; . file` (LiteLLM's compose command),
 * docker's --env-file, and systemd's EnvironmentFile=.
 */

const KEY_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+/=:@,';
// Pieces that mean something to one reader or another, where they are allowed at all.
const TRICKY = ['=', '==', ':', '//', '+/', '@', ',', '.', '..', '-', '--', '_', 'sk-', 'a=b', 'x:y:z', '=:=', '/=/', 'os.environ', '://'];

// Drawn from more than the charset (any printable ASCII, some non-ASCII), kept when key-rules accepts
// it: a charset grown by mistake shows up here as a reader that disagrees.
const ANY_CHAR = fc.oneof(fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), fc.constantFrom('\t', '\u00e9', '\u202e', '\u{1f600}'));
const keyValue = fc
  .array(fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...KEY_CHARS.split('')) }, { weight: 3, arbitrary: fc.constantFrom(...TRICKY) }, { weight: 1, arbitrary: ANY_CHAR }), {
    minLength: 3,
    maxLength: 120,
  })
  .map((parts) => parts.join(''))
  .filter((v) => keyValueProblem(v) === undefined);

function stateOf(values: string[]): DesiredState {
  return {
    keys: values.map((value, i) => ({ name: `k${i}`, envVar: `KPTEST_${i}_API_KEY`, version: 1, value, fingerprint: `fp${i}`, expiresAt: null })),
    providers: [],
    models: [],
    routing: { aliases: {}, fallbacks: {} },
    approvals: [],
    authRequired: false,
  };
}

describe('litellm.env: one meaning for every reader', () => {
  let dir: string;
  let image: string;
  let dockerHost: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'kp-envfile-'));
    const { docker, where } = await connectDocker();
    dockerHost = where;
    image = await ensureStandInImage(docker);
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('refuses every character no reader takes literally, naming it, and accepts the rest', () => {
    for (let c = 0; c < 0x80; c++) {
      const v = `sk-aaaa${String.fromCharCode(c)}bbbb`;
      if (KEY_CHARS.includes(String.fromCharCode(c))) expect(keyValueProblem(v)).toBeUndefined();
      else expect(keyValueProblem(v)).toMatch(/^character .* at position 8 is not allowed/);
    }
    expect(keyValueProblem('sk-aaaa;id>/tmp/x')).toMatch(/';' \(U\+003B\) at position 8/);
    expect(keyValueProblem('sk-aaaa(bbbb')).toMatch(/'\(' \(U\+0028\) at position 8/);
    expect(keyValueProblem('sk-aaaa\u00e9bbbb')).toMatch(/U\+00E9 at position 8/);
    expect(keyValueProblem('x'.repeat(KEY_MAX + 1))).toMatch(/8 to 4096/);
  });

  /** Renders `values` and checks that all four readers read exactly them. */
  let n = 0;
  function expectReadAlike(values: string[]): void {
    const rendered = render(stateOf(values), {}, { modelsInConfig: true });
    const file = path.join(dir, `litellm-${n++}.env`);
    writeFileSync(file, rendered.envFile, { mode: 0o600 });
    const expected = Object.fromEntries(values.map((v, i) => [`KPTEST_${i}_API_KEY`, v]));
    const names = Object.keys(expected);
    expect(readWithShell('/bin/sh', file, names)).toEqual(expected);
    expect(readWithShell('/bin/bash', file, names)).toEqual(expected);
    expect(parseSystemdEnvFile(rendered.envFile)).toEqual(expected);
    // One stand-in container per batch of values.
    expect(readWithDocker(dockerHost, image, file, names)).toEqual(expected);
  }

  it('every character the charset accepts, alone and repeated, at the start, middle and end of a value', () => {
    const candidates = [...Array.from({ length: 0x5f }, (_, i) => String.fromCharCode(0x20 + i)), '\t', '\u00e9', '\u202e', '\u{1f600}'];
    const values = candidates.flatMap((c) => [`${c}${c}sk-aaaa${c}b${c}${c}=${c}x${c}`, `sk-aaaa${c}${c}${c}${c}`]).filter((v) => keyValueProblem(v) === undefined);
    expectReadAlike(values);
  }, 60_000);

  it('sh, bash, docker --env-file and systemd read exactly the values that were rendered', async () => {
    await fc.assert(
      fc.property(fc.array(keyValue, { minLength: 20, maxLength: 80 }), (values) => expectReadAlike(values)),
      { numRuns: 6 },
    );
  }, 120_000);

  it('the readers themselves disagree on the values the API refuses (what the charset guards against)', () => {
    const file = path.join(dir, 'unsafe.env');
    writeFileSync(file, 'KPTEST_Q_API_KEY="sk-quoted"\nKPTEST_S_API_KEY=sk-aaaa bbbb\n');
    const names = ['KPTEST_Q_API_KEY', 'KPTEST_S_API_KEY'];
    // docker takes quotes literally, sh and systemd strip them; sh stops at the space.
    expect(readWithDocker(dockerHost, image, file, names).KPTEST_Q_API_KEY).toBe('"sk-quoted"');
    expect(parseSystemdEnvFile('KPTEST_Q_API_KEY="sk-quoted"\n').KPTEST_Q_API_KEY).toBe('sk-quoted');
    expect(() => readWithShell('/bin/sh', file, names)).toThrow();
  }, 60_000);
});
