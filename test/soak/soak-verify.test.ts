import type { PutRecord } from './soak-clients';
import { ValueMaker } from './soak-clients';
import { judgeAudit, judgeVersions, staleInEnv, type AuditItem, type Check, type KeyState } from './soak-verify';

/**
 * The soak's verdicts, on a small made-up history: a consistent one passes every check, and each
 * kind of loss or lie the soak looks for fails exactly the check that names it.
 */
describe('soak verdicts', () => {
  const values = new ValueMaker('sk-soak-test');
  const fp = (tag: string): string => `hmac-sha256:${tag}`;

  /** Key `a`: v1..v3 acknowledged (v3 under If-Match "2"), one 412, one unknown outcome that did not land. */
  function history(): { records: PutRecord[]; states: Map<string, KeyState>; audits: Map<string, AuditItem[]> } {
    const records: PutRecord[] = [];
    const put = (status: number, extra: Partial<PutRecord> = {}): PutRecord => {
      const { tag, value } = values.next('a', 1);
      const r: PutRecord = { client: 1, key: 'a', tag, value, startedAt: 0, endedAt: 1, status, ...extra };
      if (status === 200) Object.assign(r, { fingerprint: fp(tag) });
      records.push(r);
      return r;
    };
    const v1 = put(200, { version: 1 });
    const v2 = put(200, { version: 2 });
    put(412, { ifMatch: 1, problem: 'precondition-failed' });
    const v3 = put(200, { version: 3, ifMatch: 2 });
    put(503, { problem: 'commit-outcome-unknown' });
    const versions = [v1, v2, v3].map((r) => ({ version: r.version!, fingerprint: fp(r.tag), masked_key: `****${r.tag}` }));
    const states = new Map([['a', { versions: [...versions].reverse(), decrypted: { api_key: v3.value, version: 3, env_var: 'A_API_KEY' } }]]);
    const audits = new Map([['a', versions.map((v, i) => ({ id: i + 1, version: v.version, details: { fingerprint: v.fingerprint } }))]]);
    return { records, states, audits };
  }

  const failed = (checks: Check[]): string[] => checks.filter((c) => !c.ok).map((c) => c.what);
  const ok = { ok: true, checked: 3 };

  it('a consistent history passes every check and counts what it saw', () => {
    const h = history();
    const v = judgeVersions(h.states, h.records);
    expect(failed(v.checks)).toEqual([]);
    expect(v.checks).toHaveLength(6);
    expect(v.figures).toEqual({ stored: 3, acknowledged: 3, unknownLanded: 0, unknownNotLanded: 1 });
    expect(failed(judgeAudit(ok, h.states, h.audits))).toEqual([]);
  });

  it('a gap in the versions', () => {
    const h = history();
    h.states.get('a')!.versions.splice(1, 1); // v2 gone
    expect(failed(judgeVersions(h.states, h.records).checks)).toEqual([
      'versions are contiguous 1..N for every key (no gaps)',
      'every 200 names a stored version holding its value (masked tag and fingerprint)',
    ]);
  });

  it('a change answered 412 that was stored anyway', () => {
    const h = history();
    const refused = h.records.find((r) => r.status === 412)!;
    h.states.get('a')!.versions.unshift({ version: 4, fingerprint: fp(refused.tag), masked_key: `****${refused.tag}` });
    h.states.get('a')!.decrypted = { api_key: refused.value, version: 4, env_var: 'A_API_KEY' };
    expect(failed(judgeVersions(h.states, h.records).checks)).toEqual(['every stored version holds the value of one request that got 200 or no clear answer']);
  });

  it('an unknown outcome that landed is counted, not failed', () => {
    const h = history();
    const unknown = h.records.find((r) => r.problem === 'commit-outcome-unknown')!;
    h.states.get('a')!.versions.unshift({ version: 4, fingerprint: fp(unknown.tag), masked_key: `****${unknown.tag}` });
    h.states.get('a')!.decrypted = { api_key: unknown.value, version: 4, env_var: 'A_API_KEY' };
    const v = judgeVersions(h.states, h.records);
    expect(failed(v.checks)).toEqual([]);
    expect(v.figures).toMatchObject({ unknownLanded: 1, unknownNotLanded: 0 });
  });

  it('one value stored twice', () => {
    const h = history();
    const first = h.states.get('a')!.versions.find((v) => v.version === 1)!;
    h.states.get('a')!.versions.push({ ...first, version: 4 });
    expect(failed(judgeVersions(h.states, h.records).checks)).toContain('every stored version holds the value of one request that got 200 or no clear answer');
  });

  it('one version acknowledged to two requests (one of them holds another value)', () => {
    const h = history();
    h.records.find((r) => r.version === 1)!.version = 2;
    expect(failed(judgeVersions(h.states, h.records).checks)).toEqual([
      'every 200 names a stored version holding its value (masked tag and fingerprint)',
      'no version acknowledged to two requests',
    ]);
  });

  it('a 200 whose fingerprint is not the stored one', () => {
    const h = history();
    h.records.find((r) => r.version === 2)!.fingerprint = 'hmac-sha256:other';
    expect(failed(judgeVersions(h.states, h.records).checks)).toEqual(['every 200 names a stored version holding its value (masked tag and fingerprint)']);
  });

  it('a 200 under a stale If-Match (a lost update)', () => {
    const h = history();
    h.records.find((r) => r.version === 3)!.ifMatch = 1;
    expect(failed(judgeVersions(h.states, h.records).checks)).toEqual(['a 200 under If-Match is exactly the next version']);
  });

  it('a current value that is not the newest version\'s', () => {
    const h = history();
    h.states.get('a')!.decrypted.api_key = h.records[0]!.value;
    expect(failed(judgeVersions(h.states, h.records).checks)).toEqual(["each key's current version is its newest and decrypts to the value its request sent"]);
  });

  it('the audit: a broken chain, a missing row, a duplicate, another fingerprint', () => {
    const h = history();
    expect(failed(judgeAudit({ ok: false, checked: 1, first_bad_id: 2, problem: 'x' }, h.states, h.audits))).toEqual(['the audit hash chain verifies']);
    const missing = history();
    missing.audits.get('a')!.pop();
    expect(failed(judgeAudit(ok, missing.states, missing.audits))).toEqual(['one platform_key.put audit row per version, with its fingerprint']);
    const dup = history();
    dup.audits.get('a')!.push({ ...dup.audits.get('a')![0]!, id: 9 });
    expect(failed(judgeAudit(ok, dup.states, dup.audits))).toEqual(['one platform_key.put audit row per version, with its fingerprint']);
    const other = history();
    other.audits.get('a')![1]!.details.fingerprint = 'hmac-sha256:other';
    expect(failed(judgeAudit(ok, other.states, other.audits))).toEqual(['one platform_key.put audit row per version, with its fingerprint']);
  });

  it('the env file: a key whose line is not its current value', () => {
    const h = history();
    const current = h.states.get('a')!.decrypted.api_key;
    expect(staleInEnv(`A_API_KEY=${current}\n`, h.states)).toEqual([]);
    expect(staleInEnv(`A_API_KEY=${h.records[0]!.value}\n`, h.states)).toEqual(['a (A_API_KEY)']);
    expect(staleInEnv('', h.states)).toEqual(['a (A_API_KEY)']);
  });
});
