import type { Pool, PoolClient } from '../../db/pool';
import type { Approval } from '../../destinations';

export interface DestinationRow {
  key_name: string;
  destination: string;
  approved_by: string;
  approved_at: Date;
}

type Queryable = Pool | PoolClient;

/** SQL for the approved (key, destination) pairs. */
export class DestinationsStore {
  constructor(private readonly pool: Pool) {}

  async list(keyName: string, client: Queryable = this.pool): Promise<DestinationRow[]> {
    const { rows } = await client.query<DestinationRow>(
      'SELECT key_name, destination, approved_by, approved_at FROM key_destinations WHERE key_name = $1 ORDER BY destination',
      [keyName],
    );
    return rows;
  }

  async all(client: Queryable = this.pool): Promise<Approval[]> {
    const { rows } = await client.query<{ key_name: string; destination: string }>('SELECT key_name, destination FROM key_destinations');
    return rows.map((r) => ({ keyName: r.key_name, destination: r.destination }));
  }

  /** Env var -> platform key name, to resolve `os.environ/VAR` references. */
  async keyOfEnv(client: Queryable = this.pool): Promise<Map<string, string>> {
    const { rows } = await client.query<{ name: string; env_var: string }>('SELECT name, env_var FROM platform_keys');
    return new Map(rows.map((r) => [r.env_var, r.name]));
  }

  /** The pairs of `pairs` that are not approved. */
  async unapproved<T extends Approval>(client: Queryable, pairs: T[]): Promise<T[]> {
    if (pairs.length === 0) return [];
    const { rows } = await client.query<{ i: number }>(
      `SELECT p.i::int AS i FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS p(key_name, destination, i)
       WHERE NOT EXISTS (SELECT 1 FROM key_destinations d WHERE d.key_name = p.key_name AND d.destination = p.destination)`,
      [pairs.map((p) => p.keyName), pairs.map((p) => p.destination)],
    );
    return rows.map((r) => pairs[r.i - 1]!);
  }

  /** Approves `pairs` (inside the caller's transaction); returns those that were new. */
  async approve(client: PoolClient, pairs: Approval[], actor: string): Promise<Approval[]> {
    if (pairs.length === 0) return [];
    const { rows } = await client.query<{ key_name: string; destination: string }>(
      `INSERT INTO key_destinations (key_name, destination, approved_by)
       SELECT DISTINCT k, d, $3 FROM unnest($1::text[], $2::text[]) AS p(k, d)
       ON CONFLICT DO NOTHING RETURNING key_name, destination`,
      [pairs.map((p) => p.keyName), pairs.map((p) => p.destination), actor],
    );
    return rows.map((r) => ({ keyName: r.key_name, destination: r.destination }));
  }

  /** Replaces the approved destinations of one key; returns what was added and removed. */
  async replace(client: PoolClient, keyName: string, destinations: string[], actor: string): Promise<{ added: string[]; removed: string[] }> {
    const removed = await client.query<{ destination: string }>(
      'DELETE FROM key_destinations WHERE key_name = $1 AND NOT (destination = ANY($2::text[])) RETURNING destination',
      [keyName, destinations],
    );
    const added = await this.approve(client, destinations.map((destination) => ({ keyName, destination })), actor);
    return { added: added.map((a) => a.destination).sort(), removed: removed.rows.map((r) => r.destination).sort() };
  }
}
