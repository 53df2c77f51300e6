import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCheckCommand, validateStaged } from '../src/sync/check';

describe('staged-file check', () => {
  const GOOD = 'model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n      api_key: os.environ/A_KEY\n';

  it('accepts a well-formed pair and names what is wrong otherwise', () => {
    expect(validateStaged(GOOD, '# c\nA_KEY=sk-abcdefgh\n', { A_KEY: 'sk-abcdefgh' })).toEqual({ ok: true });
    expect(validateStaged(undefined, 'A_KEY=x\n', {})).toEqual({ ok: true });
    expect(validateStaged('a: [1\n', '', {})).toMatchObject({ ok: false, stage: 'parse' });
    expect(validateStaged('- 1\n', '', {})).toMatchObject({ ok: false, stage: 'validate', message: 'the staged config.yaml is not a mapping' });
    expect(validateStaged('model_list:\n  - model_name: a\n', '', {})).toMatchObject({ ok: false, message: 'model_list[0] needs a model_name and litellm_params.model' });
    expect(validateStaged(GOOD + 'general_settings:\n  x: [sk-abcdefgh]\n', '', { A_KEY: 'sk-abcdefgh' })).toMatchObject({
      ok: false,
      message: 'general_settings.x[0] holds a managed secret in clear instead of an os.environ/ reference',
    });
    expect(validateStaged(GOOD, 'A_KEY=has space\n', {})).toMatchObject({ ok: false, message: 'litellm.env line 1 is not VAR=value without spaces or quotes' });
    expect(validateStaged(GOOD, 'A=1\nA=2\n', {})).toMatchObject({ ok: false, message: 'litellm.env sets A twice' });
  });
});

describe('check command', () => {
  let dir: string;
  const paths = () => ({ configPath: path.join(dir, '.config.yaml.tmp'), envPath: path.join(dir, '.litellm.env.tmp'), outputDir: dir });
  const mask = (s: string) => s.split('sk-secret-value').join('****');

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'kp-check-'));
    writeFileSync(paths().configPath, 'a: 1\n');
    writeFileSync(paths().envPath, 'A_KEY=sk-secret-value\n');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('passes with exit 0 and sees the staged paths', async () => {
    expect(await runCheckCommand('test "$(cat "$KEYPLANE_STAGED_CONFIG")" = "a: 1" && grep -q A_KEY "$KEYPLANE_STAGED_ENV"', paths(), { timeoutMs: 5000, mask })).toEqual({ ok: true });
  });

  it('fails with the exit code and a masked stderr tail; keyplane settings never reach it', async () => {
    const old = process.env.KEYPLANE_MASTER_KEY;
    process.env.KEYPLANE_MASTER_KEY = 'k1:never-in-the-child';
    try {
      const r = await runCheckCommand('env | grep ^KEYPLANE_ | sort >&2; cat "$KEYPLANE_STAGED_ENV" >&2; exit 7', paths(), { timeoutMs: 5000, mask });
      expect(r).toMatchObject({ ok: false, stage: 'command', exitCode: 7, message: 'the check command exited with 7' });
      if (r.ok) throw new Error('expected a failure');
      expect(r.stderrTail).toBe(`KEYPLANE_OUTPUT_DIR=${dir}\nKEYPLANE_STAGED_CONFIG=${paths().configPath}\nKEYPLANE_STAGED_ENV=${paths().envPath}\nA_KEY=****`);
    } finally {
      if (old === undefined) delete process.env.KEYPLANE_MASTER_KEY;
      else process.env.KEYPLANE_MASTER_KEY = old;
    }
  });

  it('a command that outlives its timeout is killed with its whole process group', async () => {
    const pidFile = path.join(dir, 'bg.pid');
    const t0 = Date.now();
    const r = await runCheckCommand(`sleep 30 & echo $! > ${pidFile}; echo waiting >&2; wait`, paths(), { timeoutMs: 300, mask });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(r).toMatchObject({ ok: false, stage: 'command', timedOut: true, message: 'the check command timed out after 300 ms', stderrTail: 'waiting' });
    // Killed, the background child is gone or a zombie waiting for init to reap it. SIGKILL is
    // delivered asynchronously, so it may still be on its way out for a moment.
    const bg = Number(readFileSync(pidFile, 'utf8'));
    const stateOf = (): string => {
      try {
        return readFileSync(`/proc/${bg}/stat`, 'utf8').split(') ')[1]![0]!;
      } catch {
        return 'gone';
      }
    };
    const deadline = Date.now() + 2000;
    let state = stateOf();
    while (!['gone', 'Z', 'X'].includes(state) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
      state = stateOf();
    }
    expect(['gone', 'Z', 'X']).toContain(state);
  });
});
