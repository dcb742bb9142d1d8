"""Comparing jobs: what differs between their specs and environments, and where their per-epoch metrics part.

No Flask: `GET /v1/jobs/compare` (service/api/compare.py) and a replay's reproduction (written when the
replay ends, trainyard/lifecycle.py) hand plain values to the functions here; `load_epochs` is the one
query that reads the runs' metrics, for all of them at once.

- A spec or an environment is flattened to its leaves, each at a field path in the API's error style
  (`optimizer.learning_rate`, `model.layers[1].units`); a diff lists each path whose value is not the same
  in every document, with every document's value (null where a document lacks the field).
- An epoch's metrics are every value the worker logged for it except `seconds` (wall-clock time, which no
  two runs share). Two runs diverge at the first epoch where a metric's value differs, or which one of
  them has and the other has not (it stopped earlier, or its metric set differs); exactly equal floats
  count as the same, as does null (a non-finite value) against null.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.db.models import EpochMetrics

# Logged with every epoch but not a property of the run: never compared.
NOT_COMPARED = frozenset({"seconds"})

Epochs = Mapping[int, Mapping[str, Any]]  # epoch -> {metric: value or None}


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """The leaves of a JSON document by field path; an empty object or list is a leaf of its own."""
    out: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict) and item:
            stack.extend((f"{path}.{key}" if path else str(key), child) for key, child in item.items())
        elif isinstance(item, list) and item:
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))
        elif path or item not in (None, {}, []):
            out[path] = item
    return out


def _path_order(path: str) -> list[Any]:
    # model.layers[2] before model.layers[10]
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _same(a: Any, b: Any) -> bool:
    # 1 and 1.0 are one value in JSON; True and 1 are not.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def document_diff(documents: Sequence[Any]) -> dict[str, list[Any]]:
    """{field path: [each document's value, null where it lacks the field]} for the paths whose value is not
    the same in every document, in path order. A document that is null has no field at all."""
    flat = [leaves(doc) if doc is not None else {} for doc in documents]
    paths = sorted(set().union(*flat), key=_path_order) if flat else []
    out: dict[str, list[Any]] = {}
    for path in paths:
        present = [path in f for f in flat]
        values = [f.get(path) for f in flat]
        if not all(present) or any(not _same(values[0], v) for v in values[1:]):
            out[path] = values
    return out


def compared(values: Mapping[str, Any]) -> dict[str, Any]:
    """An epoch's metric row without the values that are never compared."""
    return {key: value for key, value in values.items() if key not in NOT_COMPARED}


def metric_names(runs: Sequence[Epochs]) -> list[str]:
    """Every compared metric any run logged: loss and val_loss first, learning_rate last, the rest sorted."""
    names = {key for run in runs for row in run.values() for key in compared(row)}
    first = [n for n in ("loss", "val_loss") if n in names]
    last = ["learning_rate"] if "learning_rate" in names else []
    return first + sorted(names - set(first) - set(last)) + last


def first_divergent_epoch(a: Epochs, b: Epochs) -> int | None:
    """The first epoch at which two runs differ (see the module's rules); None when they are the same."""
    for epoch in sorted(set(a) | set(b)):
        if epoch not in a or epoch not in b:
            return epoch
        left, right = compared(a[epoch]), compared(b[epoch])
        if set(left) != set(right) or any(not _same_number(left[k], right[k]) for k in left):
            return epoch
    return None


def _same_number(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return float(a) == float(b)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def max_abs_diff(a: Epochs, b: Epochs) -> dict[str, float]:
    """{metric: the largest |a - b| over the epochs both runs have}, for each metric both logged as a finite
    number at some common epoch."""
    out: dict[str, float] = {}
    for epoch in sorted(set(a) & set(b)):
        left, right = compared(a[epoch]), compared(b[epoch])
        for key in left.keys() & right.keys():
            if _finite(left[key]) and _finite(right[key]):
                out[key] = max(out.get(key, 0.0), abs(float(left[key]) - float(right[key])))
    return dict(sorted(out.items()))


def reproduction(original: Epochs, replay: Epochs, original_environment: Mapping[str, Any] | None,
                 replay_environment: Mapping[str, Any] | None) -> dict[str, Any]:
    """A replay's `reproduction`: whether its per-epoch metrics are identical to the original's, the first
    epoch where they are not, the largest difference of each metric, and what differs in the environment
    ({path: [original's value, replay's value]})."""
    divergent = first_divergent_epoch(original, replay)
    return {
        "identical": divergent is None,
        "first_divergent_epoch": divergent,
        "max_abs_diff": max_abs_diff(original, replay),
        "environment_diff": document_diff([original_environment, replay_environment]),
    }


def pair_divergence(ids: Sequence[str], seeds: Sequence[Any], runs: Sequence[Epochs]) -> list[dict[str, Any]]:
    """For every pair of jobs trained with the same seed (a number, not null): where their runs part."""
    out = []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            if seeds[i] is not None and _same(seeds[i], seeds[j]):
                divergent = first_divergent_epoch(runs[i], runs[j])
                out.append({"ids": [ids[i], ids[j]], "seed": seeds[i], "identical": divergent is None,
                            "first_divergent_epoch": divergent, "max_abs_diff": max_abs_diff(runs[i], runs[j])})
    return out


def side_by_side(runs: Sequence[Epochs]) -> tuple[list[str], list[dict[str, Any]]]:
    """(the metric names, one row per epoch any run has: `{"epoch", "values": {metric: [each run's value or
    null]}}`), for a table or a chart of the runs together."""
    names = metric_names(runs)
    rows = []
    for epoch in sorted(set().union(*(set(run) for run in runs))) if runs else []:
        rows.append({"epoch": epoch,
                     "values": {name: [(run.get(epoch) or {}).get(name) for run in runs] for name in names}})
    return names, rows


def load_epochs(session: Session, job_ids: Sequence[str]) -> dict[str, dict[int, dict[str, Any]]]:
    """{job id: {epoch: metric row}} for these jobs, in one query on the metrics' primary key."""
    out: dict[str, dict[int, dict[str, Any]]] = {job_id: {} for job_id in job_ids}
    if not job_ids:
        return out
    rows = session.execute(select(EpochMetrics.job_id, EpochMetrics.epoch, EpochMetrics.values)
                           .where(EpochMetrics.job_id.in_(list(job_ids)))
                           .order_by(EpochMetrics.job_id, EpochMetrics.epoch))
    for job_id, epoch, values in rows:
        out[job_id][int(epoch)] = dict(values or {})
    return out
