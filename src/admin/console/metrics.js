/*
 * The console's reading of /metrics (console.js polls it): the Prometheus text format into
 * series, and per upstream the figures that `sluicectl status` shows. The names are those of
 * docs/metrics.md; a series the scrape lacks reads as NaN, which the page shows as "–".
 */

/* Prometheus text into Map(name -> [{labels, value}]). */
export function parseMetrics(text) {
  const out = new Map();
  const line_re = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label_re = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const line of text.split('\n')) {
    if (line === '' || line[0] === '#') continue;
    const m = line_re.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      for (const l of m[2].matchAll(label_re)) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
    }
    const raw = m[3];
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value });
  }
  return out;
}

/* Does <series> carry every label of <labels> with the same value? */
function matches(series, labels) {
  for (const k in labels) if (series.labels[k] !== labels[k]) return false;
  return true;
}

/* The value of the first series of <name> that matches <labels>; NaN if none does. */
function value(metrics, name, labels) {
  const s = (metrics.get(name) || []).find((x) => matches(x, labels));
  return s ? s.value : NaN;
}

/* The sum of the series of <name> that match <labels> (0 if none does). */
export function total(metrics, name, labels) {
  let sum = 0;
  for (const s of metrics.get(name) || []) if (matches(s, labels)) sum += s.value;
  return sum;
}

/* The upstreams of the config, in its order: every one has every per-upstream series. */
export function upstreamNames(metrics) {
  return (metrics.get('sluice_drain_paused') || []).map((s) => s.labels.upstream);
}

/* Upstream <name>'s figures in one scrape: the backlog by state, paused, the rate limit,
 * the oldest ready record's age, the ETA (NaN while nothing drains), the delivered counter
 * and the circuit's state. */
export function snapshot(metrics, name) {
  const g = (metric, extra) => value(metrics, metric, Object.assign({ upstream: name }, extra));
  const s = {
    ready: g('sluice_backlog_requests', { state: 'ready' }),
    delayed: g('sluice_backlog_requests', { state: 'delayed' }),
    inflight: g('sluice_backlog_requests', { state: 'inflight' }),
    dead: g('sluice_backlog_requests', { state: 'dead' }),
    paused: g('sluice_drain_paused') === 1,
    rate: g('sluice_drain_rate_limit'),
    oldest: g('sluice_backlog_oldest_age_seconds'),
    eta: g('sluice_drain_eta_seconds'),
    delivered: g('sluice_drained_total', { outcome: 'delivered' }),
    circuit: 'closed',
  };
  for (const st of ['open', 'half-open']) {
    if (g('sluice_upstream_circuit_state', { state: st }) === 1) s.circuit = st;
  }
  s.backlog = s.ready + s.delayed + s.inflight;
  return s;
}
