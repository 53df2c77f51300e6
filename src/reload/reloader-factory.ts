import type Docker from 'dockerode';
import type { Settings } from '../config';
import type { Keyring } from '../crypto/keyring';
import type { Pool } from '../db/pool';
import { LitellmStateStore } from '../litellm/litellm-state-store';
import type { Logger, SecretRegistry } from '../log';
import { CommandReloader } from './command';
import { createDockerClient, DockerReloader, MAX_OWN_STOP_TIMEOUT_S } from './docker';
import { LitellmApiReloader } from './litellm-api';
import { NoneReloader } from './none';
import type { Reloader } from './reloader';

export interface ReloaderDeps {
  log: Logger;
  secrets?: SecretRegistry;
  /** A ready Docker client (tests); otherwise one is made for DOCKER_HOST. */
  docker?: { docker: Docker; where: string };
  /** keyplane's database and keyring: `litellm-api` keeps its ledger there and reads older master key versions. */
  pool?: Pool;
  keyring?: Pick<Keyring, 'decrypt'>;
}

/**
 * The reloader `KEYPLANE_RELOAD` names. Settings were validated by loadSettings; a bad DOCKER_HOST
 * throws a ConfigError here, at start-up.
 */
export function createReloader(settings: Settings, deps: ReloaderDeps): Reloader {
  switch (settings.reload) {
    case 'none':
      return new NoneReloader();
    case 'command':
      return new CommandReloader({
        command: settings.reloadCommand ?? '',
        timeoutMs: settings.reloadTimeoutMs,
        litellmUrl: settings.litellmUrl,
        targets: settings.reloadTargets,
        readyTimeoutMs: settings.readyTimeoutMs,
        settleMs: settings.rolloutSettleMs,
        log: deps.log,
        secrets: deps.secrets,
      });
    case 'docker': {
      // Docker calls include a stop that may take the whole stop timeout.
      const client = deps.docker ?? createDockerClient(settings.dockerHost, ((settings.dockerStopTimeoutS ?? MAX_OWN_STOP_TIMEOUT_S) + 30) * 1000);
      return new DockerReloader({
        ...client,
        containers: settings.dockerContainers,
        label: settings.dockerLabel,
        mode: settings.dockerMode,
        stopTimeoutS: settings.dockerStopTimeoutS,
        readyTimeoutMs: settings.readyTimeoutMs,
        settleMs: settings.rolloutSettleMs,
        litellmUrl: settings.litellmUrl,
        log: deps.log,
      });
    }
    case 'litellm-api': {
      const { pool, keyring } = deps;
      if (!pool || !keyring) throw new Error('the litellm-api reloader needs keyplane\'s database and keyring');
      const store = new LitellmStateStore(pool, (jwe, ref) => keyring.decrypt(jwe, ref));
      return new LitellmApiReloader({ url: settings.litellmUrl, masterKey: settings.litellmMasterKey, store, log: deps.log });
    }
  }
}
