/*
 * The console's chart, drawn on a <canvas> with nothing but its 2D context: the rates
 * (spilled in, delivered) against the left axis, the backlog as an area against the right one,
 * time running to "now" at the right edge. Its colours are the page's CSS variables.
 */

function chartColours() {
  const css = getComputedStyle(document.documentElement);
  const v = (n) => css.getPropertyValue(n).trim();
  return { in: v('--in'), out: v('--out'), backlog: v('--backlog'), grid: v('--grid'),
    muted: v('--muted'), line: v('--line') };
}

/* A round top for an axis of four steps: each step 1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times
 * a power of ten, so that every gridline has a short label. */
function niceMax(x) {
  if (!(x > 0)) return 4;
  const step = x / 4;
  const p = 10 ** Math.floor(Math.log10(step));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (step <= m * p) return 4 * m * p;
  return 40 * p;
}

function axisLabel(v) {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(1)}`;
}

/* Draws <samples> ({t: seconds, in, out: per second, backlog}) of the last <span> seconds up
 * to <now> on <canvas>, at the canvas's size on the page and the screen's pixel ratio. */
export function drawChart(canvas, samples, span, now) {
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0) return;
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(height * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);

  const c = chartColours();
  const pad = { l: 46, r: 52, t: 24, b: 22 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const t0 = now - span;
  samples = samples.filter((s) => s.t >= t0);
  const rateMax = niceMax(Math.max(0, ...samples.map((s) => Math.max(s.in, s.out))));
  const backlogMax = niceMax(Math.max(0, ...samples.map((s) => s.backlog)));
  const x = (t) => pad.l + ((t - t0) / span) * w;
  const yRate = (r) => pad.t + h - (r / rateMax) * h;
  const yBacklog = (b) => pad.t + h - (b / backlogMax) * h;

  ctx.font = '11px system-ui, "Liberation Sans", "DejaVu Sans", sans-serif';
  ctx.lineWidth = 1;
  ctx.textBaseline = 'middle';
  for (let i = 0; i <= 4; i++) {
    const y = Math.round(pad.t + (h * i) / 4) + 0.5;
    ctx.strokeStyle = i === 4 ? c.line : c.grid;
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(pad.l + w, y);
    ctx.stroke();
    ctx.fillStyle = c.muted;
    ctx.textAlign = 'right';
    ctx.fillText(axisLabel((rateMax * (4 - i)) / 4), pad.l - 8, y);
    ctx.fillStyle = c.backlog;
    ctx.textAlign = 'left';
    ctx.fillText(axisLabel((backlogMax * (4 - i)) / 4), pad.l + w + 8, y);
  }
  ctx.fillStyle = c.muted;
  ctx.textBaseline = 'top';
  const tick = span <= 60 ? 10 : span <= 300 ? 60 : 180;
  for (let ago = span; ago >= 0; ago -= tick) {
    ctx.textAlign = ago === 0 ? 'right' : ago === span ? 'left' : 'center';
    const label = ago === 0 ? 'now' : ago < 60 ? `−${ago} s` : `−${ago / 60} min`;
    ctx.fillText(label, x(now - ago), pad.t + h + 7);
  }
  ctx.save();
  ctx.textAlign = 'left';
  ctx.textBaseline = 'top';
  ctx.fillText('req/s', 4, 0);
  ctx.fillStyle = c.backlog;
  ctx.textAlign = 'right';
  ctx.fillText('backlog', width - 4, 0);
  ctx.restore();
  if (samples.length < 2) return;

  ctx.save();
  ctx.beginPath();
  ctx.rect(pad.l, pad.t, w, h + 1);
  ctx.clip();
  /* The backlog: an area under the rates. */
  ctx.beginPath();
  ctx.moveTo(x(samples[0].t), yBacklog(0));
  for (const s of samples) ctx.lineTo(x(s.t), yBacklog(s.backlog));
  ctx.lineTo(x(samples[samples.length - 1].t), yBacklog(0));
  ctx.closePath();
  ctx.globalAlpha = 0.14;
  ctx.fillStyle = c.backlog;
  ctx.fill();
  ctx.globalAlpha = 0.7;
  ctx.strokeStyle = c.backlog;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  samples.forEach((s, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(s.t), yBacklog(s.backlog)));
  ctx.stroke();
  ctx.globalAlpha = 1;
  ctx.lineWidth = 2;
  ctx.lineJoin = 'round';
  for (const [key, colour] of [['in', c.in], ['out', c.out]]) {
    ctx.strokeStyle = colour;
    ctx.beginPath();
    samples.forEach((s, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(s.t), yRate(s[key])));
    ctx.stroke();
  }
  ctx.restore();
}
