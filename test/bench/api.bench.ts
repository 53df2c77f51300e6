import autocannon from 'autocannon';
import { startBenchKeyplane } from './bench-env';

/**
 * `npm run bench:api`: 20 connections for 10 s each against a masked GET of one platform key and
 * a PUT rotation of it (each PUT a new encrypted version + audit row). Goal on 2 cores: 1,500 GET/s, 400 PUT/s.
 */
async function main(): Promise<void> {
  const seconds = Number(process.env.BENCH_SECONDS ?? 10);
  const env = await startBenchKeyplane();
  const url = `${env.kp.url}/api/v1/admin/platform-keys/openrouter`;
  const headers = { authorization: `Bearer ${env.token}`, 'content-type': 'application/json' };
  try {
    const first = await fetch(url, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-000000000000' }) });
    if (first.status !== 200) throw new Error(`setup PUT answered ${first.status}`);
    const results: Array<Record<string, string | number>> = [];
    for (const [label, opts] of [
      ['GET masked', { method: 'GET' as const }],
      ['PUT rotate', { method: 'PUT' as const, body: JSON.stringify({ api_key: 'sk-or-v1-bench-rotated-1234567' }) }],
    ] as const) {
      const r = await autocannon({ url, connections: 20, duration: seconds, headers, ...opts });
      const non2xx = r.non2xx + r.errors + r.timeouts;
      results.push({ request: label, 'req/s': Math.round(r.requests.average), 'p50 ms': r.latency.p50, 'p99 ms': r.latency.p99, requests: r.requests.total, 'non-2xx/errors': non2xx });
    }
    const versions = await (await fetch(`${url}/versions`, { headers })).json() as { items: unknown[] };
    console.log(`bench:api: ${seconds} s each, 20 connections, on ${env.kp.url}`);
    console.table(results);
    console.log(`versions written by the PUT run: ${versions.items.length - 1}`);
  } finally {
    await env.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
