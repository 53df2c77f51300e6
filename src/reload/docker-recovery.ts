import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';

/**
 * A recreate renames the old container aside (`<name>-kp-prev-<hex>`), creates the replacement,
 * stops the old one, starts the replacement and, once every target is live, removes the old one.
 * A crash of keyplane or of the Docker engine in between leaves the old container aside, and
 * between the stop and the start LiteLLM down. Recovery puts that right from what is on the
 * engine alone, before anything else touches the targets.
 */

const ASIDE_MARK = '-kp-prev-';
/** Marks a container set aside while it was not running: recovery must not start it. */
const STOPPED_MARK = '-stopped';
// Linear: one fixed-length suffix, tried at each end position of the greedy prefix.
const ASIDE = /^(.+)-kp-prev-[0-9a-f]{6}(-stopped)?$/;

export function asideName(name: string, running: boolean): string {
  return `${name}${ASIDE_MARK}${randomBytes(3).toString('hex')}${running ? '' : STOPPED_MARK}`;
}

interface Aside {
  id: string;
  name: string;
  created: number;
  running: boolean;
  /** It was running when it was set aside. */
  wasRunning: boolean;
}

/**
 * For each target (by name, or every container with the label) with containers set aside:
 * - the target runs: the reload got that far, so what was set aside goes;
 * - the target exists but does not run (the crash came before the replacement was live): the
 *   replacement goes, the newest container set aside takes its name back, and starts again if it
 *   was running when it was set aside;
 * - the target is missing (the crash came between the rename and the create): the newest
 *   container set aside takes its name back (and starts again, likewise).
 * Older leftovers go. A container's volumes stay (never `v: true`). Returns what it did.
 */
export async function recoverInterrupted(docker: Docker, scope: { containers: string[]; label?: string }): Promise<string[]> {
  const groups = new Map<string, Aside[]>();
  const lists = scope.containers.length
    ? await Promise.all(scope.containers.map((name) => docker.listContainers({ all: true, filters: { name: [`${name}${ASIDE_MARK}`] } })))
    : [await docker.listContainers({ all: true, filters: { label: [scope.label ?? ''] } })];
  for (const c of lists.flat()) {
    for (const raw of c.Names) {
      const name = raw.replace(/^\//, '');
      const m = ASIDE.exec(name);
      if (!m || (scope.containers.length && !scope.containers.includes(m[1]!))) continue;
      const list = groups.get(m[1]!) ?? [];
      if (!list.some((a) => a.id === c.Id)) list.push({ id: c.Id, name, created: c.Created, running: c.State === 'running', wasRunning: !m[2] });
      groups.set(m[1]!, list);
    }
  }
  const done: string[] = [];
  for (const [target, asides] of groups) {
    asides.sort((a, b) => b.created - a.created || (a.name < b.name ? 1 : -1));
    const current = await inspectIfExists(docker, target);
    let leftovers = asides;
    if (!current?.State.Running && !current?.State.Restarting) {
      const [keep, ...rest] = asides;
      leftovers = rest;
      if (current) {
        await ignoreStatus(docker.getContainer(current.Id).remove({ force: true }), 404);
        done.push(`${target}: removed the replacement that never ran`);
      }
      await docker.getContainer(keep!.id).rename({ name: target });
      done.push(`${keep!.name}: renamed back to ${target}`);
      if (keep!.wasRunning && !keep!.running) {
        await ignoreStatus(docker.getContainer(keep!.id).start(), 304);
        done.push(`${target}: started again`);
      }
    }
    for (const a of leftovers) {
      await ignoreStatus(docker.getContainer(a.id).remove({ force: true }), 404);
      done.push(`${a.name}: removed`);
    }
  }
  return done;
}

async function inspectIfExists(docker: Docker, name: string): Promise<Docker.ContainerInspectInfo | undefined> {
  try {
    return await docker.getContainer(name).inspect();
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return undefined;
    throw err;
  }
}

/** Awaits a Docker call, treating the given HTTP statuses (304 already stopped, 404 gone) as done. */
export async function ignoreStatus(p: Promise<unknown>, ...statuses: number[]): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (!statuses.includes((err as { statusCode?: number }).statusCode ?? 0)) throw err;
  }
}
