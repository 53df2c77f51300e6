import autocannon from 'autocannon';
import { startBenchKeyplane } from '../test/bench/bench-env';
async function main() {
  const env = await startBenchKeyplane(JSON.parse(process.env.EXTRA ?? '{}'));
  const url = `${env.kp.url}/api/v1/admin/platform-keys/openrouter`;
  const headers = { authorization: `Bearer ${env.token}`, 'content-type': 'application/json' };
  await fetch(url, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-000000000000' }) });
  const c0 = process.cpuUsage();
  const r = await autocannon({ url, connections: Number(process.env.CONN ?? 20), duration: 5, headers, method: 'PUT', body: JSON.stringify({ api_key: 'sk-or-v1-bench-rotated-1234567' }) });
  const c = process.cpuUsage(c0);
  console.log(process.env.EXTRA, 'PUT/s', Math.round(r.requests.average), 'p99', r.latency.p99, 'node cpu s', ((c.user + c.system) / 1e6).toFixed(2));
  await env.close();
}
main();
