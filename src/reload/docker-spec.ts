import type Docker from 'dockerode';
import type { ReloadRequest } from './reloader';

/** The env variables keyplane put into a recreated container, so that a deleted key is removed next time. */
export const LABEL_MANAGED_ENV = 'keyplane.managed-env';
export const LABEL_REVISION = 'keyplane.revision';

type Info = Docker.ContainerInspectInfo;

export interface ReplacementSpec {
  create: Docker.ContainerCreateOptions;
  /** API 1.41 takes one network at create; these are connected before the start. */
  laterNetworks: Array<[string, Docker.EndpointSettings]>;
}

/**
 * The old container's configuration, with the rendered env for the variables keyplane manages
 * (others kept) and every volume it had: named and anonymous ones alike are mounted again where
 * they were, so that data in a `VOLUME` path or a `-v /path` survives the recreate.
 */
export async function replacementSpec(docker: Docker, info: Info, req: ReloadRequest): Promise<ReplacementSpec> {
  const cfg = info.Config;
  const keys = Object.keys(req.env).sort();
  const managed = new Set([...(cfg.Labels?.[LABEL_MANAGED_ENV] ?? '').split(',').filter(Boolean), ...keys]);
  const env = (cfg.Env ?? []).filter((e) => !managed.has(e.slice(0, e.indexOf('=') < 0 ? e.length : e.indexOf('='))));
  for (const k of keys) env.push(`${k}=${req.env[k]!}`);

  // The same image the old one runs, even if its tag has since moved to another image.
  let image = info.Image;
  try {
    if ((await docker.getImage(cfg.Image).inspect()).Id === info.Image) image = cfg.Image;
  } catch {
    // The tag is gone: the image id still works.
  }

  const create: Docker.ContainerCreateOptions = {
    ...(cfg as unknown as Docker.ContainerCreateOptions),
    Image: image,
    Env: env,
    Labels: { ...cfg.Labels, [LABEL_MANAGED_ENV]: keys.join(','), [LABEL_REVISION]: String(req.revision) },
    HostConfig: { ...info.HostConfig, Mounts: carriedMounts(info) },
  };
  // Docker's default hostname is the container id; the replacement gets its own.
  if (cfg.Hostname && info.Id.startsWith(cfg.Hostname)) delete create.Hostname;

  const laterNetworks: Array<[string, Docker.EndpointSettings]> = [];
  const mode = info.HostConfig.NetworkMode ?? 'default';
  if (!['host', 'none'].includes(mode) && !mode.startsWith('container:')) {
    const endpoints = Object.entries(info.NetworkSettings.Networks ?? {}).map(([name, ep]): [string, Docker.EndpointSettings] => [
      name,
      {
        IPAMConfig: ep.IPAMConfig ?? undefined,
        Links: ep.Links ?? undefined,
        // Docker adds the short container id as an alias; the replacement gets its own.
        Aliases: (ep.Aliases as string[] | null | undefined)?.filter((a) => !info.Id.startsWith(a)),
      },
    ]);
    const primaryName = mode === 'default' ? 'bridge' : mode;
    const primary = endpoints.find(([name]) => name === primaryName) ?? endpoints[0];
    if (primary) {
      create.NetworkingConfig = { EndpointsConfig: { [primary[0]]: primary[1] } };
      laterNetworks.push(...endpoints.filter((e) => e !== primary));
    }
  }
  return { create, laterNetworks };
}

/**
 * HostConfig.Mounts for the replacement: the old one's own (an anonymous `--mount type=volume`
 * given the volume it got), plus every volume it had that neither Binds nor Mounts name (image
 * `VOLUME`s and `-v /path`, which Docker would otherwise give fresh, empty volumes).
 */
function carriedMounts(info: Info): Docker.MountSettings[] | undefined {
  const own = info.HostConfig.Mounts ?? [];
  const volumeAt = new Map<string, string>();
  for (const m of info.Mounts ?? []) if (m.Type === 'volume' && m.Name) volumeAt.set(m.Destination, m.Name);
  const covered = new Set([...(info.HostConfig.Binds ?? []).map(bindTarget), ...own.map((m) => m.Target)]);
  const out = own.map((m) => (m.Type === 'volume' && !m.Source && volumeAt.has(m.Target) ? { ...m, Source: volumeAt.get(m.Target)! } : m));
  for (const m of info.Mounts ?? []) {
    if (m.Type === 'volume' && m.Name && !covered.has(m.Destination)) out.push({ Type: 'volume', Source: m.Name, Target: m.Destination, ReadOnly: !m.RW });
  }
  return out.length ? out : undefined;
}

/** `src:dest[:opts]` -> `dest` (Linux paths hold no colon). */
function bindTarget(bind: string): string {
  const parts = bind.split(':');
  return parts.length > 1 ? parts[1]! : parts[0]!;
}
