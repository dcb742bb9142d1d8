// Small SVG line charts for per-epoch series: epochs on x, a linear or log y axis the reader switches per
// chart, a read-out of every series at the epoch under the pointer, and a marker at the job's best epoch.
// One <g class="series"> per line with a circle per point. No library: the page must work with no network
// but this API, a chart holds at most a few thousand points, and SVG elements can be checked by a test.

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f",
  "#7c3aed", "#b45309", "#0f766e", "#6b7280"];
const W = 480, H = 260, M = { left: 62, right: 14, top: 16, bottom: 34 };

// Per chart id, the scale the reader picked and the epoch under the pointer: charts are drawn again on
// every new epoch of a running job, and neither should jump back meanwhile.
const chosenScale = new Map();
const hoveredEpoch = new Map();

export function forgetScaleChoices() {
  chosenScale.clear();
  hoveredEpoch.clear();
}

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

// Log ticks for a domain of log10 values: every decade (every few over a wide range), with 2x and 5x
// marks over a few decades and every integer multiple within about one, so a short range still has
// labels; a range too narrow even for that gets linear ticks (still placed on the log axis).
function logTicks(lo, hi) {
  const span = hi - lo;
  const marks = span <= 1.2 ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : span <= 3.5 ? [1, 2, 5] : [1];
  const every = Math.max(1, Math.ceil(span / 6));
  const ticks = [];
  for (let d = Math.floor(lo); d <= Math.ceil(hi); d++) {
    if (marks.length === 1 && d % every !== 0) continue;
    for (const m of marks) {
      const t = m * Math.pow(10, d);
      if (Math.log10(t) >= lo && Math.log10(t) <= hi) ticks.push(t);
    }
  }
  return ticks.length >= 2 ? ticks : linearTicks(Math.pow(10, lo), Math.pow(10, hi), 4);
}

export function format(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  return +v.toPrecision(3) + "";
}

// The read-out's number: enough digits to tell two epochs apart.
export function formatValue(v) {
  if (v === null || v === undefined) return "–";
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : (+v.toPrecision(4)).toString();
}

function logLabel(t) {
  const d = Math.floor(Math.log10(t) + 1e-9);
  const m = +(t / Math.pow(10, d)).toPrecision(3);
  return Math.abs(d) >= 3 ? `${m}e${d}` : format(t);
}

function domain(values, log) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (log) {
    lo = Math.log10(lo); hi = Math.log10(hi);
    if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
    const pad = (hi - lo) * 0.04;
    return [lo - pad, hi + pad];
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

// series: [{name, points: [[epoch, value|null], ...], dashed (optional: a dashed line, so a curve drawn over
//          another one that it matches lets that one show through)}]
// options: {log, yLabel, empty (the text when nothing can be drawn), best ({monitor, epoch} or null),
//           onHover (called with the epoch under the pointer, or null when it leaves), hover (the epoch to
//           show the cursor at from the start)}
export function lineChart(series, { log = false, yLabel = "", xLabel = "epoch", empty = "no data yet", best = null,
  onHover = null, hover = null } = {}) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "data-scale": log ? "log" : "linear" });
  const usable = (v) => v !== null && Number.isFinite(v) && (!log || v > 0);
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const ys = series.flatMap((s) => s.points.map((p) => p[1]).filter(usable));
  if (!xs.length || !ys.length) {
    const message = xs.length && log ? "no positive values to draw on a log scale" : empty;
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = message;
    return svg;
  }
  const x0 = xs[0], x1 = Math.max(xs[xs.length - 1], x0 + 1);
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
    .textContent = xLabel;
  // A grid line at every tick; labels where they do not crowd each other, powers of ten first.
  const ticks = (log ? logTicks(y0, y1) : linearTicks(y0, y1))
    .filter((t) => py(t) >= M.top - 1 && py(t) <= H - M.bottom + 1);
  const isDecade = (t) => log && Math.abs(Math.log10(t) - Math.round(Math.log10(t))) < 1e-9;
  for (const t of ticks) el("line", { x1: M.left, y1: py(t), x2: W - M.right, y2: py(t), class: "grid" }, axes);
  const labelled = [];
  for (const t of [...ticks.filter(isDecade), ...ticks.filter((t) => !isDecade(t))]) {
    const y = py(t);
    if (labelled.some((other) => Math.abs(other - y) < 16)) continue;
    labelled.push(y);
    el("text", { x: M.left - 6, y: y + 4, "text-anchor": "end", class: "ytick" }, axes)
      .textContent = log ? logLabel(t) : format(t);
  }
  if (yLabel) {
    el("text", { x: 12, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle", class: "label",
      transform: `rotate(-90 12 ${(M.top + H - M.bottom) / 2})` }, axes).textContent = yLabel;
  }

  // The best epoch: a dashed line on every chart, and a ring around the monitored value where it is drawn.
  if (best && best.epoch >= x0 && best.epoch <= x1) {
    const g = el("g", { class: "best-marker", "data-epoch": best.epoch }, svg);
    el("line", { x1: px(best.epoch), y1: M.top, x2: px(best.epoch), y2: H - M.bottom }, g);
    el("text", { x: px(best.epoch), y: M.top - 4, "text-anchor": "middle" }, g).textContent = "best";
    const i = series.findIndex((s) => s.name === best.monitor);
    const y = i < 0 ? undefined : new Map(series[i].points).get(best.epoch);
    if (y !== undefined && usable(y)) {
      el("circle", { cx: px(best.epoch).toFixed(1), cy: py(y).toFixed(1), r: 6, class: "best-point",
        stroke: color(i), "data-series": best.monitor }, g);
    }
  }

  series.forEach((s, i) => {
    const g = el("g", { class: "series", "data-name": s.name, stroke: color(i), fill: color(i) }, svg);
    let d = "", pen = false;
    for (const [x, y] of s.points) {
      if (!usable(y)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`;
      pen = true;
    }
    el("path", { d, fill: "none", "stroke-width": 1.8, ...(s.dashed ? { "stroke-dasharray": "6 4" } : {}) }, g);
    let shown = 0;
    for (const [x, y] of s.points) {
      if (!usable(y)) continue;
      el("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 2.6, "data-epoch": x }, g);
      shown++;
    }
    g.setAttribute("data-points", shown);
  });

  // The cursor: a vertical line at the epoch nearest the pointer, that epoch's points enlarged.
  const cursor = el("line", { class: "cursor", y1: M.top, y2: H - M.bottom, visibility: "hidden" }, svg);
  const overlay = el("rect", { class: "overlay", x: M.left, y: M.top, width: W - M.left - M.right,
    height: H - M.top - M.bottom, fill: "transparent" }, svg);
  let shownEpoch = null;
  const point = (epoch) => {
    if (epoch === shownEpoch) return;
    shownEpoch = epoch;
    for (const c of svg.querySelectorAll("circle.active")) c.classList.remove("active");
    if (epoch === null) {
      cursor.setAttribute("visibility", "hidden");
    } else {
      cursor.setAttribute("x1", px(epoch));
      cursor.setAttribute("x2", px(epoch));
      cursor.setAttribute("visibility", "visible");
      for (const c of svg.querySelectorAll(`.series circle[data-epoch="${epoch}"]`)) {
        c.classList.add("active");
      }
    }
    if (onHover) onHover(epoch);
  };
  overlay.addEventListener("pointermove", (event) => {
    const box = svg.getBoundingClientRect();
    const x = x0 + (((event.clientX - box.left) * W) / box.width - M.left) / (W - M.left - M.right) * (x1 - x0);
    point(xs.reduce((a, b) => (Math.abs(b - x) < Math.abs(a - x) ? b : a)));
  });
  overlay.addEventListener("pointerleave", () => point(null));
  if (hover !== null && xs.includes(hover)) point(hover);
  return svg;
}

// A chart in a card: a title, the epoch read out and a linear/log switch above it, and a legend (HTML,
// so long variable names wrap) that reads out every series' value at the hovered epoch, or at the last
// epoch while the pointer is elsewhere. options: as lineChart's, `log` being the default scale.
export function chartCard(id, title, series, options = {}) {
  const card = document.createElement("figure");
  card.className = "card chart-card";
  card.id = id;
  const caption = document.createElement("figcaption");
  const heading = document.createElement("span");
  heading.className = "title";
  heading.textContent = title;
  const epochLabel = document.createElement("span");
  epochLabel.className = "readout-epoch muted";
  const switcher = document.createElement("span");
  switcher.className = "scale-switch";
  const buttons = ["linear", "log"].map((scale) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.scale = scale;
    b.textContent = scale;
    b.addEventListener("click", () => { chosenScale.set(id, scale); draw(); });
    return b;
  });
  switcher.append(...buttons);
  caption.append(heading, epochLabel, switcher);
  card.appendChild(caption);

  const values = series.map((s) => new Map(s.points));
  const epochs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const last = epochs.length ? epochs[epochs.length - 1] : null;
  const legend = document.createElement("ul");
  legend.className = "legend";
  const readouts = series.map((s, i) => {
    const item = document.createElement("li");
    item.dataset.name = s.name;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color(i);
    const value = document.createElement("span");
    value.className = "value";
    item.append(swatch, document.createTextNode(s.name), value);
    legend.appendChild(item);
    return value;
  });
  const readOut = (epoch) => {
    if (epoch === null) hoveredEpoch.delete(id); else hoveredEpoch.set(id, epoch);
    const at = epoch ?? last;
    card.dataset.epoch = epoch === null ? "" : String(epoch);
    epochLabel.textContent = at === null ? "" : `${options.xLabel || "epoch"} ${at}`;
    readouts.forEach((node, i) => {
      const v = at === null ? undefined : values[i].get(at);
      node.textContent = v === undefined ? "" : formatValue(v);
      if (v === undefined) delete node.dataset.value; else node.dataset.value = String(v);
    });
  };

  let chart = null;
  function draw() {
    const scale = chosenScale.get(id) ?? (options.log ? "log" : "linear");
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.scale === scale));
    const hover = hoveredEpoch.get(id) ?? null;
    readOut(null);
    const next = lineChart(series, { ...options, log: scale === "log", onHover: readOut, hover });
    if (chart) chart.replaceWith(next); else caption.after(next);
    chart = next;
  }
  draw();
  card.appendChild(legend);
  return card;
}

// A scatter plot of one parameter against the objective (a sweep's trials): x linear or log (a parameter
// searched log-uniformly), y linear. points: [[x, y, label], ...]; one circle per point with data-x, data-y
// and data-trial, no line. Non-finite points are left out.
export function scatterChart(points, { xLabel = "", yLabel = "", logX = false, empty = "no data yet" } = {}) {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart scatter", role: "img",
    "data-scale": logX ? "log" : "linear" });
  const usable = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logX || x > 0));
  if (!usable.length) {
    el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, svg).textContent = empty;
    return svg;
  }
  const [x0, x1] = domain(usable.map((p) => p[0]), logX);
  const [y0, y1] = domain(usable.map((p) => p[1]), false);
  const px = (x) => M.left + (((logX ? Math.log10(x) : x) - x0) / (x1 - x0)) * (W - M.left - M.right);
  const py = (y) => H - M.bottom - ((y - y0) / (y1 - y0)) * (H - M.top - M.bottom);
  const axes = el("g", { class: "axes" }, svg);
  el("line", { x1: M.left, y1: H - M.bottom, x2: W - M.right, y2: H - M.bottom }, axes);
  el("line", { x1: M.left, y1: M.top, x2: M.left, y2: H - M.bottom }, axes);
  const xTicks = (logX ? logTicks(x0, x1) : linearTicks(x0, x1))
    .filter((t) => px(t) >= M.left - 1 && px(t) <= W - M.right + 1);
  let lastX = -Infinity;
  for (const t of xTicks) {
    if (px(t) - lastX < 40) continue;
    lastX = px(t);
    el("line", { x1: px(t), y1: H - M.bottom, x2: px(t), y2: H - M.bottom + 4 }, axes);
    el("text", { x: px(t), y: H - M.bottom + 16, "text-anchor": "middle" }, axes)
      .textContent = logX ? logLabel(t) : format(t);
  }
  el("text", { x: (M.left + W - M.right) / 2, y: H - 4, "text-anchor": "middle", class: "label" }, axes)
    .textContent = xLabel;
  for (const t of linearTicks(y0, y1).filter((t) => py(t) >= M.top - 1 && py(t) <= H - M.bottom + 1)) {
    el("line", { x1: M.left, y1: py(t), x2: W - M.right, y2: py(t), class: "grid" }, axes);
    el("text", { x: M.left - 6, y: py(t) + 4, "text-anchor": "end", class: "ytick" }, axes).textContent = format(t);
  }
  if (yLabel) {
    el("text", { x: 12, y: (M.top + H - M.bottom) / 2, "text-anchor": "middle", class: "label",
      transform: `rotate(-90 12 ${(M.top + H - M.bottom) / 2})` }, axes).textContent = yLabel;
  }
  const g = el("g", { class: "series", stroke: color(0), fill: color(0) }, svg);
  for (const [x, y, label] of usable) {
    const c = el("circle", { cx: px(x).toFixed(1), cy: py(y).toFixed(1), r: 4, "data-x": x, "data-y": y,
      "data-trial": label }, g);
    el("title", {}, c).textContent = `trial ${label}: ${format(x)} -> ${format(y)}`;
  }
  g.setAttribute("data-points", usable.length);
  return svg;
}
