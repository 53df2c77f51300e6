import http from 'node:http';

export interface HttpResult {
  status: number;
  /** The parsed JSON body, or undefined when there was none or it was not JSON. */
  body: unknown;
  ms: number;
}

/** A failure below HTTP (refused, reset, timed out): no status came back. */
export class NetworkError extends Error {
  constructor(readonly code: string, message: string, readonly ms: number) {
    super(message);
  }
}

/**
 * A small JSON client over keep-alive connections of its own (one Agent per client, so each of the
 * soak's clients is a client with its own connection, as a real one would be).
 */
export class JsonClient {
  private readonly agent: http.Agent;

  constructor(
    private readonly base: string,
    private readonly token: string,
    sockets = 1,
    private readonly timeoutMs = 30_000,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: sockets });
  }

  request(method: string, path: string, opts: { body?: unknown; headers?: Record<string, string> } = {}): Promise<HttpResult> {
    const started = performance.now();
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    return new Promise((resolve, reject) => {
      const req = http.request(
        new URL(path, this.base),
        {
          method,
          agent: this.agent,
          timeout: this.timeoutMs,
          headers: {
            authorization: `Bearer ${this.token}`,
            ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
            ...opts.headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err: NodeJS.ErrnoException) => reject(new NetworkError(err.code ?? 'ERESPONSE', err.message, performance.now() - started)));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let body: unknown;
            try {
              body = text ? JSON.parse(text) : undefined;
            } catch {
              body = undefined;
            }
            resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - started });
          });
        },
      );
      req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer in ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
      req.on('error', (err: NodeJS.ErrnoException) => reject(new NetworkError(err.code ?? 'EUNKNOWN', err.message, performance.now() - started)));
      req.end(payload);
    });
  }

  /** A request that must answer `want`; anything else throws with the status and body. */
  async expect(want: number, method: string, path: string, opts: { body?: unknown; headers?: Record<string, string> } = {}): Promise<HttpResult> {
    const res = await this.request(method, path, opts);
    if (res.status !== want) throw new Error(`${method} ${path} answered ${res.status}, not ${want}: ${JSON.stringify(res.body)}`);
    return res;
  }

  close(): void {
    this.agent.destroy();
  }
}
