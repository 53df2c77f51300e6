import autocannon from 'autocannon';
async function main() {
  const url = 'http://127.0.0.1:4199/api/v1/admin/platform-keys/openrouter';
  const headers = { authorization: 'Bearer bench-token-0123456789', 'content-type': 'application/json' };
  await fetch(url, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-000000000000' }) });
  let n = 0;
  const r = await autocannon({ url, connections: 20, duration: 8, headers, method: 'PUT', requests: [{ setupRequest: (req) => ({ ...req, body: JSON.stringify({ api_key: `sk-or-v1-b-${++n}-xxxxxxxx` }) }) }] });
  console.log('PUT/s', Math.round(r.requests.average), 'p99', r.latency.p99);
}
main();
