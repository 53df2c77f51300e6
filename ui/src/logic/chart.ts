import { latencyText } from './format';

/** One probe of a provider's history, as GET .../health/history gives it. */
export interface Probe {
  status: string;
  latency_ms: number | null;
  checked_at: string;
}

export interface LatencyChart {
  width: number;
  height: number;
  /** SVG path data of the latencies, oldest left; a probe without a latency breaks the line. */
  path: string;
  /** x of every probe that failed (down), drawn as a mark on the base line. */
  failures: number[];
  /** The text a screen reader gets, and the chart's title. */
  summary: string;
}

/**
 * A small line chart of a provider's latency from its history (newest first, as the API pages it).
 * The y scale starts at 0 so that a flat line at 40 ms does not look like a spike.
 */
export function latencyChart(history: Probe[], width = 160, height = 36): LatencyChart {
  const probes = [...history].reverse();
  const n = probes.length;
  const pad = 2;
  const lat = probes.map((p) => (p.latency_ms !== null && Number.isFinite(p.latency_ms) && p.status !== 'down' ? p.latency_ms : null));
  const values = lat.filter((v): v is number => v !== null);
  const max = values.length ? Math.max(...values) : 0;
  const x = (i: number): number => (n <= 1 ? width / 2 : pad + (i * (width - 2 * pad)) / (n - 1));
  const y = (v: number): number => (max === 0 ? height - pad : height - pad - (v / max) * (height - 2 * pad));
  const round = (v: number): string => (Math.round(v * 10) / 10).toString();
  let path = '';
  let drawing = false;
  lat.forEach((v, i) => {
    if (v === null) {
      drawing = false;
      return;
    }
    path += `${drawing ? 'L' : 'M'}${round(x(i))} ${round(y(v))} `;
    drawing = true;
  });
  const failures = probes.flatMap((p, i) => (p.status === 'down' ? [Math.round(x(i) * 10) / 10] : []));
  let summary: string;
  if (n === 0) summary = 'no probes yet';
  else {
    const parts = [`${n} probe${n === 1 ? '' : 's'}`];
    if (values.length) parts.push(`latency ${latencyText(Math.min(...values))} to ${latencyText(max)}, last ${latencyText(lat[n - 1] ?? null)}`);
    if (failures.length) parts.push(`${failures.length} failed`);
    summary = parts.join(', ');
  }
  return { width, height, path: path.trim(), failures, summary };
}
