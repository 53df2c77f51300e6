import autocannon from 'autocannon';
async function main() {
  const base = 'http://127.0.0.1:4199/api/v1/admin/platform-keys/';
  const headers = { authorization: 'Bearer bench-token-0123456789', 'content-type': 'application/json' };
  for (let i = 0; i < 20; i++) await fetch(base + 'k' + i, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-000000000000' }) });
  let n = 0;
  const r = await autocannon({ url: base + 'k0', connections: 20, duration: 8, headers, method: 'PUT', requests: [{ setupRequest: (req) => { n++; return { ...req, path: '/api/v1/admin/platform-keys/k' + (n % 20), body: JSON.stringify({ api_key: `sk-or-v1-b-${n}-xxxxxxxx` }) }; } }] });
  console.log('multi-key PUT/s', Math.round(r.requests.average), 'p99', r.latency.p99, 'non2xx', r.non2xx);
}
main();
