"""Forking a job: a new job from its parent's normalised spec with a patch merged, from scratch or from the
parent's weights. No Flask: the API's `POST /v1/jobs/{id}/fork` (service/api/forks.py) parses, plans and
then submits the child through trainyard/submission.py like any job.

The rules:
- The body is `{"patch": {...}, "apply_findings": [ids], "from": "scratch" | "best" | "last" | {"epoch": N}}`,
  every key optional (`from` defaults to "scratch"); anything else is refused with its field path.
- The child's patch is the applied findings' `suggested_change`s (in the order given), then `patch` on top:
  what the caller wrote wins over a suggestion. Two findings that set one field to different values, a
  finding without a suggested change, or an id the parent has no finding for, are 422s naming
  `apply_findings[i]`.
- The patch is a JSON merge patch (RFC 7386) on the parent's normalised spec (its webhook is not
  inherited): objects merge key by key, anything else (a list such as `model.layers`, a number) replaces
  the value, and `null` removes a field, which then takes its default. The result is validated like any
  submitted spec; an error at a field the patch sets is reported at `patch.<field>`, one at a field an
  applied finding sets at `apply_findings[i]`, any other at its field in the child's spec.
- `from` other than "scratch" starts from the parent's weights (the best checkpoint, the last resume
  backup, or the checkpoint of epoch N) with a fresh optimizer: its state, the step count and the callbacks'
  state all start anew. The weights must fit, so such a fork keeps the parent's `model` unchanged (a 422
  otherwise); a parent without the artifact asked for is a `ForkConflict` (409), which names what it kept: a
  parent that succeeded keeps only its best checkpoint unless `TRAINYARD_KEEP_CHECKPOINTS=all`
  (trainyard/retention.py).
"""
from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.db.models import Checkpoint, Finding, Job
from trainyard.spec import SpecError, validate_spec
from trainyard.spec.catalog import DatasetLookup
from trainyard.spec.errors import error
from trainyard.spec.limits import SpecLimits
from trainyard.store import ArtifactStore, download_to, initial_weights_key, put_file

SOURCES = ("scratch", "best", "last")
REQUEST_KEYS = ("patch", "apply_findings", "from")
# A job has one finding per code and layer, so a few dozen at most; ids are "<code>:<layer>".
MAX_APPLY_FINDINGS = 100
MAX_FINDING_ID_CHARS = 300
MAX_EPOCH = 10_000_000
# A job spec nests five levels at most (model.layers[i].kernel_regularizer.l2): a deeper patch is refused
# before anything walks it recursively.
MAX_PATCH_DEPTH = 16


class ForkConflict(Exception):
    """The parent has no artifact to start from as asked (no best checkpoint, no backup, no such epoch)."""


@dataclass
class ForkRequest:
    patch: dict[str, Any] = field(default_factory=dict)
    finding_ids: list[str] = field(default_factory=list)
    source: str = "scratch"  # "scratch", "best", "last" or "epoch"
    epoch: int | None = None  # with source "epoch"


def from_value(source: str | None, epoch: int | None) -> str | dict[str, int] | None:
    """A job row's `parent_from` (and its epoch) as the API shows `from`."""
    if source is None:
        return None
    return {"epoch": int(epoch or 0)} if source == "epoch" else source


def parse_request(raw: object) -> ForkRequest:
    """The fork body as a `ForkRequest`, or `SpecError` naming every wrong field."""
    if not isinstance(raw, dict):
        raise SpecError([error("", "The body must be a JSON object with patch, apply_findings and/or from.")])
    errors = [error(str(key)[:100], f"Unknown field. Must be one of: {', '.join(REQUEST_KEYS)}.")
              for key in list(raw)[:10] if key not in REQUEST_KEYS]
    request = ForkRequest()
    patch = raw.get("patch", {})
    if isinstance(patch, dict) and _depth(patch) > MAX_PATCH_DEPTH:
        errors.append(error("patch", f"Nested more than {MAX_PATCH_DEPTH} levels deep; no job spec is."))
    elif isinstance(patch, dict):
        request.patch = patch
    else:
        errors.append(error("patch", "Must be an object: a JSON merge patch of the job spec."))
    ids = raw.get("apply_findings", [])
    if not isinstance(ids, list):
        errors.append(error("apply_findings", "Must be an array of finding ids."))
    elif len(ids) > MAX_APPLY_FINDINGS:
        errors.append(error("apply_findings", f"At most {MAX_APPLY_FINDINGS} findings; got {len(ids)}."))
    else:
        for i, item in enumerate(ids):
            if not isinstance(item, str) or not 0 < len(item) <= MAX_FINDING_ID_CHARS:
                errors.append(error(f"apply_findings[{i}]", "Must be a finding id such as \"lr_too_small:-\"."))
        request.finding_ids = [i for i in ids if isinstance(i, str)]
    source = raw.get("from", "scratch")
    if isinstance(source, str) and source in SOURCES:
        request.source = source
    elif isinstance(source, dict):
        epoch = source.get("epoch")
        if set(source) != {"epoch"} or isinstance(epoch, bool) or not isinstance(epoch, int) \
                or not 1 <= epoch <= MAX_EPOCH:
            errors.append(error("from", f"Must be {{\"epoch\": N}} with N a whole number from 1 to {MAX_EPOCH}."))
        else:
            request.source, request.epoch = "epoch", epoch
    else:
        errors.append(error("from", "Must be one of: scratch, best, last, or {\"epoch\": N}."))
    if errors:
        raise SpecError(errors)
    return request


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value`, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_PATCH_DEPTH:
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# --- the patch ---------------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: `patch` applied to `target` (neither is changed; the result shares nothing with them)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def leaves(patch: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The fields a merge patch sets, as {dotted path: value}: objects are walked, anything else (a list, a
    number, null, an empty object) is one field."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(leaves(value, path + "."))
        else:
            out[path] = value
    return out


def _covers(setting: str, field_path: str) -> bool:
    """Whether setting the field `setting` is what an error at `field_path` is about (the field itself, a
    part of its value, or an object holding it)."""
    return (field_path == setting or field_path.startswith((setting + ".", setting + "["))
            or setting.startswith(field_path + ".")) if field_path else False


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def findings_patch(request: ForkRequest, findings: dict[str, Finding]) -> list[tuple[int, dict[str, Any]]]:
    """The suggested changes of the findings the request applies, as (position in apply_findings, change);
    `SpecError` for an unknown id, a finding without a change, or two that disagree on a field."""
    errors = []
    changes: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()
    for i, finding_id in enumerate(request.finding_ids):
        row = findings.get(finding_id)
        if row is None:
            known = ", ".join(sorted(findings)) or "none"
            errors.append(error(f"apply_findings[{i}]",
                                f"The job has no finding {finding_id!r}. Its findings: {known}."))
        elif not row.suggested_change:
            errors.append(error(f"apply_findings[{i}]",
                                f"Finding {finding_id!r} suggests no spec change, so there is nothing to apply; "
                                "change the spec yourself with patch."))
        elif finding_id not in seen:
            seen.add(finding_id)
            changes.append((i, row.suggested_change))
    set_by: dict[str, tuple[int, Any]] = {}
    for i, change in changes:
        for path, value in leaves(change).items():
            for other, (j, other_value) in set_by.items():
                if _overlaps(path, other) and (path != other or value != other_value):
                    errors.append(error(f"apply_findings[{i}]",
                                        f"Its suggested change sets {path} to {value!r}, which apply_findings[{j}] "
                                        f"sets to {other_value!r}; apply one of them, or set the field with patch."))
            set_by.setdefault(path, (i, value))
    if errors:
        raise SpecError(errors)
    return changes


def combined_patch(request: ForkRequest, changes: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The child's merge patch: the findings' changes, then the request's patch over them."""
    combined: dict[str, Any] = {}
    for _, change in changes:
        combined = _merge_keeping_nulls(combined, change)
    return _merge_keeping_nulls(combined, request.patch)


def _merge_keeping_nulls(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    # Patches composed: a later null must still remove the field from the parent's spec, so it stays.
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge_keeping_nulls(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def child_spec(parent: Job, request: ForkRequest, changes: list[tuple[int, dict[str, Any]]], *,
               datasets: DatasetLookup | None, limits: SpecLimits) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the child's normalised spec, its merge patch), or `SpecError` with fields named as the module says."""
    patch = combined_patch(request, changes)
    base = {key: value for key, value in parent.spec.items() if key != "webhook"}
    merged = merge_patch(base, patch)
    errors: list[dict[str, str]] = []
    spec = None
    try:
        spec = validate_spec(merged, datasets=datasets, limits=limits)
    except SpecError as exc:
        errors = exc.errors
    if spec is not None and request.source != "scratch" and spec["model"] != base.get("model"):
        errors.append(error("model", f"A fork that starts from the parent's weights (from: "
                                     f"{_describe(request)}) keeps the parent's model, so the weights fit; "
                                     "fork from scratch to change the model."))
    if errors:
        raise SpecError([_blame(e, request, changes) for e in errors])
    return spec, patch  # type: ignore[return-value]


def _describe(request: ForkRequest) -> str:
    return f"epoch {request.epoch}" if request.source == "epoch" else request.source


def _blame(item: dict[str, str], request: ForkRequest, changes: list[tuple[int, dict[str, Any]]]) -> dict[str, str]:
    """An error of the child's spec, at the part of the request that set its field."""
    field_path, message = item["field"], item["message"]
    if any(_covers(path, field_path) for path in leaves(request.patch)):
        return error(f"patch.{field_path}", message)
    for i, change in changes:
        if any(_covers(path, field_path) for path in leaves(change)):
            return error(f"apply_findings[{i}]", f"{field_path}: {message}")
    return item


# --- the starting weights ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsSource:
    key: str  # the parent's artifact
    epoch: int
    suffix: str  # ".keras" (a checkpoint) or ".weights.h5" (a resume backup)


def weights_source(session: Session, parent: Job, request: ForkRequest) -> WeightsSource | None:
    """The parent's artifact the child starts from; None from scratch; `ForkConflict` when there is none."""
    if request.source == "scratch":
        return None
    if request.source == "last":
        if parent.backup_key is None or parent.backup_epoch is None:
            if parent.status == "succeeded":
                # Pruned with the superseded checkpoints (trainyard/retention.py), or never written.
                raise ForkConflict(f"Job {parent.id} keeps no resume backup: a job that succeeded keeps only its "
                                   "best checkpoint (the server's TRAINYARD_KEEP_CHECKPOINTS is best); fork "
                                   "from best.")
            raise ForkConflict(f"Job {parent.id} has no resume backup yet (one is written after every "
                               "completed epoch); fork from scratch, or once an epoch has finished.")
        return WeightsSource(parent.backup_key, parent.backup_epoch, ".weights.h5")
    stmt = select(Checkpoint).where(Checkpoint.job_id == parent.id)
    stmt = stmt.where(Checkpoint.is_best.is_(True)) if request.source == "best" else \
        stmt.where(Checkpoint.epoch == request.epoch)
    row = session.execute(stmt).scalar_one_or_none()
    if row is None:
        if request.source == "best":
            raise ForkConflict(f"Job {parent.id} has no best checkpoint (no epoch has finished with a finite "
                               "monitored value); fork from scratch.")
        kept = list(session.execute(select(Checkpoint.epoch).where(Checkpoint.job_id == parent.id)
                                    .order_by(Checkpoint.epoch)).scalars())
        pruned = (" and, once a job succeeded, only the best unless the server's TRAINYARD_KEEP_CHECKPOINTS is "
                  "all" if parent.status == "succeeded" else "")
        raise ForkConflict(f"Job {parent.id} has no checkpoint of epoch {request.epoch}: checkpoints are kept "
                           f"for the epochs whose monitored value improved{pruned}; here "
                           f"{', '.join(map(str, kept)) or 'none'}.")
    return WeightsSource(row.artifact_key, row.epoch, ".keras")


def copy_weights(store: ArtifactStore, source: WeightsSource, child_id: str, workdir: Path) -> str:
    """Copy the parent's artifact under the child's own key (checked against its sha256); return the key.

    The child owns its copy: the parent's next backup replaces its last one, and deleting the parent
    deletes its checkpoints, neither of which may take a queued child's weights away."""
    key = initial_weights_key(child_id, source.epoch, source.suffix)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fork-", dir=workdir) as tmp:
        local = Path(tmp) / f"weights{source.suffix}"
        download_to(store, source.key, local)
        put_file(store, key, local)
    return key


def finding_map(session: Session, job_id: str) -> dict[str, Finding]:
    """The job's findings by id ("<code>:<layer or ->", as the API shows them)."""
    rows = session.execute(select(Finding).where(Finding.job_id == job_id)).scalars()
    return {finding_key(row.code, row.layer): row for row in rows}


def finding_key(code: str, layer: str | None) -> str:
    return f"{code}:{layer or '-'}"
