/**
 * Runs one embedded Postgres cluster for a test, in its own process, as keyplane runs it (the
 * cluster then belongs to that process, not to the jest worker). Started as `node -r tsx/cjs embedded-pg-child.ts <dataDir> <database>`; it answers
 * `stop` and `start` lines on stdin (start reuses the first port) with one JSON line each on stdout,
 * and stops Postgres when stdin closes.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { createInterface } from 'node:readline';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../src/db/embedded';
import { createLogger, SecretRegistry } from '../../src/log';

const [dataDir, database = 'keyplane'] = process.argv.slice(2);
const log = createLogger({ secrets: new SecretRegistry(), silent: true });
const say = (event: Record<string, unknown>): void => void process.stdout.write(JSON.stringify(event) + '\n');

let db: EmbeddedDatabase | undefined;
let port: number | undefined;

async function start(): Promise<void> {
  db = await startEmbeddedPostgres(dataDir!, log, { database, port });
  port = db.port;
  // What the start left of this process's temp dir and umask (it must put back what it changed).
  const umask = /^Umask:\s*(\d+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  say({ event: 'started', url: db.url, port, tmpdir: os.tmpdir(), umask });
}

async function stop(): Promise<void> {
  await db?.stop();
  db = undefined;
  say({ event: 'stopped' });
}

// Commands run one after another, in the order they came.
let chain: Promise<void> = start();
createInterface({ input: process.stdin })
  .on('line', (line) => {
    const cmd = line.trim();
    chain = chain.then(() => (cmd === 'stop' ? stop() : cmd === 'start' ? start() : say({ event: 'error', message: `unknown command ${cmd}` })));
  })
  .on('close', () => {
    chain = chain.then(stop).then(() => process.exit(0));
  });
chain.catch((err: unknown) => {
  say({ event: 'error', message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});
