import { rmSync } from 'node:fs';

export default async function globalTeardown(): Promise<void> {
  const pg = (globalThis as Record<string, unknown>).__KEYPLANE_PG__ as { stop?: () => Promise<void>; dataDir?: string } | undefined;
  if (pg?.stop) await pg.stop();
  if (pg?.dataDir) rmSync(pg.dataDir, { recursive: true, force: true });
}
