"""Plain-text rendering for the command line: aligned tables, epoch lines and job summaries."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

TAIL_COLUMNS = ("learning_rate", "seconds")


def fmt(value: Any, key: str = "") -> str:
    """A cell: learning rates in scientific notation, other floats to 4 decimals, null as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if key in ("learning_rate", "lr"):
        return f"{value:.2e}"
    if key == "seconds":
        return f"{value:.2f}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Columns padded to their widest cell, two spaces apart; numbers right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(_looks_numeric(r[i]) for r in cells) and bool(cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in cells])


def _looks_numeric(s: str) -> bool:
    if s == "-":
        return True
    try:
        float(s)
    except ValueError:
        return False
    return True


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs)


def metric_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """epoch, loss, the spec's metrics, their val_ copies, then learning_rate and seconds."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    head = [k for k in ("epoch", "loss") if k in keys]
    tail = [k for k in TAIL_COLUMNS if k in keys]
    middle = [k for k in keys if k not in head and k not in tail]
    train = [k for k in middle if not k.startswith("val_")]
    val = [k for k in middle if k.startswith("val_")]
    return head + train + val + tail


def metrics_table(rows: Sequence[dict[str, Any]]) -> str:
    columns = metric_columns(rows)
    return table([[fmt(r.get(c), c) for c in columns] for r in rows], columns)


def epoch_line(row: dict[str, Any], epochs: int | None, metric: str | None = None,
               eta_seconds: float | None = None) -> str:
    """`epoch 3/20  loss 0.4123  val_loss 0.3810  accuracy 0.9100  val_accuracy 0.8900  lr 1.00e-03  eta 1m12s`:
    `metric` (the job's first, `first_metric`) and its validation copy when the row has them, and the time
    left when it is known."""
    parts = [f"epoch {row['epoch']}/{epochs}" if epochs else f"epoch {row['epoch']}"]
    parts.append(f"loss {fmt(row.get('loss'))}")
    if "val_loss" in row:
        parts.append(f"val_loss {fmt(row.get('val_loss'))}")
    if metric:
        parts += [f"{key} {fmt(row.get(key))}" for key in (metric, f"val_{metric}") if key in row]
    if "learning_rate" in row:
        parts.append(f"lr {fmt(row.get('learning_rate'), 'lr')}")
    if eta_seconds is not None:
        parts.append(f"eta {duration(eta_seconds)}")
    return "  ".join(parts)


def first_metric(job: dict[str, Any]) -> str | None:
    """The first of the spec's `metrics`: it is logged under its own name (and `val_` + it)."""
    metrics = (job.get("spec") or {}).get("metrics") or []
    return metrics[0] if metrics else None


def duration(seconds: float) -> str:
    """`45s`, `1m12s`, `2h03m`, `3d04h`: two units at most, rounded to the second."""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def finding_line(finding: dict[str, Any]) -> str:
    """`finding ERROR lr_too_small: <message> [suggested: optimizer.learning_rate=0.0046 (update_ratio)]`,
    single-spaced (the summary table after it is split on double spaces)."""
    where = f" in {finding['layer']}" if finding.get("layer") else ""
    text = " ".join(str(finding.get("message") or "").split())
    line = f"finding {str(finding.get('severity', '')).upper()} {finding.get('code')}{where}: {text}"
    change = finding.get("suggested_change")
    if change:
        fields = patch_text(change)
        basis = finding.get("suggested_change_basis")
        line += f" [suggested: {fields}{f' ({basis})' if basis else ''}]"
    return line


def patch_text(change: dict[str, Any]) -> str:
    """A spec change as `optimizer.learning_rate=0.0052, training.epochs=5`."""
    return ", ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in _flat(change).items())


def _flat(change: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in change.items():
        if isinstance(value, dict) and value and prefix + key != "callbacks":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def best_text(job: dict[str, Any]) -> str:
    best = job.get("best")
    if not best:
        return "-"
    return f"{best.get('monitor') or 'value'} {fmt(best.get('value'))} at epoch {best['epoch']}"


def job_summary(job: dict[str, Any]) -> str:
    """The table `watch` and `status` print: status, progress, best, test metrics, stop reason, error."""
    progress = job.get("progress") or {}
    pairs: list[tuple[str, Any]] = [
        ("job", job["id"]),
        ("name", job.get("name") or "-"),
        ("labels", labels_text(job.get("labels")) or "-"),
        ("status", job["status"] + (" (cancel requested)" if job.get("cancel_requested")
                                    and job["status"] not in ("cancelled", "failed", "succeeded") else "")),
        ("epochs", f"{progress.get('epoch', 0)}/{progress.get('epochs', '?')}"),
        ("best", best_text(job)),
    ]
    for name, value in (job.get("test_metrics") or {}).items():
        pairs.append((f"test {name}", fmt(value)))
    chosen = (job.get("optimizer") or {}).get("learning_rate_chosen")
    if chosen is not None:
        pairs.append(("learning rate", f"{fmt(chosen, 'lr')} (auto: chosen by the range test)"))
    pairs.append(("stop reason", job.get("stop_reason") or "-"))
    if job.get("error"):
        err = job["error"]
        pairs.append(("error", f"{err.get('code')}: {err.get('message') or ''}".rstrip(": ")))
    findings = job.get("findings")
    if isinstance(findings, dict) and findings.get("count"):
        by = findings.get("by_severity") or {}
        pairs.append(("findings", ", ".join(f"{n} {sev}" for sev, n in by.items() if n)
                      + f" (trainyard diagnostics {job['id']})"))
    parent = job.get("parent")
    if parent:
        source = parent.get("from")
        source = f"epoch {source['epoch']}" if isinstance(source, dict) else source
        pairs.append(("forked from", f"{parent['id']} (from {source}; "
                                     f"{patch_text(parent.get('patch') or {}) or 'no changes'})"))
    if job.get("children"):
        pairs.append(("forks", ", ".join(job["children"])))
    if job.get("replay_of"):
        pairs.append(("replay of", job["replay_of"]))
        if job.get("reproduction") is not None:
            pairs.append(("reproduction", reproduction_text(job["reproduction"])))
    for key in ("created_at", "started_at", "finished_at"):
        pairs.append((key.replace("_at", ""), job.get(key) or "-"))
    return key_values(pairs)


def labels_text(labels: dict[str, str] | None) -> str:
    """`team=vision,stage=draft` (as `trainyard label` takes them)."""
    return ",".join(f"{key}={value}" for key, value in (labels or {}).items())


def jobs_table(jobs: Sequence[dict[str, Any]]) -> str:
    """One row per job; a LABELS column when any of them has labels."""
    with_labels = any(j.get("labels") for j in jobs)
    rows = [[j["id"], j.get("name") or "-", j["status"],
             f"{j['progress']['epoch']}/{j['progress']['epochs']}", best_text(j), j.get("created_at") or "-"]
            + ([labels_text(j.get("labels")) or "-"] if with_labels else [])
            for j in jobs]
    return table(rows, ["ID", "NAME", "STATUS", "EPOCH", "BEST", "CREATED"] + (["LABELS"] if with_labels else []))


def findings_text(findings: Sequence[dict[str, Any]]) -> str:
    if not findings:
        return "no findings"
    lines = []
    for f in findings:
        where = ", ".join(x for x in (f"layer {f['layer']}" if f.get("layer") else "",
                                      f"epoch {f['epoch']}" if f.get("epoch") is not None else "") if x)
        lines.append(f"{f.get('severity', '?').upper():7}  {f.get('code')}" + (f"  ({where})" if where else ""))
        lines.append(f"         {f.get('message')}")
        change = f.get("suggested_change")
        if change:
            text = change if isinstance(change, str) else json.dumps(change)
            lines.append(f"         suggested change: {text}  (trainyard fork JOB --apply-findings {f.get('id')})")
        resolved = f.get("resolved_by")
        if resolved:
            lines.append(f"         {'resolved' if resolved.get('resolved') else 'not resolved'} by fork "
                         f"{resolved.get('job_id')}")
    return "\n".join(lines)


def range_test_text(sweep: dict[str, Any], rows: int = 12) -> str:
    """The learning-rate range test: its suggestion, then about `rows` points of the curve, evenly spaced."""
    chosen = sweep.get("learning_rate_chosen")
    head = (f"learning-rate range test ({sweep.get('rule')}): suggests "
            f"{fmt(sweep.get('suggested_learning_rate'), 'lr')}"
            + (" (optimizer.learning_rate auto trains at it)" if chosen is not None else "")
            + f"; lowest loss at {fmt(sweep.get('min_loss_learning_rate'), 'lr')}; {sweep.get('steps')} of "
            f"{sweep.get('steps_planned')} steps ({sweep.get('ended')}), {fmt(sweep.get('seconds'), 'seconds')} s")
    curve = sweep.get("curve") or []
    step = max(1, -(-len(curve) // rows))
    points = curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else [])
    return head + "\n" + table([[fmt(p.get("learning_rate"), "lr"), fmt(p.get("loss"))] for p in points],
                                ["LEARNING_RATE", "SMOOTHED_LOSS"])


VARIABLE_COLUMNS = ("grad_norm", "weight_norm", "update_norm", "update_ratio", "zero_grad_fraction")


def variables_table(epoch: dict[str, Any]) -> str:
    rows = [[v.get("layer") or "-", v.get("name") or "-"] + [_sci(v.get(c)) for c in VARIABLE_COLUMNS]
            for v in epoch.get("variables") or []]
    return table(rows, ["LAYER", "VARIABLE", *(c.upper() for c in VARIABLE_COLUMNS)])


def _sci(value: Any) -> str:
    return f"{value:.3e}" if isinstance(value, (int, float)) and not isinstance(value, bool) else fmt(value)


# ------------------------------------------------------------------------------------- replay and compare


def _diff_value(value: Any) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def reproduction_text(reproduction: dict[str, Any]) -> str:
    """`identical: every epoch's metrics match` or `diverged at epoch 3 (max |diff| loss 1.2e-07, ...)`, and
    what differs in the environment."""
    if reproduction.get("identical"):
        text = "identical: every epoch's metrics match"
    else:
        diffs = ", ".join(f"{k} {_sci(v)}" for k, v in (reproduction.get("max_abs_diff") or {}).items() if v)
        text = f"diverged at epoch {reproduction.get('first_divergent_epoch')}" + (f" (max |diff| {diffs})" if diffs
                                                                                   else "")
    env = reproduction.get("environment_diff") or {}
    if env:
        text += "; environment: " + ", ".join(f"{path} {_diff_value(a)} -> {_diff_value(b)}"
                                              for path, (a, b) in env.items())
    return text


def _short(job_id: str) -> str:
    return job_id[:12]  # "job_" and 8 hex digits: enough to tell a handful of jobs apart


def comparison_text(body: dict[str, Any]) -> str:
    """`trainyard compare`: the jobs, the spec and environment diffs (one row per field, one column per
    job), where same-seed pairs part, and the per-epoch table (each metric once per job)."""
    jobs = body["jobs"]
    heads = [_short(j["id"]) for j in jobs]
    out = [table([[j["id"], j.get("name") or "-", j["status"], fmt(j.get("seed")), j["epochs_run"], best_text(j)]
                  for j in jobs], ["job", "name", "status", "seed", "epochs", "best"])]
    for title, diff in (("spec", body["spec_diff"]), ("environment", body["environment_diff"])):
        out.append("")
        if diff:
            out.append(table([[path] + [_diff_value(v) for v in values] for path, values in diff.items()],
                             [f"{title} diff"] + heads))
        else:
            out.append(f"{title}: no differences")
    for pair in body.get("pairs") or []:
        a, b = (_short(i) for i in pair["ids"])
        if pair["identical"]:
            out.append(f"{a} and {b} (seed {pair['seed']}): identical at every epoch")
        else:
            out.append(f"{a} and {b} (seed {pair['seed']}): first differ at epoch {pair['first_divergent_epoch']}")
    metrics = [m for m in body["metrics"]]
    if body["epochs"]:
        headers = ["epoch"] + [f"{m}[{i + 1}]" for m in metrics for i in range(len(jobs))]
        rows = [[row["epoch"]] + [fmt(v, m) for m in metrics for v in row["values"][m]] for row in body["epochs"]]
        out += ["", "[n] is the n-th job above", table(rows, headers)]
    else:
        out += ["", "no epochs finished yet"]
    return "\n".join(out)
