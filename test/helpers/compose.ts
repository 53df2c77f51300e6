import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

export const COMPOSE_DIR = path.join(__dirname, '..', '..', 'compose');
export const COMPOSE_FILE = path.join(COMPOSE_DIR, 'docker-compose.yml');

export interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  entrypoint?: string[];
  command?: string[];
  user?: string;
  environment?: Record<string, string>;
  labels?: Record<string, string>;
  secrets?: string[];
  volumes?: string[];
  networks?: string[];
  network_mode?: string;
  ports?: string[];
  group_add?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
  profiles?: string[];
  init?: boolean;
  restart?: string;
  read_only?: boolean;
}

export interface ComposeFile {
  name: string;
  services: Record<string, ComposeService>;
  secrets: Record<string, { file: string }>;
  networks: Record<string, { driver?: string }>;
  volumes: Record<string, unknown>;
}

/** The compose file as Compose v2 reads it (YAML aliases resolved). */
export function loadCompose(): ComposeFile {
  return YAML.parse(readFileSync(COMPOSE_FILE, 'utf8')) as ComposeFile;
}

/**
 * The variables Compose interpolates in `value` (`${NAME...}` or `$NAME`); `$$` is a literal `$`
 * and is skipped.
 */
export function interpolated(value: string): string[] {
  const names: string[] = [];
  for (let i = 0; i < value.length; i++) {
    if (value[i] !== '$') continue;
    if (value[i + 1] === '$') {
      i++;
      continue;
    }
    let j = i + 1;
    if (value[j] === '{') j++;
    const start = j;
    while (j < value.length && /[A-Za-z0-9_]/.test(value[j]!)) j++;
    names.push(value.slice(start, j));
  }
  return names;
}

/** A value as the container gets it: Compose turns `$$` into `$` (the file's only use of `$`). */
export function uninterpolated(value: string): string {
  const names = interpolated(value);
  if (names.length) throw new Error(`expected no interpolation, found ${names.join(', ')}`);
  return value.replaceAll('$$', '$');
}

/**
 * The shell script LiteLLM's container starts with (its entrypoint is `sh -c`), with the final
 * `exec litellm ...` swapped for `exec <replacement>` and the output directory (its mount target)
 * swapped for `outDir`, so that a stand-in or a test can run it.
 */
export function litellmStartScript(compose: ComposeFile, replacement: string, outDir?: string): string {
  const svc = compose.services.litellm!;
  if (JSON.stringify(svc.entrypoint) !== JSON.stringify(['/bin/sh', '-c'])) throw new Error(`litellm's entrypoint is not sh -c: ${JSON.stringify(svc.entrypoint)}`);
  const script = uninterpolated(svc.command![0]!);
  const execLine = /^exec litellm .*$/m;
  if (!execLine.test(script)) throw new Error('litellm start script does not end in exec litellm');
  const target = litellmOutputDir(compose);
  const swapped = script.replace(execLine, `exec ${replacement}`);
  return outDir === undefined ? swapped : swapped.replaceAll(`${target}/`, `${outDir}/`);
}

/** Where LiteLLM's container mounts the output directory (the volume keyplane writes into). */
export function litellmOutputDir(compose: ComposeFile): string {
  const out = compose.services.keyplane!.environment!.KEYPLANE_OUTPUT_DIR!;
  const volume = compose.services.keyplane!.volumes!.find((v) => v.split(':')[1] === out)!.split(':')[0]!;
  return compose.services.litellm!.volumes!.find((v) => v.split(':')[0] === volume)!.split(':')[1]!;
}
