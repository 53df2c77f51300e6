import client from 'prom-client';

/** One registry per process, handed to every part that exports metrics (no global default registry). */
export function createMetrics(): { registry: client.Registry; httpRequests: client.Counter<string>; httpDuration: client.Histogram<string> } {
  const registry = new client.Registry();
  client.collectDefaultMetrics({ register: registry, prefix: 'keyplane_process_' });
  const httpRequests = new client.Counter({
    name: 'keyplane_http_requests_total',
    help: 'Admin API requests by method, route and status',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  });
  const httpDuration = new client.Histogram({
    name: 'keyplane_http_request_duration_seconds',
    help: 'Admin API latency by method, route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  return { registry, httpRequests, httpDuration };
}

export type Metrics = ReturnType<typeof createMetrics>;
