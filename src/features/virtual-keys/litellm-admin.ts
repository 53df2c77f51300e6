import type { Pool } from '../../db/pool';
import { AppError } from '../../http/errors';
import { MASTER_KEY_NAME } from '../../key-rules';
import { LitellmApiError, LitellmClient } from '../../litellm/client';
import type { LitellmStateStore } from '../../litellm/litellm-state-store';
import { displayUrl } from '../../url';

export interface LitellmAdminOptions {
  url: string;
  /** KEYPLANE_LITELLM_MASTER_KEY: always used when set. Otherwise the stored litellm_master_key. */
  masterKey?: string;
  pool: Pool;
  /** Reads the stored master key's versions, and the one LiteLLM last accepted (shared with the litellm-api reloader). */
  state: LitellmStateStore;
  timeoutMs?: number;
}

/** A LiteLLM error as the admin API answers it: problem+json with LiteLLM's own (scrubbed) message. */
export class LitellmProblem extends AppError {
  constructor(status: number, type: string, title: string, message: string, readonly litellmStatus?: number) {
    super(status, type, title, message, litellmStatus === undefined ? {} : { litellm_status: litellmStatus });
  }
}

/**
 * LiteLLM's admin API as the virtual key routes use it: signed in with KEYPLANE_LITELLM_MASTER_KEY,
 * or with the stored litellm_master_key in the version LiteLLM accepts (as the litellm-api reloader
 * does: after a rotation LiteLLM keeps the key it started with until it restarts), and every
 * failure turned into a problem a caller can act on.
 */
export class LitellmAdmin {
  readonly url: string;

  constructor(private readonly opts: LitellmAdminOptions) {
    this.url = displayUrl(opts.url);
  }

  /**
   * Runs `fn` with a client LiteLLM accepts. A refused master key is answered before anything is
   * done, so trying the next version is safe for writes too. Throws LitellmApiError.
   */
  async run<T>(fn: (c: LitellmClient) => Promise<T>): Promise<T> {
    const client = (masterKey: string): LitellmClient => new LitellmClient({ url: this.opts.url, masterKey, timeoutMs: this.opts.timeoutMs });
    if (this.opts.masterKey) return fn(client(this.opts.masterKey));
    const { rows } = await this.opts.pool.query<{ v: number }>('SELECT current_version AS v FROM platform_keys WHERE name = $1', [MASTER_KEY_NAME]);
    const current = rows[0]?.v;
    if (current === undefined) {
      throw new LitellmProblem(409, 'litellm-not-configured', 'LiteLLM not configured',
        `virtual keys are made through LiteLLM's admin API, which needs its master key: set KEYPLANE_LITELLM_MASTER_KEY, or store the ${MASTER_KEY_NAME} platform key`);
    }
    const known = await this.opts.state.knownMasterVersion();
    const versions = known !== null && known !== current ? [known, current] : [current];
    let refused: LitellmApiError | undefined;
    for (const v of versions) {
      const key = await this.opts.state.masterKeyAt(v);
      if (key === undefined) continue;
      try {
        const out = await fn(client(key));
        if (v !== known) await this.opts.state.setKnownMasterVersion(v);
        return out;
      } catch (err) {
        if (!(err instanceof LitellmApiError) || err.kind !== 'unauthorized') throw err;
        refused = err;
      }
    }
    throw refused ?? new LitellmApiError('unauthorized', 'sign in', `no version of ${MASTER_KEY_NAME} is stored`);
  }

  /** `run`, with LiteLLM's failures as problems (409 without a database, 502/504 when LiteLLM fails, LiteLLM's 4xx passed on). */
  async call<T>(fn: (c: LitellmClient) => Promise<T>): Promise<T> {
    try {
      return await this.run(fn);
    } catch (err) {
      throw err instanceof LitellmApiError ? this.problem(err) : err;
    }
  }

  problem(err: LitellmApiError): LitellmProblem {
    const said = unwrap(err.message);
    switch (err.kind) {
      case 'no-database':
        return new LitellmProblem(409, 'litellm-no-database', 'LiteLLM has no database',
          `virtual keys live in LiteLLM's database, and LiteLLM at ${this.url} runs without one: start it with DATABASE_URL set (LiteLLM said: ${said})`, err.status);
      case 'unauthorized':
        return new LitellmProblem(502, 'litellm-unauthorized', 'LiteLLM refused keyplane', `${said}; set KEYPLANE_LITELLM_MASTER_KEY to the master key LiteLLM runs with`, err.status);
      case 'unreachable':
        return new LitellmProblem(502, 'litellm-unreachable', 'LiteLLM unreachable', `${said}; nothing was changed`);
      case 'timeout':
        return new LitellmProblem(504, 'litellm-timeout', 'LiteLLM timed out', `${said}; LiteLLM may or may not have done it: read the virtual key before trying again`);
      case 'http': {
        const s = err.status ?? 500;
        // A request LiteLLM refused is the caller's to fix; LiteLLM failing (5xx) is not.
        if (s === 404) return new LitellmProblem(404, 'litellm-not-found', 'Not found in LiteLLM', said, s);
        if (s === 400 && /already exists/i.test(said)) return new LitellmProblem(409, 'litellm-conflict', 'Conflict in LiteLLM', said, s);
        // The master key is LiteLLM's admin: a 4xx refuses what was asked (an Enterprise feature, a limit in LiteLLM's config), not who asked.
        if (s >= 400 && s < 500) return new LitellmProblem(422, 'litellm-refused', 'LiteLLM refused the request', said, s);
        return new LitellmProblem(502, 'litellm-error', 'LiteLLM failed', said, s);
      }
      default:
        return new LitellmProblem(502, 'litellm-error', 'LiteLLM failed', said, err.status);
    }
  }
}

/**
 * LiteLLM puts an HTTPException's dict detail into its message as Python prints it,
 * `{'error': '...'}`: the text inside is what it said.
 */
function unwrap(message: string): string {
  return message.replace(/\{'error': '((?:[^'\\]|\\.)*)'\}|\{'error': "([^"]*)"\}/g, (_m, a: string | undefined, b: string | undefined) => (a ?? b ?? '').replace(/\\'/g, "'"));
}
