import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const REPO = path.resolve(__dirname, '..', '..');
export const INSTALL = path.join(REPO, 'systemd', 'install.sh');
/** Where install.sh puts the units, relative to the root it installs into. */
export const UNIT_DIR = 'usr/local/lib/systemd/system';
export const SOURCE_UNITS = readdirSync(path.join(REPO, 'systemd'))
  .filter((f) => /\.(service|path|socket|timer)$/.test(f))
  .sort();

export interface Entry {
  mode: number;
  uid: number;
  gid: number;
  /** Content hash of a file, target of a symlink. */
  content?: string;
}

/** Every path under `root` (relative) with its mode, owner and content, skipping what `skip` names. */
export function snapshot(root: string, skip: (rel: string) => boolean = () => false): Map<string, Entry> {
  const out = new Map<string, Entry>();
  const walk = (rel: string): void => {
    const abs = path.join(root, rel);
    const st = lstatSync(abs);
    const entry: Entry = { mode: st.mode, uid: st.uid, gid: st.gid };
    if (st.isFile()) entry.content = createHash('sha256').update(readFileSync(abs)).digest('hex');
    if (st.isSymbolicLink()) entry.content = readlinkSync(abs);
    out.set(rel || '.', entry);
    if (st.isDirectory()) for (const name of readdirSync(abs)) if (!skip(path.join(rel, name))) walk(path.join(rel, name));
  };
  walk('');
  return out;
}

/** `name -> [uid, gid]` from a passwd file, `name -> gid` from a group file. */
export function readIds(root: string): { users: Map<string, [number, number]>; groups: Map<string, number>; passwdLines: string[] } {
  const lines = (f: string): string[][] =>
    readFileSync(path.join(root, 'etc', f), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(':'));
  const passwd = lines('passwd');
  return {
    users: new Map(passwd.map((p) => [p[0]!, [Number(p[2]), Number(p[3])]])),
    groups: new Map(lines('group').map((g) => [g[0]!, Number(g[2])])),
    passwdLines: passwd.map((p) => p[0]!),
  };
}

/** The path of a program as this host's shell finds it (undefined when it has none). */
export function hostProgram(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v "$1"', 'sh', name], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** `Key=value` lines of one unit file (comments and sections dropped), in order. */
export function unitSettings(text: string): [string, string][] {
  return text
    .split('\n')
    .filter((l) => /^[A-Za-z]+=/.test(l))
    .map((l) => {
      const at = l.indexOf('=');
      return [l.slice(0, at), l.slice(at + 1)];
    });
}

/**
 * A root that `systemd-analyze verify --root` can check units in, offline: the given unit files,
 * this host's targets (the units' default dependencies), and an executable stub at each path in
 * `programs` (the programs the units run come from the target host, not from install.sh).
 */
export function verifyRoot(dir: string, units: Record<string, string>, programs: string[]): void {
  mkdirSync(path.join(dir, UNIT_DIR), { recursive: true });
  for (const [name, text] of Object.entries(units)) writeFileSync(path.join(dir, UNIT_DIR, name), text);
  const targets = path.join(dir, 'usr/lib/systemd/system');
  mkdirSync(targets, { recursive: true });
  const hostUnits = ['/lib/systemd/system', '/usr/lib/systemd/system'].find((d) => {
    try {
      return readdirSync(d).some((f) => f === 'sysinit.target');
    } catch {
      return false;
    }
  });
  if (!hostUnits) throw new Error("this host has no systemd units (sysinit.target): install Debian's systemd package");
  for (const f of readdirSync(hostUnits)) if (f.endsWith('.target')) copyFileSync(path.join(hostUnits, f), path.join(targets, f));
  for (const p of programs) {
    const stub = path.join(dir, p);
    mkdirSync(path.dirname(stub), { recursive: true });
    writeFileSync(stub, '#!/bin/sh\n');
    chmodSync(stub, 0o755);
  }
}

export interface Outcome {
  code: number;
  output: string;
}

async function outcome(cmd: string, args: string[]): Promise<Outcome> {
  try {
    const r = await run(cmd, args, { encoding: 'utf8' });
    return { code: 0, output: (r.stdout + r.stderr).trim() };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, output: `${e.stdout ?? ''}${e.stderr ?? ''}`.trim() };
  }
}

/**
 * `systemd-analyze verify` on units inside `root`. It exits 0 on many mistakes (an unknown key, a
 * bad value, an unknown section are "ignoring" warnings), so a unit passes only with exit 0 AND no
 * output at all.
 */
export function verifyUnits(root: string, units: string[]): Promise<Outcome> {
  return outcome('systemd-analyze', ['verify', `--root=${root}`, ...units]);
}

/** `systemd-analyze security` offline: exit 0 when the unit's exposure is at most threshold/10. */
export function securityCheck(root: string, unit: string, threshold: number): Promise<Outcome> {
  return outcome('systemd-analyze', ['security', '--offline=yes', `--root=${root}`, `--threshold=${threshold}`, '--no-pager', unit]);
}
