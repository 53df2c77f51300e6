import { readFileSync } from 'node:fs';
import path from 'node:path';
import { keyPath, type PutRecord } from './soak-clients';
import type { JsonClient } from './soak-http';

export interface Check {
  ok: boolean;
  what: string;
  detail: string;
}

export interface VersionItem {
  version: number;
  fingerprint: string;
  masked_key: string;
}

export interface AuditItem {
  id: number;
  version: number | null;
  details: { fingerprint?: string };
}

/** What keyplane holds for one key at the end: every version (masked), and the current one decrypted. */
export interface KeyState {
  versions: VersionItem[];
  decrypted: { api_key: string; version: number; env_var: string };
}

/**
 * Every item of a list, page by page: `next_cursor` (`?cursor=`) where the list is paged that way,
 * `next_before` (`?before=`) for the audit trail, or one page when neither is there.
 */
export async function allItems<T>(admin: JsonClient, basePath: string): Promise<T[]> {
  const url = (extra: string): string => `${basePath}${basePath.includes('?') ? '&' : '?'}limit=1000${extra}`;
  const items: T[] = [];
  let next = url('');
  for (let page = 0; ; page++) {
    if (page > 10_000) throw new Error(`${basePath}: more than 10,000 pages`);
    const body = (await admin.expect(200, 'GET', next)).body as { items: T[]; next_cursor?: string | null; next_before?: number | null };
    items.push(...body.items);
    if (body.next_cursor) next = url(`&cursor=${encodeURIComponent(body.next_cursor)}`);
    else if (body.next_before) next = url(`&before=${body.next_before}`);
    else return items;
  }
}

export async function fetchKeyState(admin: JsonClient, key: string): Promise<KeyState> {
  const versions = await allItems<VersionItem>(admin, `${keyPath(key)}/versions`);
  const decrypted = (await admin.expect(200, 'GET', `${keyPath(key)}/decrypted`)).body as KeyState['decrypted'];
  return { versions, decrypted };
}

/** `****AbCd` -> `AbCd`: the tag of the request whose value a version holds. */
const tagOf = (masked: string): string => (masked.startsWith('****') ? masked.slice(4) : masked);

const show = (list: string[], n = 5): string => list.slice(0, n).join('; ') + (list.length > n ? `; ... (${list.length} in all)` : '');

const checkOf = (what: string, problems: string[], okDetail: string): Check => ({ ok: problems.length === 0, what, detail: problems.length ? show(problems) : okDetail });

/** A request whose client got no clear answer: the change may or may not have been stored. */
const unknownOutcome = (r: PutRecord): boolean => r.status === 0 || r.problem === 'commit-outcome-unknown';

export interface VersionFigures {
  stored: number;
  acknowledged: number;
  /** Versions stored whose request got no clear answer (503 commit-outcome-unknown or a network error). */
  unknownLanded: number;
  /** Requests with no clear answer whose value was not stored. */
  unknownNotLanded: number;
}

/**
 * (a) Per key: versions contiguous 1..N; each stored version holds the value of exactly one request
 * (by its tag), and that request got 200 with this version and this fingerprint, or no clear answer;
 * no version acknowledged twice; a 200 under If-Match is exactly the next version; the current
 * version is the newest and decrypts to the value its request sent.
 */
export function judgeVersions(states: Map<string, KeyState>, records: PutRecord[]): { checks: Check[]; figures: VersionFigures } {
  const gaps: string[] = [], foreign: string[] = [], acked: string[] = [], twice: string[] = [], ifMatch: string[] = [], current: string[] = [];
  const figures: VersionFigures = { stored: 0, acknowledged: 0, unknownLanded: 0, unknownNotLanded: 0 };
  const byKeyTag = new Map<string, PutRecord>(records.map((r) => [`${r.key}/${r.tag}`, r]));
  for (const [key, state] of states) {
    const versions = [...state.versions].sort((a, b) => a.version - b.version);
    figures.stored += versions.length;
    versions.forEach((v, i) => {
      if (v.version !== i + 1) gaps.push(`${key}: position ${i + 1} holds version ${v.version}`);
    });
    const stored = new Map(versions.map((v) => [v.version, v]));
    const landed = new Set<string>();
    for (const v of versions) {
      const tag = tagOf(v.masked_key);
      const rec = byKeyTag.get(`${key}/${tag}`);
      if (!rec) {
        foreign.push(`${key} v${v.version}: ${v.masked_key} is no value a client sent for this key`);
        continue;
      }
      if (landed.has(tag)) foreign.push(`${key} v${v.version}: the value of request ${tag} is stored twice`);
      landed.add(tag);
      if (rec.status === 200) continue; // compared below, from the request's side
      if (unknownOutcome(rec)) figures.unknownLanded++;
      else foreign.push(`${key} v${v.version}: stored, but its request (${rec.ifMatch === undefined ? 'no If-Match' : `If-Match "${rec.ifMatch}"`}) was answered ${rec.status} ${rec.problem ?? ''}`.trim());
    }
    const ackedVersions = new Map<number, number>();
    for (const rec of records) {
      if (rec.key !== key) continue;
      if (rec.status !== 200) {
        if (unknownOutcome(rec) && !landed.has(rec.tag)) figures.unknownNotLanded++;
        continue;
      }
      figures.acknowledged++;
      ackedVersions.set(rec.version ?? -1, (ackedVersions.get(rec.version ?? -1) ?? 0) + 1);
      const v = rec.version === undefined ? undefined : stored.get(rec.version);
      if (!v) acked.push(`${key}: request ${rec.tag} got 200 with version ${rec.version}, which is not stored`);
      else if (v.masked_key !== `****${rec.tag}` || v.fingerprint !== rec.fingerprint) {
        acked.push(`${key} v${rec.version}: acknowledged to request ${rec.tag} (${rec.fingerprint}), but it holds ${v.masked_key} (${v.fingerprint})`);
      }
      if (rec.ifMatch !== undefined && rec.version !== rec.ifMatch + 1) ifMatch.push(`${key}: If-Match "${rec.ifMatch}" answered 200 with version ${rec.version}`);
    }
    for (const [version, n] of ackedVersions) if (n > 1) twice.push(`${key} v${version}: acknowledged to ${n} requests`);
    const last = versions[versions.length - 1];
    const sent = last ? byKeyTag.get(`${key}/${tagOf(last.masked_key)}`) : undefined;
    const dec = state.decrypted;
    if (!last || dec.version !== last.version || !sent || dec.api_key !== sent.value) {
      current.push(`${key}: current version ${dec.version} (newest stored ${last?.version}) does not decrypt to the value its request sent`);
    }
  }
  return {
    figures,
    checks: [
      checkOf('versions are contiguous 1..N for every key (no gaps)', gaps, `${states.size} keys, ${figures.stored} versions`),
      checkOf('every stored version holds the value of one request that got 200 or no clear answer', foreign, `${figures.stored} versions traced to their requests`),
      checkOf('every 200 names a stored version holding its value (masked tag and fingerprint)', acked, `${figures.acknowledged} acknowledged versions found`),
      checkOf('no version acknowledged to two requests', twice, 'none'),
      checkOf('a 200 under If-Match is exactly the next version', ifMatch, 'all'),
      checkOf("each key's current version is its newest and decrypts to the value its request sent", current, `${states.size} keys`),
    ],
  };
}

export type ChainVerdict = { ok: boolean; checked: number; first_bad_id?: number; problem?: string };

/** (b) The audit chain verifies, and each key has one `platform_key.put` row per version, with that version's fingerprint. */
export function judgeAudit(verdict: ChainVerdict, states: Map<string, KeyState>, audits: Map<string, AuditItem[]>): Check[] {
  const problems: string[] = [];
  let rows = 0;
  for (const [key, state] of states) {
    const versions = new Map(state.versions.map((v) => [v.version, v.fingerprint]));
    const audit = audits.get(key) ?? [];
    rows += audit.length;
    const seen = new Map<number, number>();
    for (const a of audit) {
      if (a.version === null || !versions.has(a.version)) problems.push(`${key}: audit row ${a.id} names version ${a.version}, which is not stored`);
      else if (a.details.fingerprint !== versions.get(a.version)) problems.push(`${key}: audit row ${a.id} (v${a.version}) has another fingerprint than the version`);
      if (a.version !== null) seen.set(a.version, (seen.get(a.version) ?? 0) + 1);
    }
    for (const v of versions.keys()) if (seen.get(v) !== 1) problems.push(`${key} v${v}: ${seen.get(v) ?? 0} platform_key.put audit rows`);
  }
  return [
    { ok: verdict.ok === true, what: 'the audit hash chain verifies', detail: verdict.ok ? `${verdict.checked} rows` : `${verdict.problem} at row ${verdict.first_bad_id} after ${verdict.checked}` },
    checkOf('one platform_key.put audit row per version, with its fingerprint', problems, `${rows} rows`),
  ];
}

export async function fetchAudit(admin: JsonClient, keys: string[]): Promise<{ verdict: ChainVerdict; audits: Map<string, AuditItem[]> }> {
  const verdict = (await admin.expect(200, 'GET', '/api/v1/admin/audit/verify')).body as ChainVerdict;
  const audits = new Map<string, AuditItem[]>();
  for (const key of keys) {
    audits.set(key, await allItems<AuditItem>(admin, `/api/v1/admin/audit?target=${encodeURIComponent(`platform_key/${key}`)}&action=platform_key.put`));
  }
  return { verdict, audits };
}

/** The value of `VAR=` in an env file's text. */
export function envLine(text: string, envVar: string): string | undefined {
  return text.split('\n').find((l) => l.startsWith(`${envVar}=`))?.slice(envVar.length + 1);
}

/** Keys whose line in the env file's text is not their current value. */
export function staleInEnv(text: string, states: Map<string, KeyState>): string[] {
  return [...states].filter(([, s]) => envLine(text, s.decrypted.env_var) !== s.decrypted.api_key).map(([key, s]) => `${key} (${s.decrypted.env_var})`);
}

/**
 * (c) litellm.env ends with every key's current value: polled until `deadlineMs` after `since` (the
 * end of the load, performance.now()) for the sync to settle.
 */
export async function checkEnvFile(outputDir: string, states: Map<string, KeyState>, since: number, deadlineMs: number): Promise<Check> {
  const file = path.join(outputDir, 'litellm.env');
  const what = "litellm.env holds every key's current value";
  for (;;) {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      text = '';
    }
    const stale = staleInEnv(text, states);
    const waited = performance.now() - since;
    if (stale.length === 0) return { ok: true, what, detail: `${states.size} keys, settled ${Math.round(waited)} ms after the load stopped` };
    if (waited > deadlineMs) return { ok: false, what, detail: `${Math.round(waited)} ms after the load stopped, not current: ${show(stale)}` };
    await new Promise((r) => setTimeout(r, 50));
  }
}
