"""Diagnostics overhead benchmark: ``train()`` with diagnostics and preflight on versus both off.

Same workload as bench/engine.py (784-128-10 MLP, 60,000 synthetic samples, 3 epochs, batch 128, adam).
Both sides run in this process, alternating, after one warm-up each. Timed: the fit phase as the
engine benchmark times it (end of ``started`` to the last epoch row), which includes preflight, the
per-epoch probe measurements and the findings; and the whole ``train()`` call. Ratios are taken pair by
pair, then the median. Single pairs swing by +-10 % on a shared machine, more than the effect measured,
so the diagnostics' own work is also timed directly (``intrinsic_cost``) and reported as a ratio to the
off run's fit. The data checks (workers/trainer/diagnostics/data_checks.py) are one of its parts; since the
workload has no validation split, they are also timed on the same data with a 0.2 validation split
(``data_check_cost``: the leakage check hashes 48,000 training rows against 12,000 validation rows) and
reported as a ratio to one epoch of the off run's fit. Run: ``.venv/bin/python bench/diagnostics.py
[--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine import SPEC, _FitTimer, make_data  # noqa: E402
from workers.trainer import TrainData, train  # noqa: E402

TARGET_RATIO = 1.03


def intrinsic_cost(x, y) -> dict[str, float]:
    """Seconds diagnostics add to one run, timed directly (robust to a busy machine), part by part: the
    data-scale statistics, preflight, and over the epochs a weight snapshot and a probe measurement each,
    and the findings rules; "total" is their sum.

    The model's train function is traced before the clock starts: in a real run preflight traces the very
    function fit then reuses (workers/trainer/preflight.py), so tracing is fit's cost either way.
    """
    from workers.trainer.data import make_dataset, prepare_data, split_data
    from workers.trainer.diagnostics.data_checks import analyze_data, measure_features
    from workers.trainer.diagnostics.data_stats import scale_stats
    from workers.trainer.diagnostics.findings import RunContext, analyze_epochs
    from workers.trainer.diagnostics.probe import ProbeMeasure, probe_batch, trainable_variables
    from workers.trainer.layers import build_model
    from workers.trainer.losses import build_loss
    from workers.trainer.optimizers import build_optimizer
    from workers.trainer.preflight import preflight

    prepared = prepare_data(SPEC, TrainData(x, y))
    model = build_model(SPEC)
    model.compile(optimizer=build_optimizer(SPEC["optimizer"], SPEC["schedule"], len(x) // 128 + 1),
                  loss=build_loss(SPEC["loss"]), metrics=["accuracy"])
    model.fit(make_dataset(prepared.x_train[:1280], prepared.y_train[:1280], 128), epochs=1, verbose=0,
              shuffle=False)
    tracked = trainable_variables(model)
    context = RunContext(SPEC, [t.describe() for t in tracked])
    parts = {"stats": 0.0, "data_checks": 0.0, "preflight": 0.0, "probes": 0.0, "findings": 0.0}
    clock = time.perf_counter()

    def lap(part: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        parts[part] += now - clock
        clock = now

    scale_stats(x, y, classification=True)
    lap("stats")
    analyze_data(measure_features(split_data(SPEC, TrainData(x, y))), prepared.y_train, context, 10)
    lap("data_checks")
    measure = ProbeMeasure(model, build_loss(SPEC["loss"]), tracked)
    preflight(model, SPEC, prepared.x_train, prepared.y_train, context=context, measure=measure)
    lap("preflight")
    probe = probe_batch(prepared.x_train, prepared.y_train)
    history = []
    for epoch in range(1, SPEC["training"]["epochs"] + 1):
        before = measure.snapshot()
        loss, rows = measure.measure(*probe, before)
        lap("probes")
        history.append({"epoch": epoch, "learning_rate": 0.001, "loss": loss, "val_loss": None,
                        "variables": rows})
        analyze_epochs(history, context)
        lap("findings")
    parts["total"] = sum(parts.values())
    return parts


def data_check_cost(x, y, validation_split: float = 0.2) -> float:
    """Seconds of the data checks on the workload's data split for validation, as a job with
    ``validation_split`` would run them: the split's features measured (constant and non-finite features,
    rows shared with validation), then the findings with the label checks."""
    from workers.trainer.data import split_data
    from workers.trainer.diagnostics.data_checks import analyze_data, measure_features
    from workers.trainer.diagnostics.findings import RunContext

    spec = {**SPEC, "dataset": {**SPEC["dataset"], "validation_split": validation_split}}
    splits = split_data(spec, TrainData(x, y))
    context = RunContext(spec, [])
    began = time.perf_counter()
    report = measure_features(splits)
    analyze_data(report, splits.y_train, context, 10)
    seconds = time.perf_counter() - began
    assert report["rows"]["val"] == int(len(x) * validation_split) and report["shared"]["val"] == 0, report
    return seconds


def run(x, y, enabled: bool) -> tuple[float, float, int]:
    """(fit seconds, whole seconds, diagnostics records) for one run."""
    spec = {**SPEC, "diagnostics": {"enabled": enabled, "preflight": enabled}}
    reporter = _FitTimer()
    with tempfile.TemporaryDirectory(prefix="bench-diagnostics-") as tmp:
        began = time.perf_counter()
        result = train(spec, TrainData(x, y), reporter, tmp)
        whole = time.perf_counter() - began
    assert result.stop_reason == "completed", result
    return reporter.fit_ended - reporter.fit_began, whole, len(reporter.diagnostics_records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--side", choices=("on", "off"),
                        help="run one side once and exit (to time whole processes side by side)")
    args = parser.parse_args()
    x, y = make_data()
    if args.side:
        fit_s, whole_s, _ = run(x, y, args.side == "on")
        print(json.dumps({"benchmark": "diagnostics", "side": args.side, "fit_seconds": round(fit_s, 4),
                          "whole_seconds": round(whole_s, 4)}))
        return
    print("warm-up ...", flush=True)
    run(x, y, True)
    run(x, y, False)
    rows = []
    for repeat in range(1, args.repeats + 1):
        # Alternate which side goes first so drift does not favour one.
        if repeat % 2:
            on, off = run(x, y, True), run(x, y, False)
        else:
            off, on = run(x, y, False), run(x, y, True)
        assert on[2] == SPEC["training"]["epochs"] and off[2] == 0
        rows.append((on[0], off[0], on[1], off[1]))
        print(f"repeat {repeat}: fit on {on[0]:7.3f} s  off {off[0]:7.3f} s  ratio {on[0] / off[0]:5.3f} | "
              f"whole on {on[1]:7.3f} s  off {off[1]:7.3f} s  ratio {on[1] / off[1]:5.3f}", flush=True)
    measured = [intrinsic_cost(x, y) for _ in range(5)]
    parts = {k: statistics.median(m[k] for m in measured) for k in measured[0]}
    cost = parts["total"]
    costs = [m["total"] for m in measured]
    fit_ratio = statistics.median(r[0] / r[1] for r in rows)
    whole_ratio = statistics.median(r[2] / r[3] for r in rows)
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"{'median':9}{'on':>10}{'off':>10}{'ratio':>8}")
    print(f"{'fit':9}{med[0]:10.3f}{med[1]:10.3f}{fit_ratio:8.3f}")
    print(f"{'whole':9}{med[2]:10.3f}{med[3]:10.3f}{whole_ratio:8.3f}")
    intrinsic_ratio = 1 + cost / med[1]
    print(f"diagnostics' own time per run {cost:.3f} s (median of {[round(c, 3) for c in costs]}): "
          f"{cost / med[1]:.2%} of the off run's fit -> ratio {intrinsic_ratio:.3f}")
    print("  of which " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in parts.items() if k != "total"))
    checks = statistics.median(data_check_cost(x, y) for _ in range(5))
    epoch = med[1] / SPEC["training"]["epochs"]
    print(f"data checks with a 0.2 validation split: {checks * 1000:.1f} ms = {checks / epoch:.2%} of one epoch "
          f"of the off run ({epoch:.3f} s), {checks / med[1]:.2%} of its fit")
    print(json.dumps({"benchmark": "diagnostics", "intrinsic_seconds": round(cost, 4),
                      "data_checks_split_seconds": round(checks, 4),
                      "data_checks_epoch_ratio": round(checks / epoch, 4),
                      "intrinsic_parts_ms": {k: round(v * 1000, 1) for k, v in parts.items() if k != "total"},
                      "intrinsic_ratio": round(intrinsic_ratio, 4), "on_seconds": round(med[0], 4), "off_seconds": round(med[1], 4),
                      "ratio": round(fit_ratio, 4), "whole_ratio": round(whole_ratio, 4),
                      "target": TARGET_RATIO, "within_target": fit_ratio <= TARGET_RATIO,
                      "repeats": len(rows)}))


if __name__ == "__main__":
    main()
