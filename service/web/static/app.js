// The Trainyard dashboard: a token form, the tenant's jobs, one job's live curves, diagnostics and
// downloads, several jobs compared (their spec diff over their curves overlaid), and sweeps with their
// trials. Every API call sends the token as a bearer token; nothing else is stored.
import { chartCard, color, forgetScaleChoices, scatterChart } from "./charts.js";
import { follow } from "./live.js";

const TOKEN_KEY = "trainyard.token";
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ API calls

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export async function api(path, { method = "GET", headers = {}, raw = false, json } = {}) {
  const body = json === undefined ? undefined : JSON.stringify(json);
  const contentType = json === undefined ? {} : { "Content-Type": "application/json" };
  const resp = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token()}`, ...contentType, ...headers },
    body,
    cache: "no-store",
  });
  if (resp.status === 304 || (raw && resp.ok)) return resp;
  if (!resp.ok) {
    let problem = {};
    try { problem = await resp.json(); } catch { /* not a problem document (a proxy's page) */ }
    const err = new ApiError(resp.status, problem);
    if (resp.status === 401) signIn("The server refused the token: " + err.message);
    throw err;
  }
  return resp.json();
}

function showError(err) {
  const banner = $("banner");
  if (err instanceof ApiError && err.status === 401) return; // the sign-in form says it
  const p = err instanceof ApiError ? err.problem : {};
  banner.textContent = err instanceof ApiError
    ? `${p.title || "Error"} (${err.status}): ${err.message}`
    : `Cannot reach the API: ${err.message}`;
  banner.hidden = false;
}

// ------------------------------------------------------------------ views

let stopFollowing = null;
let refreshTimer = null;

function show(view) {
  for (const id of ["signin", "jobs-view", "job-view", "compare-view", "sweeps-view", "sweep-view"]) $(id).hidden = id !== view;
  $("sign-out").hidden = !token();
}

function reset() {
  if (stopFollowing) stopFollowing();
  stopFollowing = null;
  clearInterval(refreshTimer);
  refreshTimer = null;
  $("banner").hidden = true;
}

function signIn(message = "") {
  reset();
  sessionStorage.removeItem(TOKEN_KEY);
  show("signin");
  $("signin-error").textContent = message;
  $("signin-error").hidden = !message;
  $("token-input").focus();
}

function route() {
  reset();
  const hash = location.hash || "#/";
  if (hash === "#/signout") {
    sessionStorage.removeItem(TOKEN_KEY);
    location.hash = "#/";
    return;
  }
  if (!token()) return signIn();
  const match = hash.match(/^#\/jobs\/([\w:-]+)$/);
  if (match) return showJob(match[1]);
  const compared = hash.match(/^#\/compare\/([\w,-]+)$/);
  if (compared) return showCompare(compared[1].split(","));
  const sweep = hash.match(/^#\/sweeps\/([\w:-]+)$/);
  if (sweep) return showSweep(sweep[1]);
  if (hash === "#/sweeps") return showSweeps();
  return showJobs();
}

// ------------------------------------------------------------------ jobs list

const pages = { cursors: [null], index: 0 };
// The jobs ticked for comparison, in the order they were ticked; kept while the list pages and refreshes.
const selected = new Set();
const MAX_COMPARED = 8;

function selectCell(job) {
  const td = document.createElement("td");
  td.className = "select";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.className = "select-job";
  box.dataset.job = job.id;
  box.checked = selected.has(job.id);
  box.setAttribute("aria-label", `Select ${job.name || job.id} to compare`);
  box.addEventListener("change", () => {
    if (box.checked) selected.add(job.id); else selected.delete(job.id);
    updateCompareButton();
  });
  td.appendChild(box);
  return td;
}

function updateCompareButton() {
  const button = $("compare-selected");
  const n = selected.size;
  button.disabled = n < 2 || n > MAX_COMPARED;
  button.textContent = n ? `Compare selected (${n})` : "Compare selected";
  button.title = n > MAX_COMPARED ? `At most ${MAX_COMPARED} jobs at once` : "Select 2 to 8 jobs with the boxes in the list";
}

function text(tag, value, className) {
  const node = document.createElement(tag);
  node.textContent = value;
  if (className) node.className = className;
  return node;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function num(v) {
  if (v === null || v === undefined) return "n/a";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : (+v.toPrecision(4)).toString();
}

// ------------------------------------------------------------------ time left

const ETA_BASIS = {
  recent_epochs: "from its recent epochs",
  early_stopping: "early stopping ends it then unless it improves",
  queue_position: "from its place in the queue",
};

function duration(seconds) {
  let s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  let m = Math.floor(s / 60);
  s %= 60;
  if (m < 60) return `${m}m${String(s).padStart(2, "0")}s`;
  let h = Math.floor(m / 60);
  m %= 60;
  if (h < 24) return `${h}h${String(m).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}

// The job's `eta` counted down from when it was read, by this browser's clock (the server's may differ).
const etaRead = new WeakMap();
function secondsLeft(job) {
  if (!job.eta || FINAL.has(job.status)) return null;
  if (!etaRead.has(job)) etaRead.set(job, Date.now());
  return Math.max(0, job.eta.seconds - (Date.now() - etaRead.get(job)) / 1000);
}

function etaText(job) {
  const left = secondsLeft(job);
  if (left === null) return "";
  const at = new Date(Date.now() + left * 1000).toLocaleTimeString();
  return `ETA ${duration(left)} (${at}; ${ETA_BASIS[job.eta.basis] || job.eta.basis})`;
}

function bestText(job) {
  return job.best ? `${job.best.monitor} ${num(job.best.value)} (epoch ${job.best.epoch})` : "";
}

async function loadJobs() {
  const params = new URLSearchParams({ limit: "20" });
  const status = $("status-filter").value;
  if (status) params.set("status", status);
  const cursor = pages.cursors[pages.index];
  if (cursor) params.set("cursor", cursor);
  const body = await api(`/v1/jobs?${params}`);
  const rows = body.jobs.map((job) => {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const name = document.createElement("td");
    const link = text("a", job.name || job.id);
    link.href = `#/jobs/${job.id}`;
    name.append(link, text("div", job.id, "muted small"));
    tr.dataset.attention = attention(job);
    tr.append(selectCell(job), name, statusCell(job), text("td", when(job.created_at)),
      text("td", `${job.progress.epoch} / ${job.progress.epochs}`, "epochs"), text("td", bestText(job), "best"),
      findingsCell(job));
    return tr;
  });
  $("jobs-body").replaceChildren(...rows);
  updateCompareButton();
  $("jobs-empty").hidden = rows.length > 0;
  pages.cursors[pages.index + 1] = body.next_cursor;
  $("next-page").disabled = !body.next_cursor;
  $("prev-page").disabled = pages.index === 0;
  return body.jobs;
}

// How much a row asks for attention: "error" for a failed job or any error finding (also on a job that
// succeeded: it trained, but not as it should have), "warning" for warning findings, else "".
function attention(job) {
  const bySeverity = job.findings.by_severity || {};
  if (job.status === "failed" || bySeverity.error) return "error";
  return bySeverity.warning ? "warning" : "";
}

function findingsCell(job) {
  const td = document.createElement("td");
  td.className = "findings-count";
  for (const [severity, n] of Object.entries(job.findings.by_severity || {})) {
    if (n) td.appendChild(text("span", `${n} ${severity}`, `badge ${severity}`));
  }
  return td;
}

function statusCell(job) {
  const td = document.createElement("td");
  td.appendChild(text("span", job.status, `status ${job.status}`));
  const left = secondsLeft(job);
  if (left !== null) td.appendChild(text("div", `eta ${duration(left)}`, "muted small eta"));
  return td;
}

async function showJobs() {
  show("jobs-view");
  try {
    const jobs = await loadJobs();
    // Keep the page current while something on it can still change.
    if (jobs.some((j) => !FINAL.has(j.status))) {
      refreshTimer = setInterval(() => loadJobs().catch(showError), 3000);
    }
  } catch (err) {
    showError(err);
  }
}

// ------------------------------------------------------------------ one job

const MODES = { live: "● live", polling: "updating every 2 s", ended: "" };
const TRAIN_ONLY = new Set(["loss", "learning_rate", "seconds", "epoch"]);

function metricNames(rows) {
  const names = new Set();
  for (const row of rows) {
    for (const key of Object.keys(row)) {
      const base = key.startsWith("val_") ? key.slice(4) : key;
      if (!TRAIN_ONLY.has(base)) names.add(base);
    }
  }
  return [...names];
}

function curve(rows, key) {
  return { name: key, points: rows.filter((r) => key in r).map((r) => [r.epoch, r[key]]) };
}

function renderCharts(state) {
  const rows = state.metrics;
  const cards = [];
  // A job that ended, failed and cancelled ones too, is drawn from whatever epochs it logged.
  const options = { best: state.job.best, empty: FINAL.has(state.job.status) ? "no epochs logged" : "no data yet" };
  const pair = (key) => [curve(rows, key), curve(rows, `val_${key}`)].filter((s) => s.points.length);
  cards.push(chartCard("chart-loss", "Loss", pair("loss").length ? pair("loss") : [curve(rows, "loss")], options));
  for (const name of metricNames(rows)) {
    cards.push(chartCard(`chart-metric-${name}`, name, pair(name), options));
  }
  // Rates are set and searched in powers of ten: a log axis shows a schedule's decay and a tiny rate alike.
  cards.push(chartCard("chart-lr", "Learning rate", [curve(rows, "learning_rate")], { ...options, log: true }));
  const byVariable = new Map();
  for (const epoch of state.diagnostics) {
    for (const v of epoch.variables) {
      const key = `${v.layer}/${v.name}`;
      if (!byVariable.has(key)) byVariable.set(key, []);
      byVariable.get(key).push([epoch.epoch, v.update_ratio]);
    }
  }
  const ratios = [...byVariable].map(([name, points]) => ({ name, points }));
  const ratioCard = chartCard("chart-update-ratio", "Update / weight ratio per variable", ratios,
    { ...options, log: true });
  if (!ratios.length) {
    ratioCard.appendChild(text("p", state.job.spec.diagnostics && state.job.spec.diagnostics.enabled === false
      ? "Diagnostics are off for this job."
      : FINAL.has(state.job.status) ? "No diagnostics were recorded." : "No diagnostics yet.", "muted"));
  }
  cards.push(ratioCard);
  $("charts").replaceChildren(...cards);
}

// "Apply suggested change": fork the job with this finding's change (POST /v1/jobs/{id}/fork), then show the fork.
function applyButton(jobId, finding) {
  const button = text("button", "Apply suggested change", "apply-finding");
  button.type = "button";
  button.dataset.finding = finding.id;
  button.title = "Fork this job with the suggested change applied, trained from scratch";
  button.onclick = async () => {
    button.disabled = true;
    try {
      const child = await api(`/v1/jobs/${jobId}/fork`, { method: "POST", json: { apply_findings: [finding.id] } });
      location.hash = `#/jobs/${child.id}`;
    } catch (err) {
      button.disabled = false;
      showError(err);
    }
  };
  return button;
}

function resolvedNote(resolvedBy) {
  const p = text("p", resolvedBy.resolved ? "Resolved by fork " : "Not resolved by fork ", "muted resolved-by");
  const link = text("a", resolvedBy.job_id);
  link.href = `#/jobs/${resolvedBy.job_id}`;
  p.appendChild(link);
  return p;
}

function renderFindings(findings, jobId) {
  $("findings-empty").hidden = findings.length > 0;
  $("findings-list").replaceChildren(...findings.map((f) => {
    const li = document.createElement("li");
    li.className = `finding ${f.severity}`;
    li.dataset.code = f.code;
    const head = document.createElement("div");
    head.className = "finding-head";
    head.append(text("span", f.severity, `severity ${f.severity}`), text("strong", f.code),
      text("span", [f.layer, f.epoch ? `epoch ${f.epoch}` : ""].filter(Boolean).join(" · "), "muted"));
    li.append(head, text("p", f.message));
    const details = document.createElement("div");
    details.className = "finding-json";
    for (const [label, value] of [["evidence", f.evidence], ["suggested_change", f.suggested_change]]) {
      if (value === null || value === undefined) continue;
      const box = document.createElement("div");
      box.append(text("h4", label), text("pre", JSON.stringify(value, null, 2), label.replace("_", "-")));
      details.appendChild(box);
    }
    li.appendChild(details);
    if (f.suggested_change) li.appendChild(applyButton(jobId, f));
    if (f.resolved_by) li.appendChild(resolvedNote(f.resolved_by));
    return li;
  }));
}

function fact(label, value) {
  if (value === null || value === undefined || value === "") return [];
  return [text("dt", label), text("dd", value)];
}

function renderJob(job) {
  document.title = `${job.name || job.id} · Trainyard`;
  $("job-title").textContent = job.name || job.id;
  const status = $("job-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  shownJob = job;
  $("job-eta").textContent = etaText(job);
  const tests = job.test_metrics
    ? Object.entries(job.test_metrics).map(([k, v]) => `${k} ${num(v)}`).join(", ") : "";
  $("job-facts").replaceChildren(
    ...fact("Id", job.id),
    ...fact("Epochs", `${job.progress.epoch} / ${job.progress.epochs}`),
    ...fact("Best", bestText(job)),
    ...fact("Stop reason", job.stop_reason),
    ...fact("Error", job.error ? `${job.error.code}: ${job.error.message || ""}` : ""),
    ...fact("Test metrics", tests),
    ...fact("Forked from", job.parent ? `${job.parent.id} (${job.parent.applied_findings.join(", ") || "patch"})` : ""),
    ...fact("Forks", (job.children || []).join(", ")),
    ...fact("Replay of", job.replay_of),
    ...fact("Reproduction", job.reproduction ? reproductionText(job.reproduction) : ""),
    ...fact("Created", when(job.created_at)),
    ...fact("Finished", when(job.finished_at)),
  );
  $("download-keras").disabled = !job.best;
  for (const fmt of EXPORT_FORMATS) $(`download-${fmt}`).disabled = job.status !== "succeeded";
  $("download-card").disabled = !(job.best && FINAL.has(job.status));
  $("cancel-job").hidden = FINAL.has(job.status);
  $("replay-job").hidden = !FINAL.has(job.status);
  // The spec as the API normalised it (defaults filled in): what the job actually ran.
  const spec = JSON.stringify(job.spec, null, 2);
  if ($("job-spec-json").textContent !== spec) $("job-spec-json").textContent = spec;
}

async function save(path, filename, button) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = "Downloading…";
  try {
    const resp = await api(path, { raw: true });
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = filename;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (err) {
    showError(err);
  } finally {
    button.textContent = label;
    button.disabled = false;
  }
}

let shownJob = null;
const EXPORT_FORMATS = ["savedmodel", "onnx", "keras-serving"];

function showJob(jobId) {
  show("job-view");
  shownJob = null;
  $("job-eta").textContent = "";
  // The time left counts down between the job's updates (a slow epoch may take minutes).
  refreshTimer = setInterval(() => { if (shownJob) $("job-eta").textContent = etaText(shownJob); }, 1000);
  $("job-title").textContent = jobId;
  $("job-status").textContent = "";
  $("job-facts").replaceChildren();
  $("charts").replaceChildren();
  forgetScaleChoices();
  $("job-spec").open = false;
  $("job-spec-json").textContent = "";
  $("findings-list").replaceChildren();
  $("findings-empty").hidden = true;
  $("download-keras").onclick = (e) => save(`/v1/jobs/${jobId}/checkpoints/best`, `${jobId}-best.keras`, e.target);
  // The exports take raw inputs and carry the model card (card.json); made when the job succeeds.
  for (const fmt of EXPORT_FORMATS) {
    $(`download-${fmt}`).onclick = (e) =>
      save(`/v1/jobs/${jobId}/checkpoints/best?format=${fmt}`, `${jobId}-best.${fmt}.tar.gz`, e.target);
  }
  $("download-card").onclick = (e) => save(`/v1/jobs/${jobId}/card`, `${jobId}-card.json`, e.target);
  $("download-tensorboard").onclick = (e) =>
    save(`/v1/jobs/${jobId}/tensorboard`, `${jobId}-tensorboard.tar.gz`, e.target);
  $("cancel-job").onclick = () => api(`/v1/jobs/${jobId}/cancel`, { method: "POST" }).then(renderJob, showError);
  $("replay-job").onclick = async (e) => {
    e.target.disabled = true;
    try {
      const replay = await api(`/v1/jobs/${jobId}/replay`, { method: "POST" });
      location.hash = `#/jobs/${replay.id}`;
    } catch (err) {
      showError(err);
    } finally {
      e.target.disabled = false;
    }
  };

  const view = document.getElementById("job-view");
  // Another job's state must not show while this one loads (the page moves from a job to its fork or replay).
  for (const key of ["status", "live", "epochs"]) delete view.dataset[key];
  stopFollowing = follow(jobId, {
    api,
    token,
    onUpdate(state) {
      renderJob(state.job);
      renderCharts(state);
      renderFindings(state.findings, jobId);
      view.dataset.epochs = String(state.metrics.length);
      view.dataset.status = state.job.status;
    },
    onMode(mode) {
      $("job-live").textContent = MODES[mode];
      view.dataset.live = mode;
    },
    onError(err) {
      if (err instanceof ApiError && err.status === 404) {
        $("job-title").textContent = "Job not found";
        $("job-facts").replaceChildren(...fact("Id", jobId));
      }
      showError(err);
    },
  });
}

// ------------------------------------------------------------------ compare

function reproductionText(r) {
  const env = Object.keys(r.environment_diff || {});
  const envText = env.length ? `; environment differs in ${env.join(", ")}` : "";
  if (r.identical) return `identical: every epoch's metrics match${envText}`;
  const diffs = Object.entries(r.max_abs_diff || {}).filter(([, v]) => v).map(([k, v]) => `${k} ${num(v)}`);
  return `diverged at epoch ${r.first_divergent_epoch}${diffs.length ? ` (max |diff| ${diffs.join(", ")})` : ""}${envText}`;
}

// A job's label in the compare view: its name and the start of its id (names repeat: a replay keeps it).
function jobLabel(job) {
  return `${job.name || "job"} · ${job.id.slice(4, 12)}`;
}

function diffValue(v) {
  if (v === null || v === undefined) return "–";
  return typeof v === "string" ? v : JSON.stringify(v);
}

function renderDiff(table, diff, jobs) {
  const head = document.createElement("tr");
  head.append(text("th", "Field"), ...jobs.map((j, i) => {
    const th = text("th", jobLabel(j));
    th.style.color = color(i);
    return th;
  }));
  const rows = Object.entries(diff).map(([path, values]) => {
    const tr = document.createElement("tr");
    tr.dataset.path = path;
    tr.append(text("td", path, "path"), ...values.map((v) => text("td", diffValue(v), "value")));
    return tr;
  });
  table.replaceChildren(head, ...rows);
  table.hidden = rows.length === 0;
  return rows.length;
}

function renderCompare(body) {
  const jobs = body.jobs;
  $("compare-jobs").tBodies[0].replaceChildren(...jobs.map((job, i) => {
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const swatch = text("span", "", "swatch");
    swatch.style.background = color(i);
    const swatchCell = document.createElement("td");
    swatchCell.appendChild(swatch);
    const name = document.createElement("td");
    const link = text("a", job.name || job.id);
    link.href = `#/jobs/${job.id}`;
    name.append(link, text("div", job.id + (job.replay_of ? ` · replay of ${job.replay_of}` : ""), "muted small"));
    tr.append(swatchCell, name, text("td", job.status), text("td", job.seed ?? "none"),
      text("td", String(job.epochs_run)), text("td", bestText(job), "best"));
    return tr;
  }));
  const byId = new Map(jobs.map((j) => [j.id, j]));
  $("compare-pairs").replaceChildren(...body.pairs.map((p) => {
    const [a, b] = p.ids.map((id) => jobLabel(byId.get(id)));
    const li = text("li", p.identical
      ? `${a} and ${b} (seed ${p.seed}) are identical at every epoch`
      : `${a} and ${b} (seed ${p.seed}) first differ at epoch ${p.first_divergent_epoch}`,
    p.identical ? "identical" : "diverged");
    li.dataset.pair = p.ids.join(",");
    return li;
  }));
  $("spec-diff-empty").hidden = renderDiff($("spec-diff"), body.spec_diff, jobs) > 0;
  const envCount = renderDiff($("environment-diff"), body.environment_diff, jobs);
  $("environment-diff-count").textContent = envCount ? `${envCount} fields` : "none";

  // One chart per metric, every job's curve on it, in the jobs' colours.
  const options = { empty: "no epochs logged" };
  const cards = body.metrics.map((metric) => {
    // A replay's curve is dashed: where it reproduces its original exactly, the original shows through.
    const series = jobs.map((job, i) => ({
      name: jobLabel(job),
      dashed: job.replay_of !== null,
      points: body.epochs.filter((row) => row.values[metric][i] !== null).map((row) => [row.epoch, row.values[metric][i]]),
    }));
    const id = metric === "learning_rate" ? "compare-chart-lr" : `compare-chart-${metric}`;
    const title = metric === "learning_rate" ? "Learning rate" : metric;
    return chartCard(id, title, series, { ...options, log: metric === "learning_rate" });
  });
  $("compare-charts").replaceChildren(...cards);
}

async function showCompare(ids) {
  show("compare-view");
  document.title = "Compare · Trainyard";
  const view = $("compare-view");
  delete view.dataset.loaded;
  forgetScaleChoices();
  $("compare-charts").replaceChildren();
  try {
    const body = await api(`/v1/jobs/compare?ids=${encodeURIComponent(ids.join(","))}`);
    renderCompare(body);
    view.dataset.loaded = "true";
  } catch (err) {
    showError(err);
  }
}

// ------------------------------------------------------------------ sweeps

async function showSweeps() {
  show("sweeps-view");
  try {
    const { sweeps } = await api("/v1/sweeps?limit=100");
    $("sweeps-body").replaceChildren(...sweeps.map((sw) => {
      const row = document.createElement("tr");
      row.dataset.sweep = sw.id;
      const link = document.createElement("a");
      link.href = `#/sweeps/${sw.id}`;
      link.textContent = sw.name || sw.id;
      const name = document.createElement("td");
      name.appendChild(link);
      row.append(name, text("td", sw.status, `status ${sw.status}`), text("td", sw.algorithm.type),
        text("td", `${sw.progress.submitted} / ${sw.progress.max_trials}`), text("td", when(sw.created_at)));
      return row;
    }));
    $("sweeps-empty").hidden = sweeps.length > 0;
  } catch (err) {
    showError(err);
  }
}

// The best value after each trial, in submission order; trials without a value keep the best so far.
export function bestSoFar(trials, mode) {
  let best = null;
  return trials.map((t) => {
    if (t.value !== null && Number.isFinite(t.value)
        && (best === null || (mode === "min" ? t.value < best : t.value > best))) best = t.value;
    return [t.trial, best];
  });
}

function renderSweep(sw) {
  $("sweep-title").textContent = sw.name || sw.id;
  $("sweep-status").textContent = sw.status;
  $("sweep-status").className = `status ${sw.status}`;
  const objective = sw.objective;
  const facts = [
    ["Id", sw.id], ["Algorithm", sw.algorithm.type], ["Early stopping", sw.early_stopping ? sw.early_stopping.type : "none"],
    ["Objective", (sw.objectives || [objective]).map((o) => `${o.metric} (${o.mode})`).join(", ")],
    ["Trials", `${sw.progress.submitted} of ${sw.progress.max_trials} submitted`],
    ["Best", sw.best ? `trial ${sw.best.trial}: ${num(sw.best.value)}` : "-"],
  ];
  if (sw.pareto_front) facts.push(["Pareto front", sw.pareto_front.length ? `trials ${sw.pareto_front.join(", ")}` : "-"]);
  if (sw.importance) {
    facts.push(["Importance", Object.entries(sw.importance).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ")]);
  }
  $("sweep-facts").replaceChildren(...facts.flatMap(([label, value]) => fact(label, value)));

  const trials = [...sw.trials].sort((a, b) => a.trial - b.trial);
  const options = { xLabel: "trial", empty: sw.status === "running" ? "no trial has a value yet" : "no values" };
  const cards = [
    chartCard("chart-sweep-objective", `${objective.metric} per trial`,
      [{ name: objective.metric, points: trials.map((t) => [t.trial, t.value]) }], options),
    chartCard("chart-sweep-best", `Best ${objective.metric} so far`,
      [{ name: "best so far", points: bestSoFar(trials, objective.mode) }], options),
  ];
  for (const [path, param] of Object.entries(sw.search)) {
    const values = trials.map((t) => [t.params[path], t.value, t.trial]);
    if (!values.every(([x]) => typeof x === "number")) continue; // objects and strings have no axis
    const card = document.createElement("figure");
    card.className = "card chart-card";
    card.id = `chart-sweep-param-${path.replace(/[^\w]/g, "_")}`;
    card.dataset.param = path;
    const caption = document.createElement("figcaption");
    caption.appendChild(text("span", `${path} vs ${objective.metric}`, "title"));
    card.append(caption, scatterChart(values, { xLabel: path, yLabel: objective.metric,
      logX: param.type === "log_uniform", empty: options.empty }));
    cards.push(card);
  }
  $("sweep-charts").replaceChildren(...cards);

  const paths = Object.keys(sw.search);
  const head = document.createElement("tr");
  head.append(...["Rank", "Trial", "Status", "Stop reason", "Epochs", objective.metric, ...paths].map((h) => text("th", h)));
  $("sweep-trials-head").replaceChildren(head);
  $("sweep-trials").replaceChildren(...sw.trials.map((t) => {
    const row = document.createElement("tr");
    row.dataset.trial = String(t.trial);
    const link = document.createElement("a");
    link.href = `#/jobs/${t.job_id}`;
    link.textContent = String(t.trial);
    const cell = document.createElement("td");
    cell.appendChild(link);
    row.append(text("td", t.rank ?? "-"), cell, text("td", t.status, `status ${t.status}`),
      text("td", t.stop_reason || "-"), text("td", String(t.epochs)), text("td", num(t.value)),
      ...paths.map((p) => text("td", typeof t.params[p] === "object" ? JSON.stringify(t.params[p]) : String(t.params[p]))));
    return row;
  }));
  const view = $("sweep-view");
  view.dataset.status = sw.status;
  view.dataset.trials = String(sw.trials.length);
}

function showSweep(sweepId) {
  show("sweep-view");
  forgetScaleChoices();
  $("sweep-title").textContent = sweepId;
  $("sweep-facts").replaceChildren();
  $("sweep-charts").replaceChildren();
  $("sweep-trials").replaceChildren();
  const load = () => api(`/v1/sweeps/${sweepId}`).then((sw) => {
    renderSweep(sw);
    if (sw.status !== "running") { clearInterval(refreshTimer); refreshTimer = null; }
  }, (err) => { clearInterval(refreshTimer); refreshTimer = null; showError(err); });
  refreshTimer = setInterval(load, 2000); // a sweep has no event stream: poll while it runs
  load();
}

// ------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    try {
      await api("/v1/jobs?limit=1"); // says 401 (and asks again) when the token is wrong
      route();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) showError(err);
    }
  });
  $("status-filter").addEventListener("change", () => {
    pages.cursors = [null];
    pages.index = 0;
    loadJobs().catch(showError);
  });
  $("compare-selected").addEventListener("click", () => {
    location.hash = `#/compare/${[...selected].join(",")}`;
  });
  $("next-page").addEventListener("click", () => { pages.index++; loadJobs().catch(showError); });
  $("prev-page").addEventListener("click", () => { pages.index--; loadJobs().catch(showError); });
  window.addEventListener("hashchange", route);
  route();
});
