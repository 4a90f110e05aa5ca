/*
 * sluice's web console (console.html): a client of the admin listener that serves it.
 *
 * - Every second it reads /metrics (which needs no token) and shows, per upstream, the
 *   figures of `sluicectl status` (state, rate, backlog by state, oldest age, ETA) and a
 *   chart of the last 1, 5 or 15 minutes: records spilled in and delivered per second, and
 *   the backlog. The samples live in a ring in this page only: a reload starts a new chart.
 * - Pause, resume, rate and the dead letters go through the admin API
 *   (/admin/upstreams/...), with "Authorization: Bearer <token>" once the operator gave
 *   the token. GET / says whether the API wants one. The token is kept in sessionStorage:
 *   it lasts as long as the tab, and is never put in a URL.
 * - Dead letters: the list (GET .../dead, at most the 1000 oldest), filtered here by
 *   status code, age and error text; redrive or purge one, all (one call), or the ones
 *   that match a filter, one call per id with a progress bar.
 *
 * "Spilled in" is not a series of its own in /metrics: per upstream it is what came into
 * the spool, (change of ready + delayed + inflight + dead) + change of delivered, taken
 * from two scrapes a second apart. A purge takes records out without delivering them;
 * that second shows 0, not a negative arrival rate.
 *
 * Everything the server sends is put in the page with textContent, never as HTML: a dead
 * letter's target is what a client sent.
 *
 * An ES module (strict, deferred) with two of its own: metrics.js reads /metrics, chart.js
 * draws. All three come from the binary, below /ui/.
 */
import { drawChart } from './chart.js';
import { parseMetrics, snapshot, total, upstreamNames } from './metrics.js';

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 4000;
const RANGES_S = [60, 300, 900]; /* the chart's spans; the ring keeps the longest */
const KEEP_S = Math.max(...RANGES_S);
const TOKEN_KEY = 'sluice.adminToken';
const ROWS_SHOWN = 200;
const DEAD_LIST_MAX = 1000; /* what GET .../dead answers at most (server/admin_api.c) */
const ARM_MS = 4000;
/* An open list is loaded again when the dead count changes, and at least this often: the
 * same count may hold other records (one redriven, another dead). */
const DEAD_REFRESH_MS = 5000;

const $ = (sel, root = document) => root.querySelector(sel);
const field = (root, name) => root.querySelector(`[data-field="${name}"]`);
const action = (root, name) => root.querySelector(`[data-action="${name}"]`);

const app = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  tokenRequired: false,
  cards: new Map(), /* upstream name -> card */
  ingress: null, /* the previous scrape's client request counters */
  noticeTimer: 0,
  range: 300, /* the charts' span in seconds, one of RANGES_S */
};

/* ------------------------------------------------------------------ formatting */

function fmtInt(n) {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–';
}

function fmtRate(r) {
  if (!Number.isFinite(r)) return '–';
  return (r >= 100 ? Math.round(r).toLocaleString('en-US') : r.toFixed(1)) + '/s';
}

function fmtDuration(s) {
  if (!Number.isFinite(s)) return '–';
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s}s`;
  const pad = (n) => String(n).padStart(2, '0');
  if (s < 3600) return `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function fmtTime(d) {
  return d.toLocaleTimeString('en-GB', { hour12: false });
}

/* ------------------------------------------------------------------ the notice */

function notify(text, kind = 'error') {
  const box = $('#notice');
  $('#notice-text').textContent = text;
  box.dataset.kind = kind;
  box.hidden = false;
  clearTimeout(app.noticeTimer);
  if (kind === 'ok') app.noticeTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

/* ------------------------------------------------------------------ HTTP */

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/* fetch with a time limit; relative URLs, so that a prefix in front of /ui holds. */
async function request(method, url, token) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    return await fetch(url, { method, headers, cache: 'no-store', signal: ctl.signal });
  } catch (e) {
    throw new ApiError(0, e.name === 'AbortError' ? 'no answer in time' : 'sluice is unreachable');
  } finally {
    clearTimeout(timer);
  }
}

/* An admin API call: its JSON, or an ApiError with the server's own message. */
async function api(method, path, token = app.token) {
  const res = await request(method, path, token);
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    body = null;
  }
  if (!res.ok) {
    throw new ApiError(res.status, (body && body.error) || `HTTP ${res.status}`);
  }
  return body;
}

function upstreamPath(name, rest) {
  return `admin/upstreams/${encodeURIComponent(name)}/${rest}`;
}

/* Tells the operator why an action failed; a 401 points at the token field. */
function reportFailure(what, err) {
  if (err.status === 401) {
    notify(`${what}: the admin API needs the token (401, ${err.message}). ` +
           'Enter it at the top right.');
    if (app.token) setTokenState('bad', 'token refused');
    $('#token-input').focus();
    return;
  }
  notify(`${what}: ${err.status ? err.status + ' ' : ''}${err.message}`);
}

/* ------------------------------------------------------------------ the token */

function setTokenState(state, text) {
  const el = $('#token-state');
  el.dataset.state = state;
  el.textContent = text;
  $('#token-forget').hidden = !app.token;
  $('#token-input').placeholder = app.token ? 'token set' : 'needed to steer';
}

/* May the page call the admin API now without being refused for want of a token? */
function canUseApi() {
  return !app.tokenRequired || app.token !== '';
}

async function checkToken(token) {
  try {
    await api('GET', 'admin/upstreams', token);
    return true;
  } catch (e) {
    if (e.status === 401) return false;
    throw e;
  }
}

async function onTokenSubmit(ev) {
  ev.preventDefault();
  const input = $('#token-input');
  const token = input.value.trim();
  if (!token) {
    input.focus();
    return;
  }
  try {
    if (!(await checkToken(token))) {
      setTokenState('bad', 'token refused');
      notify('That token was refused (401).');
      return;
    }
  } catch (e) {
    reportFailure('Checking the token', e);
    return;
  }
  app.token = token;
  sessionStorage.setItem(TOKEN_KEY, token);
  input.value = '';
  setTokenState('ok', 'token accepted');
  notify('Token accepted: the controls are live.', 'ok');
  for (const card of app.cards.values()) if (card.dead.open) loadDead(card);
}

function onTokenForget() {
  app.token = '';
  sessionStorage.removeItem(TOKEN_KEY);
  setTokenState('none', '');
}

/* GET / lists the endpoints and whether each needs the token. */
async function discover() {
  let index;
  try {
    index = await api('GET', './', '');
  } catch (e) {
    notify(`Cannot read the admin endpoints: ${e.message}`);
    return;
  }
  app.tokenRequired = (index.endpoints || []).some((e) => e.token);
  $('#token-form').hidden = !app.tokenRequired;
  if (!app.tokenRequired) return;
  setTokenState('none', '');
  if (app.token) {
    try {
      const ok = await checkToken(app.token);
      if (!ok) onTokenForget(); /* changed on the server since this tab kept it */
      setTokenState(ok ? 'ok' : 'bad', ok ? 'token accepted' : 'token refused');
    } catch (e) {
      setTokenState('none', '');
    }
  }
}

/* ------------------------------------------------------------------ cards */

function createCard(name) {
  const node = $('#upstream-template').content.firstElementChild.cloneNode(true);
  const id = `upstream-${app.cards.size}`;
  node.dataset.upstream = name;
  node.setAttribute('aria-labelledby', `${id}-name`);
  const h2 = $('.upstream-name', node);
  h2.id = `${id}-name`;
  h2.textContent = name;
  field(node, 'rate-input').setAttribute('aria-label', `Rate of ${name}, requests per second`);
  field(node, 'chart').setAttribute('aria-label',
    `${name}: requests spilled in and delivered per second, and the backlog`);
  const card = {
    name, node, canvas: field(node, 'chart'), samples: [], prev: null, snap: null,
    peak: 0, actionAt: 0, override: null,
    dead: { open: false, list: [], loadedDead: -1, loadedAt: 0, loading: false, busy: false,
      stop: false, rowsKey: null },
  };

  action(node, 'pause').addEventListener('click', () => onPauseClick(card));
  action(node, 'rate').addEventListener('submit', (ev) => onRateSubmit(ev, card));
  const rateInput = field(node, 'rate-input');
  rateInput.addEventListener('input', () => { rateInput.dataset.dirty = '1'; });
  rateInput.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') { delete rateInput.dataset.dirty; rateInput.blur(); }
  });
  const details = $('details.dead', node);
  details.addEventListener('toggle', () => {
    card.dead.open = details.open;
    if (details.open) loadDead(card);
  });
  action(node, 'filter').addEventListener('submit', (ev) => ev.preventDefault());
  for (const f of ['filter-status', 'filter-age', 'filter-reason']) {
    field(node, f).addEventListener('input', () => renderDead(card));
  }
  action(node, 'refresh').addEventListener('click', () => loadDead(card));
  action(node, 'redrive-matching').addEventListener('click', () => onBulk(card, 'redrive'));
  const purge = action(node, 'purge-matching');
  purge.addEventListener('click', () => armed(purge, () => onBulk(card, 'purge')));
  action(node, 'stop').addEventListener('click', () => { card.dead.stop = true; });
  for (const b of node.querySelectorAll('[data-range]')) {
    b.addEventListener('click', () => setRange(Number(b.dataset.range)));
  }
  showRange(node);

  $('#upstreams').appendChild(node);
  app.cards.set(name, card);
  return card;
}

function redraw(card) {
  drawChart(card.canvas, card.samples, app.range, performance.now() / 1000);
}

/* Every chart shows the last <span> seconds. */
function setRange(span) {
  if (!RANGES_S.includes(span)) return;
  app.range = span;
  for (const card of app.cards.values()) {
    showRange(card.node);
    redraw(card);
  }
}

function showRange(node) {
  for (const b of node.querySelectorAll('[data-range]')) {
    b.setAttribute('aria-pressed', String(Number(b.dataset.range) === app.range));
  }
}

/* A destructive button takes two clicks: the first arms it for a few seconds. */
function armed(button, fn) {
  if (button.dataset.armed) {
    clearTimeout(button.armTimer);
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
    fn();
    return;
  }
  button.dataset.armed = '1';
  button.dataset.label = button.textContent;
  button.textContent = `Click again: ${button.textContent.toLowerCase()}`;
  button.armTimer = setTimeout(() => {
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
  }, ARM_MS);
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function renderCard(card) {
  const s = card.snap;
  const node = card.node;
  const paused = card.override ? card.override.paused : s.paused;
  /* One state, as sluicectl names it: paused (the operator's), else the circuit's when it
   * holds the replays, else flowing; a paused upstream's circuit, if not closed, beside it. */
  const circuitText = s.circuit === 'open' ? 'Circuit open' : 'Circuit half-open';
  const badge = field(node, 'state');
  const state = paused ? 'paused' : s.circuit !== 'closed' ? s.circuit : 'flowing';
  badge.dataset.state = state;
  setText(badge, paused ? 'Paused' : s.circuit !== 'closed' ? circuitText : 'Flowing');
  const circuit = field(node, 'circuit');
  circuit.hidden = !paused || s.circuit === 'closed';
  circuit.dataset.state = s.circuit;
  setText(circuit, circuitText);

  const pause = action(node, 'pause');
  setText(pause, paused ? 'Resume' : 'Pause');
  pause.setAttribute('aria-label', `${paused ? 'Resume' : 'Pause'} ${card.name}`);
  if (paused) pause.dataset.paused = '1';
  else delete pause.dataset.paused;

  setText(field(node, 'backlog'), fmtInt(s.backlog));
  setText(field(node, 'ready'), fmtInt(s.ready));
  setText(field(node, 'delayed'), fmtInt(s.delayed));
  setText(field(node, 'inflight'), fmtInt(s.inflight));
  const dead = field(node, 'dead');
  setText(dead, fmtInt(s.dead));
  if (s.dead > 0) dead.dataset.alert = '1';
  else delete dead.dataset.alert;
  setText(field(node, 'rate'), s.rate > 0 ? fmtRate(s.rate) : 'no limit');
  setText(field(node, 'oldest'), s.ready > 0 ? fmtDuration(s.oldest) : '–');
  const eta = field(node, 'eta');
  if (Number.isNaN(s.eta)) {
    setText(eta, 'held');
    eta.title = 'Nothing drains while the upstream is paused or its circuit is not closed';
  } else {
    setText(eta, s.backlog > 0 && s.eta > 0 ? fmtDuration(s.eta) : '–');
    eta.title = '';
  }
  const rateInput = field(node, 'rate-input');
  /* The current rate, unless the operator is typing one (dirty until it is set). */
  if (document.activeElement !== rateInput && !rateInput.dataset.dirty) {
    rateInput.value = s.rate > 0 ? String(+s.rate.toFixed(3)) : '';
    rateInput.placeholder = s.rate > 0 ? '' : 'no limit';
  }

  /* The drain's progress since the backlog was last empty, as sluicectl draws it. */
  card.peak = s.backlog > 0 ? Math.max(card.peak, s.backlog) : 0;
  const drain = field(node, 'drain');
  drain.hidden = card.peak === 0;
  if (card.peak > 0) {
    const done = card.peak - s.backlog;
    field(node, 'drain-fill').style.width = `${(100 * done) / card.peak}%`;
    setText(field(node, 'drain-text'),
      `${fmtInt(done)} of ${fmtInt(card.peak)} drained since the backlog began`);
  }

  const last = card.samples[card.samples.length - 1];
  setText(field(node, 'rate-in'), last ? fmtRate(last.in) : '–');
  setText(field(node, 'rate-out'), last ? fmtRate(last.out) : '–');
  setText(field(node, 'legend-backlog'), fmtInt(s.backlog));
  const count = field(node, 'dead-count');
  setText(count, fmtInt(s.dead));
  if (s.dead > 0) count.dataset.alert = '1';
  else delete count.dataset.alert;
  redraw(card);
}

/* Adds the scrape taken at <t> (seconds) to the card's ring of samples. */
function addSample(card, s, t) {
  const p = card.prev;
  if (p && t > p.t) {
    const dt = t - p.t;
    const delivered = s.delivered - p.delivered;
    if (delivered >= 0) { /* a smaller counter: sluice restarted, no rate this time */
      const stored = s.backlog + s.dead - (p.backlog + p.dead);
      card.samples.push({ t, in: Math.max(0, (stored + delivered) / dt),
        out: delivered / dt, backlog: s.backlog });
    }
  }
  card.prev = { t, delivered: s.delivered, backlog: s.backlog, dead: s.dead };
  const t0 = t - KEEP_S - 2;
  while (card.samples.length && card.samples[0].t < t0) card.samples.shift();
}

function renderIngress(metrics, t) {
  const now = {};
  for (const o of ['forwarded', 'spilled', 'rejected', 'error']) {
    now[o] = total(metrics, 'sluice_requests_total', { outcome: o });
  }
  const p = app.ingress;
  for (const o of Object.keys(now)) {
    const r = p && t > p.t && now[o] >= p[o] ? (now[o] - p[o]) / (t - p.t) : NaN;
    setText($(`#ingress-${o}`), fmtRate(r));
  }
  app.ingress = Object.assign({ t }, now);
}

/* ------------------------------------------------------------------ polling */

async function poll() {
  const started = performance.now() / 1000;
  const live = $('#live');
  try {
    const res = await request('GET', 'metrics', '');
    if (!res.ok) throw new ApiError(res.status, `HTTP ${res.status}`);
    const metrics = parseMetrics(await res.text());
    const t = performance.now() / 1000;
    renderIngress(metrics, t);
    const names = upstreamNames(metrics);
    $('#empty').hidden = names.length > 0;
    if (names.length === 0) setText($('#empty'), 'No upstream is configured.');
    for (const name of names) {
      const card = app.cards.get(name) || createCard(name);
      card.snap = snapshot(metrics, name);
      /* A scrape that began before an action answered may predate it. */
      if (card.override && started > card.actionAt) card.override = null;
      addSample(card, card.snap, t);
      renderCard(card);
      if (card.dead.open && !card.dead.loading && !card.dead.busy &&
          (card.dead.loadedDead !== card.snap.dead ||
           performance.now() - card.dead.loadedAt > DEAD_REFRESH_MS)) {
        loadDead(card);
      }
      if (card.dead.open) renderAges(card);
    }
    live.dataset.state = 'live';
    setText($('#live-text'), `live · ${fmtTime(new Date())}`);
  } catch (e) {
    live.dataset.state = 'down';
    setText($('#live-text'), `no figures: ${e.message}`);
  }
  setTimeout(poll, Math.max(100, POLL_MS - (performance.now() / 1000 - started) * 1000));
}

/* ------------------------------------------------------------------ pause, resume, rate */

/* The admin API answers an action with the upstream's new state: show it at once. */
function applyState(card, u) {
  if (!u || typeof u.paused !== 'boolean') return;
  card.actionAt = performance.now() / 1000;
  card.override = { paused: u.paused };
  if (card.snap) {
    if (typeof u.rate === 'number') card.snap.rate = u.rate;
    renderCard(card);
  }
}

async function onPauseClick(card) {
  const button = action(card.node, 'pause');
  const paused = card.override ? card.override.paused : card.snap && card.snap.paused;
  const verb = paused ? 'resume' : 'pause';
  button.disabled = true;
  try {
    applyState(card, await api('POST', upstreamPath(card.name, verb)));
    notify(`${card.name}: ${paused ? 'resumed' : 'paused'}.`, 'ok');
  } catch (e) {
    reportFailure(`${paused ? 'Resume' : 'Pause'} ${card.name}`, e);
  } finally {
    button.disabled = false;
  }
}

async function onRateSubmit(ev, card) {
  ev.preventDefault();
  const input = field(card.node, 'rate-input');
  const rate = Number(input.value);
  if (!(rate > 0) || !Number.isFinite(rate)) {
    notify(`${card.name}: a rate is a number of requests per second above 0 (to stop, pause).`);
    return;
  }
  try {
    applyState(card, await api('POST', upstreamPath(card.name, `rate?value=${rate}`)));
    delete input.dataset.dirty;
    input.blur();
    notify(`${card.name}: rate set to ${fmtRate(rate)} until the next reload.`, 'ok');
  } catch (e) {
    reportFailure(`Set the rate of ${card.name}`, e);
  }
}

/* ------------------------------------------------------------------ dead letters */

/* "HTTP 503" -> "503"; an error without an answer (timeout, reset) -> "none". */
function statusOf(d) {
  const m = /^HTTP (\d{3})\b/.exec(d.error || '');
  return m ? m[1] : 'none';
}

function filtersOf(card) {
  const age = Number(field(card.node, 'filter-age').value);
  return {
    status: field(card.node, 'filter-status').value,
    age: age > 0 ? age : 0,
    reason: field(card.node, 'filter-reason').value.trim().toLowerCase(),
  };
}

function filtered(f) {
  return f.status !== '' || f.age > 0 || f.reason !== '';
}

function matching(card) {
  const f = filtersOf(card);
  const now = Date.now();
  return card.dead.list.filter((d) =>
    (f.status === '' || statusOf(d) === f.status) &&
    (f.age === 0 || now - Date.parse(d.enqueued_at) >= f.age * 60000) &&
    (f.reason === '' || (d.error || '').toLowerCase().includes(f.reason)));
}

async function loadDead(card) {
  const note = field(card.node, 'dead-note');
  if (!canUseApi()) {
    card.dead.list = [];
    renderDead(card);
    setText(note, 'Enter the admin token (top right) to list the dead letters.');
    return;
  }
  card.dead.loading = true;
  const seen = card.snap ? card.snap.dead : -1;
  try {
    const body = await api('GET', upstreamPath(card.name, 'dead'));
    card.dead.list = Array.isArray(body.dead) ? body.dead : [];
    /* The count this list stands for: its length, unless the API cut it (then the scrape's,
     * which may be a second old: the next one that differs loads it again). */
    card.dead.loadedDead = card.dead.list.length < DEAD_LIST_MAX ? card.dead.list.length : seen;
    renderDead(card);
  } catch (e) {
    card.dead.loadedDead = seen;
    setText(note, e.status === 401 ? 'Enter the admin token (top right) to list the dead letters.'
      : `Cannot list the dead letters: ${e.message}`);
  } finally {
    card.dead.loading = false;
    card.dead.loadedAt = performance.now();
  }
}

function statusOptions(card) {
  const select = field(card.node, 'filter-status');
  const counts = new Map();
  for (const d of card.dead.list) counts.set(statusOf(d), (counts.get(statusOf(d)) || 0) + 1);
  const keep = select.value;
  const codes = [...counts.keys()].sort();
  if (keep && !counts.has(keep)) codes.push(keep);
  const opts = [['', 'any']].concat(codes.map((c) =>
    [c, `${c === 'none' ? 'no answer' : c} (${counts.get(c) || 0})`]));
  const now = [...select.options].map((o) => `${o.value}=${o.textContent}`).join('|');
  if (now === opts.map(([v, t]) => `${v}=${t}`).join('|')) return;
  select.replaceChildren(...opts.map(([v, t]) => new Option(t, v)));
  select.value = keep;
}

function agoText(rfc3339) {
  return `${fmtDuration((Date.now() - Date.parse(rfc3339)) / 1000)} ago`;
}

/* The list is fetched when it changes; its ages move on every second all the same. */
function renderAges(card) {
  for (const td of card.node.querySelectorAll('td.age')) setText(td, agoText(td.dataset.at));
}

function deadRow(card, d) {
  const tr = document.createElement('tr');
  tr.dataset.id = d.id;
  const cell = (cls, text, title) => {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    td.textContent = text;
    if (title) td.title = title;
    tr.appendChild(td);
    return td;
  };
  cell('id', d.id.slice(0, 12) + '…', d.id);
  cell('age', agoText(d.enqueued_at), d.enqueued_at).dataset.at = d.enqueued_at;
  cell('', String(d.attempts));
  const req = `${d.method} ${d.target}`;
  cell('req', req, req);
  cell('err', d.error || '–');
  const button = (op, label, cls, onClick) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = `btn ${cls}`;
    b.dataset.action = `${op}-one`;
    b.textContent = label;
    b.setAttribute('aria-label', `${label} ${d.id}`);
    b.addEventListener('click', () => onClick(b));
    return b;
  };
  cell('acts', '').append(
    button('redrive', 'Redrive', 'quiet', (b) => onSingle(card, 'redrive', d.id, b)),
    button('purge', 'Purge', 'danger', (b) => armed(b, () => onSingle(card, 'purge', d.id, b))));
  return tr;
}

function renderDead(card) {
  const node = card.node;
  statusOptions(card);
  const list = card.dead.list;
  const hits = matching(card);
  const isFiltered = filtered(filtersOf(card));
  setText(field(node, 'match-text'), isFiltered
    ? `${fmtInt(hits.length)} of ${fmtInt(list.length)} match`
    : `${fmtInt(list.length)} dead letter${list.length === 1 ? '' : 's'}`);
  const n = isFiltered ? `${fmtInt(hits.length)} matching` : 'all';
  const redrive = action(node, 'redrive-matching');
  const purge = action(node, 'purge-matching');
  setText(redrive, `Redrive ${n}`);
  if (!purge.dataset.armed) setText(purge, `Purge ${n}`);
  redrive.disabled = purge.disabled = card.dead.busy || hits.length === 0;
  /* The rows are made anew only when what they show changed: a reload that brings the same
   * records keeps the buttons, and a purge armed by a first click stays armed. */
  const shown = hits.slice(0, ROWS_SHOWN);
  const key = shown.map((d) => `${d.id} ${d.attempts} ${d.error}`).join('\n');
  if (key !== card.dead.rowsKey) {
    card.dead.rowsKey = key;
    field(node, 'dead-rows').replaceChildren(...shown.map((d) => deadRow(card, d)));
  }
  const notes = [];
  if (list.length >= DEAD_LIST_MAX) {
    notes.push(`The API lists the ${fmtInt(DEAD_LIST_MAX)} oldest dead letters; ` +
      '"all" acts on every one, a filter on those listed.');
  }
  if (hits.length > ROWS_SHOWN) notes.push(`Showing the first ${ROWS_SHOWN} of ${fmtInt(hits.length)}.`);
  if (list.length === 0) notes.push('No dead letters.');
  setText(field(node, 'dead-note'), notes.join(' '));
}

async function onSingle(card, op, id, button) {
  button.disabled = true;
  try {
    await api('POST', upstreamPath(card.name, `dead/${op}?id=${id}`));
    notify(`${card.name}: dead letter ${id.slice(0, 12)}… ${op === 'redrive' ? 'queued again' : 'purged'}.`, 'ok');
  } catch (e) {
    reportFailure(`${op === 'redrive' ? 'Redrive' : 'Purge'} ${id.slice(0, 12)}…`, e);
  } finally {
    button.disabled = false;
  }
  loadDead(card);
}

function progress(card, done, n) {
  const node = card.node;
  field(node, 'progress').hidden = n === 0;
  const bar = field(node, 'progress-bar');
  bar.max = Math.max(1, n);
  bar.value = done;
  setText(field(node, 'progress-text'), `${fmtInt(done)} / ${fmtInt(n)}`);
}

/* Redrive or purge what the filter matches, one id at a time; without a filter, all in
 * one call (which also reaches dead letters beyond the listed 1000). */
async function onBulk(card, op) {
  const past = op === 'redrive' ? 'queued again' : 'purged';
  if (!filtered(filtersOf(card))) {
    try {
      await api('POST', upstreamPath(card.name, `dead/${op}`));
      notify(`${card.name}: every dead letter ${past}.`, 'ok');
    } catch (e) {
      reportFailure(`${op === 'redrive' ? 'Redrive' : 'Purge'} all of ${card.name}`, e);
    }
    loadDead(card);
    return;
  }
  const ids = matching(card).map((d) => d.id);
  let done = 0;
  let gone = 0;
  card.dead.busy = true;
  card.dead.stop = false;
  renderDead(card);
  progress(card, 0, ids.length);
  try {
    for (const id of ids) {
      if (card.dead.stop) break;
      try {
        await api('POST', upstreamPath(card.name, `dead/${op}?id=${id}`));
      } catch (e) {
        if (e.status !== 404) throw e; /* 404: gone meanwhile (redriven, purged) */
        gone++;
      }
      progress(card, ++done, ids.length);
    }
    const stopped = done < ids.length ? ` (stopped after ${done} of ${ids.length})` : '';
    notify(`${card.name}: ${done - gone} dead letter${done - gone === 1 ? '' : 's'} ${past}` +
      `${gone ? `, ${gone} already gone` : ''}${stopped}.`, 'ok');
  } catch (e) {
    reportFailure(`${op === 'redrive' ? 'Redrive' : 'Purge'} (${done} of ${ids.length} done)`, e);
  } finally {
    card.dead.busy = false;
    setTimeout(() => progress(card, 0, 0), 3000);
    loadDead(card);
  }
}

/* ------------------------------------------------------------------ start */

function start() {
  $('#token-form').addEventListener('submit', onTokenSubmit);
  $('#token-forget').addEventListener('click', onTokenForget);
  $('#notice-close').addEventListener('click', () => { $('#notice').hidden = true; });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { for (const c of app.cards.values()) redraw(c); }, 100);
  });
  discover().finally(poll);
}

start();
