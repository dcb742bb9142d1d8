// Small SVG line charts: epochs on x, linear or log y, one <g class="series"> per line with a circle per
// point (each with a <title> for hovering). No library: the page must work with no network but this API.

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f",
  "#7c3aed", "#b45309", "#0f766e", "#6b7280"];
const W = 480, H = 260, M = { left: 62, right: 14, top: 12, bottom: 34 };

function el(name, attrs = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

export function color(i) {
  return PALETTE[i % PALETTE.length];
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  const unit = raw / power;
  return (unit >= 5 ? 10 : unit >= 2 ? 5 : unit >= 1 ? 2 : 1) * power;
}

function linearTicks(lo, hi, count = 5) {
  const step = niceStep(hi - lo, count);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function format(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return +v.toPrecision(3) + "";
}

function domain(values, log) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (log) {
    lo = Math.log10(lo); hi = Math.log10(hi);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    return [lo, hi];
  }
  if (hi - lo < 1e-12) {
    const pad = Math.abs(hi) * 0.1 || 1;
    lo -= pad; hi += pad;
  } else {
    const pad = (hi - lo) * 0.05;
    lo -= pad; hi += pad;
  }
  return [lo, hi];
}

// series: [{name, points: [[epoch, value|null], ...]}]; options: {log, yLabel}
export function lineChart(series, { log = false, yLabel = "" } = {}) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  const usable = (v) => v !== null && Number.isFinite(v) && (!log || v > 0);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]).filter(usable));
  if (!xs.length || !ys.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = "no data yet";
    return svg;
  }
  const x0 = Math.min(...xs), x1 = Math.max(Math.max(...xs), x0 + 1);
  const [y0, y1] = domain(ys, log);
  const px = (x) => M.left + ((x - x0) / (x1 - x0)) * (W - M.left - M.right);
  const py = (y) => H - M.bottom - (((log ? Math.log10(y) : y) - y0) / (y1 - y0)) * (H - M.top - M.bottom);

  const axes = el("g", { class: "axes" }, svg);
  el("line", { x1: M.left, y1: H - M.bottom, x2: W - M.right, y2: H - M.bottom }, axes);
  el("line", { x1: M.left, y1: M.top, x2: M.left, y2: H - M.bottom }, axes);
  const xStep = Math.max(1, Math.ceil(niceStep(x1 - x0, 6)));
  for (let x = Math.ceil(x0); x <= x1; x += xStep) {
    el("line", { x1: px(x), y1: H - M.bottom, x2: px(x), y2: H - M.bottom + 4 }, axes);
    el("text", { x: px(x), y: H - M.bottom + 16, "text-anchor": "middle" }, axes).textContent = x;
  }
  el("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle", class: "label" }, axes)
    .textContent = "epoch";
  let yTicks;
  if (log) {
    const decades = [];
    for (let d = Math.ceil(y0); d <= Math.floor(y1); d++) decades.push(Math.pow(10, d));
    // Few decades: 2x and 5x marks too, so points between two powers of ten can be read.
    const marks = decades.length > 3 ? [1] : [1, 2, 5];
    yTicks = [];
    for (let d = Math.floor(y0); d <= Math.ceil(y1); d++) {
      for (const m of marks) yTicks.push(m * Math.pow(10, d));
    }
  } else {
    yTicks = linearTicks(y0, y1);
  }
  for (const t of yTicks) {
    const y = py(t);
    if (y < M.top - 1 || y > H - M.bottom + 1) continue;
    el("line", { x1: M.left, y1: y, x2: W - M.right, y2: y, class: "grid" }, axes);
    el("text", { x: M.left - 6, y: y + 4, "text-anchor": "end" }, axes).textContent = format(t);
  }
  if (yLabel) {
    el("text", { x: 12, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle", class: "label",
      transform: `rotate(-90 12 ${(M.top + H - M.bottom) / 2})` }, axes).textContent = yLabel;
  }

  series.forEach((s, i) => {
    const g = el("g", { class: "series", "data-name": s.name, stroke: color(i), fill: color(i) }, svg);
    let d = "", pen = false;
    for (const [x, y] of s.points) {
      if (!usable(y)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`;
      pen = true;
    }
    el("path", { d, fill: "none", "stroke-width": 1.8 }, g);
    let shown = 0;
    for (const [x, y] of s.points) {
      if (!usable(y)) continue;
      const c = el("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 2.6, "data-epoch": x }, g);
      el("title", {}, c).textContent = `${s.name}, epoch ${x}: ${format(y)}`;
      shown++;
    }
    g.setAttribute("data-points", shown);
  });
  return svg;
}

// A chart in a card with a title and a legend (HTML, so long variable names wrap).
export function chartCard(id, title, series, options = {}) {
  const card = document.createElement("figure");
  card.className = "card chart-card";
  card.id = id;
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  card.appendChild(caption);
  card.appendChild(lineChart(series, options));
  const legend = document.createElement("ul");
  legend.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color(i);
    item.append(swatch, document.createTextNode(s.name));
    legend.appendChild(item);
  });
  card.appendChild(legend);
  return card;
}
