// Following one job: server-sent events when the API offers them, polling otherwise.
//
// EventSource cannot send an Authorization header, so the stream is read with fetch() and parsed here.
// GET /v1/jobs/{id}/events sends `status` ({status, stop_reason, job}), `epoch` (a metrics row), `finding`
// and `end` events. When the endpoint is missing (404/405), refuses, or the stream breaks before `end`,
// the page polls instead: GET the job every 2 s (with If-None-Match when the API gives an ETag), and only
// when it changed, the new metrics and diagnostics rows.

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const SEVERITY = { error: 0, warning: 1, info: 2 };
const POLL_MS = 2000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function sortFindings(findings) {
  return findings.sort((a, b) => (SEVERITY[a.severity] ?? 3) - (SEVERITY[b.severity] ?? 3)
    || (a.epoch || 0) - (b.epoch || 0) || a.code.localeCompare(b.code));
}

// Yields {event, data, id} for each event of a text/event-stream body (comments are skipped).
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const message = { event: "message", data: [], id: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") message.event = value;
        else if (field === "data") message.data.push(value);
        else if (field === "id") message.id = value;
      }
      if (message.data.length) yield { ...message, data: message.data.join("\n") };
    }
  }
}

export function follow(jobId, { api, token, onUpdate, onMode, onError }) {
  const state = { job: null, metrics: [], diagnostics: [], findings: [] };
  const controller = new AbortController();
  let stopped = false;
  let etag = null;
  let pending = null;

  const lastEpoch = (rows) => (rows.length ? rows[rows.length - 1].epoch : 0);
  function merge(rows, incoming) {
    // Keyed by epoch: a resumed job rewrites the epochs after its last backup.
    const byEpoch = new Map(rows.map((r) => [r.epoch, r]));
    for (const row of incoming) byEpoch.set(row.epoch, row);
    return [...byEpoch.values()].sort((a, b) => a.epoch - b.epoch);
  }

  async function sync(job = null) {
    const base = `/v1/jobs/${jobId}`;
    const [fresh, metrics, diagnostics] = await Promise.all([
      job ? Promise.resolve(job) : api(base),
      api(`${base}/metrics?after=${lastEpoch(state.metrics)}`),
      api(`${base}/diagnostics?after=${lastEpoch(state.diagnostics)}`),
    ]);
    if (stopped) return;
    state.job = fresh;
    state.metrics = merge(state.metrics, metrics.epochs);
    state.diagnostics = merge(state.diagnostics, diagnostics.epochs);
    state.findings = sortFindings(diagnostics.findings);
    onUpdate(state);
  }

  // Several events in a burst (an epoch row, its findings, a status) cost one round of requests.
  function syncSoon() {
    if (!pending) {
      pending = sleep(250).then(() => { pending = null; return stopped ? null : sync(); }).catch(onError);
    }
    return pending;
  }

  async function stream() {
    let resp;
    try {
      resp = await fetch(`/v1/jobs/${jobId}/events`, {
        headers: { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" },
        cache: "no-store",
        signal: controller.signal,
      });
    } catch {
      return false;
    }
    const type = resp.headers.get("Content-Type") || "";
    if (!resp.ok || !type.startsWith("text/event-stream") || !resp.body) {
      resp.body?.cancel().catch(() => {});
      return false;
    }
    onMode("live");
    try {
      for await (const message of sseEvents(resp.body)) {
        if (stopped) return true;
        const data = JSON.parse(message.data);
        if (message.event === "status") {
          state.job = data.job;
          onUpdate(state);
          syncSoon();
        } else if (message.event === "epoch") {
          state.metrics = merge(state.metrics, [data]);
          onUpdate(state);
          syncSoon(); // the epoch's diagnostics rows
        } else if (message.event === "finding") {
          // One entry per finding: its id is stable while its evidence changes from epoch to epoch.
          const key = (f) => f.id ?? `${f.code}/${f.layer || ""}`;
          state.findings = sortFindings([...state.findings.filter((f) => key(f) !== key(data)), data]);
          onUpdate(state);
        } else if (message.event === "end") {
          await sync();
          return true;
        }
      }
    } catch (err) {
      if (stopped) return true;
      console.warn("event stream broke; polling instead", err);
    }
    return false; // closed before `end`
  }

  async function poll() {
    onMode("polling");
    while (!stopped && !FINAL.has(state.job.status)) {
      await sleep(POLL_MS);
      if (stopped) return;
      const resp = await api(`/v1/jobs/${jobId}`, { raw: true, headers: etag ? { "If-None-Match": etag } : {} });
      if (resp.status === 304) continue;
      etag = resp.headers.get("ETag");
      const job = await resp.json();
      const before = state.job;
      const moved = job.status !== before.status || job.progress.epoch !== before.progress.epoch
        || job.findings.count !== before.findings.count || JSON.stringify(job.best) !== JSON.stringify(before.best);
      if (moved) {
        await sync(job);
      } else {
        state.job = job;
        onUpdate(state);
      }
    }
  }

  (async () => {
    try {
      await sync();
      if (!FINAL.has(state.job.status) && !stopped) {
        if (!(await stream()) && !stopped) await poll();
      }
      if (!stopped) onMode("ended");
    } catch (err) {
      if (!stopped) onError(err);
    }
  })();

  return () => {
    stopped = true;
    controller.abort();
  };
}
