import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger, SecretRegistry } from '../src/log';
import { CommandReloader, type CommandReloaderOptions } from '../src/reload/command';
import { waitForLiveliness } from '../src/reload/liveliness';
import { eventually, RevisionFiles, startLivelinessServer } from './helpers/reload';

const log = createLogger({ secrets: new SecretRegistry(), silent: true });
const KEY = 'sk-or-v1-command-secret-987654';

let dir: string;
let files: RevisionFiles;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-command-'));
  files = await RevisionFiles.create(path.join(dir, 'out'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function reloader(command: string, o: Partial<CommandReloaderOptions> = {}): CommandReloader {
  return new CommandReloader({ command, timeoutMs: 10_000, readyTimeoutMs: 5_000, log, ...o });
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('command reloader', () => {
  it('runs the command with the file paths and revision in its environment, without keyplane settings', async () => {
    const out = path.join(dir, 'seen.env');
    const req = await files.write(7, { OPENROUTER_API_KEY: KEY });
    const r = reloader(`env > ${out}`, { baseEnv: { PATH: process.env.PATH, KEYPLANE_MASTER_KEY: 'k1:should-not-leak', HOME: '/root' } });
    const result = await r.reload(req);
    expect(result).toMatchObject({ status: 'ok', targets: [expect.objectContaining({ target: 'command', status: 'ok' })] });
    const seen = readFileSync(out, 'utf8');
    expect(seen).toContain('KEYPLANE_REVISION=7\n');
    expect(seen).toContain(`KEYPLANE_CONFIG_PATH=${req.configPath}\n`);
    expect(seen).toContain(`KEYPLANE_ENV_PATH=${req.envPath}\n`);
    expect(seen).toContain(`KEYPLANE_OUTPUT_DIR=${req.outputDir}\n`);
    expect(seen).toContain('HOME=/root\n');
    expect(seen).not.toContain('KEYPLANE_MASTER_KEY');
  });

  it('fails with the exit code and the tail of stderr, secrets masked', async () => {
    const req = await files.write(8, { OPENROUTER_API_KEY: KEY });
    const secrets = new SecretRegistry();
    secrets.add('db-password-abcdefgh');
    const lots = 'x'.repeat(3000);
    const r = reloader(`echo ${lots} >&2; echo "cannot use key $(cut -d= -f2 "$KEYPLANE_ENV_PATH") or db-password-abcdefgh" >&2; exit 3`, { secrets });
    const result = await r.reload(req);
    expect(result.status).toBe('failed');
    expect(result.error).toMatch(/^reload command exited with code 3; stderr: x+\ncannot use key \[REDACTED\] or \[REDACTED\]$/);
    expect(result.error!.length).toBeLessThan(600);
    expect(result.error).not.toContain(KEY);
    expect(result.targets[0]).toMatchObject({ target: 'command', status: 'failed', error: result.error });
  });

  it('kills the whole process group when the command times out', async () => {
    const req = await files.write(9, { OPENROUTER_API_KEY: KEY });
    const pidFile = path.join(dir, 'pgid');
    // The shell and a child that ignores SIGTERM: SIGKILL after the grace period gets it too.
    const r = reloader(`echo $$ > ${pidFile}; (trap '' TERM; sleep 30) & sleep 30`, { timeoutMs: 300, killGraceMs: 200 });
    const t0 = Date.now();
    const result = await r.reload(req);
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(result.status).toBe('failed');
    expect(result.error).toBe('reload command timed out after 300 ms; its process group was killed');
    const pgid = Number(readFileSync(pidFile, 'utf8').trim());
    await eventually(async () => (groupAlive(pgid) ? undefined : true), 5_000, 'the process group to be gone');
  });

  it('waits for LiteLLM readiness after the command, and fails when it never comes', async () => {
    const server = await startLivelinessServer();
    try {
      const req = await files.write(10, { OPENROUTER_API_KEY: KEY });
      server.alive = false;
      // The command brings "LiteLLM" up only after a moment, as a restart would.
      const pending = reloader('true', { litellmUrl: server.url }).reload(req);
      await eventually(async () => (server.readinessHits > 0 ? true : undefined), 5_000, 'a readiness poll');
      server.alive = true;
      expect((await pending).status).toBe('ok');

      server.alive = false;
      const result = await reloader('true', { litellmUrl: server.url, readyTimeoutMs: 300 }).reload(req);
      expect(result.status).toBe('failed');
      expect(result.error).toMatch(/^reload command succeeded but LiteLLM is not ready: .*\/health\/readiness did not answer within 300 ms \(last: HTTP 503\)$/);
    } finally {
      await server.close();
    }
  });

  it('reports a command that cannot start', async () => {
    const req = await files.write(11, { OPENROUTER_API_KEY: KEY });
    const result = await reloader('/nonexistent/reload-litellm').reload(req);
    expect(result.status).toBe('failed');
    expect(result.error).toMatch(/^reload command exited with code 127; stderr: .*nonexistent/);
  });
});

describe('waitForLiveliness', () => {
  it('gives up early when told the process is gone', async () => {
    const server = await startLivelinessServer();
    try {
      server.alive = false;
      await expect(waitForLiveliness(server.url, { timeoutMs: 10_000, giveUpEveryMs: 0, giveUp: async () => 'the container exited with code 1' })).rejects.toThrow(
        /never answered: the container exited with code 1$/,
      );
    } finally {
      await server.close();
    }
  });

  it('reports a refused connection', async () => {
    const server = await startLivelinessServer();
    const url = server.url;
    await server.close();
    await expect(waitForLiveliness(url, { timeoutMs: 200 })).rejects.toThrow(/did not answer within 200 ms \(last: ECONNREFUSED\)/);
  });
});
