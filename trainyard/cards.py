"""The model card: what a job's model is, what it was trained on and how, and how it did, in one document.

Built here, from the rows, for both processes: the API answers `GET /v1/jobs/{id}/card` with it, and the
worker writes it as `card.json` into every export archive. The worker makes its exports before the job's
end is recorded, so it passes `facts`: what the trainer knows that is not in the rows yet (the best
checkpoint, test metrics, normalisation statistics and the phases' seconds so far). A card in an archive
is therefore the card as it was when the export was made: its timings stop before the exports.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trainyard.db.models import Dataset, Finding, Job
from trainyard.findings import ranked
from trainyard.forks import finding_key
from trainyard.spec import BUILTIN_DATASETS
from trainyard.timestamps import iso

#: Bumped when a field changes meaning or goes away (new fields keep it).
CARD_VERSION = 1
#: The serving model's input name in every export (workers/trainer/export.py INPUT_NAME).
SERVING_INPUT = "features"


def normalized_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored spec with the fields added since it was stored, at what they meant then: jobs from before
    resource classes asked for none, jobs from before labels had none."""
    if "resources" in spec and "labels" in spec:
        return spec
    return {**spec, "resources": spec.get("resources", {"gpus": None}), "labels": spec.get("labels", {})}


def timings(job: Any, phases: dict[str, float] | None = None) -> dict[str, float] | None:
    """Where a job's time went: waiting in the queue, then the worker's phases (`phases`, or those
    recorded when it finished), and created-to-finished once it has."""
    if job.started_at is None:
        return None
    out = {"queued_seconds": round((job.started_at - job.created_at).total_seconds(), 4)}
    if phases is None:
        phases = (job.model_info or {}).get("timings") or {}
    for phase, seconds in phases.items():
        out[f"{phase}_seconds"] = seconds
    if job.finished_at is not None:
        out["total_seconds"] = round((job.finished_at - job.created_at).total_seconds(), 4)
    return out


def _dataset(session: Session, job: Job) -> dict[str, Any]:
    """The data set's identity (id, sha256 of the uploaded file) and shapes, and the samples each split
    trained with (after the validation split, as the worker counted them)."""
    dataset_id = (job.spec.get("dataset") or {}).get("id")
    info = job.model_info or {}
    out: dict[str, Any] = {"id": dataset_id, "builtin": dataset_id in BUILTIN_DATASETS, "name": None,
                           "format": None, "sha256": None, "size": None, "task": None, "n_classes": None,
                           "input_shape": None, "target_shape": None,
                           "samples": {"train": info.get("train_samples"), "val": info.get("val_samples"),
                                       "test": info.get("test_samples")}}
    builtin = BUILTIN_DATASETS.get(dataset_id)
    if builtin is not None:
        out.update(name=dataset_id.split(":", 1)[1], task=builtin.task, n_classes=builtin.n_classes,
                   input_shape=list(builtin.input_shape), target_shape=list(builtin.target_shape))
        return out
    row = session.get(Dataset, dataset_id) if dataset_id else None
    if row is not None and row.tenant_id == job.tenant_id:
        summary = row.info or {}
        out.update(name=row.name, format=row.format, sha256=row.sha256, size=row.size_bytes,
                   task=summary.get("task"), n_classes=summary.get("n_classes"),
                   input_shape=summary.get("input_shape"), target_shape=summary.get("target_shape"))
    return out


def _findings(rows: Iterable[Finding]) -> list[dict[str, Any]]:
    return ranked({"id": finding_key(f.code, f.layer), "code": f.code, "severity": f.severity,
                   "message": f.message, "layer": f.layer or None, "epoch": f.epoch} for f in rows)


def model_card(session: Session, job: Job, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card of `job`'s best model; `facts` (best, test_metrics, normalization, phases) stand in for
    the recorded values while the worker is still writing them."""
    facts = facts or {}
    info = job.model_info or {}
    best = None
    if job.best_epoch is not None:
        best = {"monitor": job.best_monitor, "value": job.best_value, "epoch": job.best_epoch}
    best = facts.get("best", best)
    normalization = facts.get("normalization", info.get("normalization"))
    normalization = normalization or {}
    findings = session.execute(select(Finding).where(Finding.job_id == job.id)).scalars()
    dataset = _dataset(session, job)
    input_shape = (job.spec.get("model") or {}).get("input_shape") or dataset["input_shape"]
    return {
        "card_version": CARD_VERSION,
        "job": {"id": job.id, "name": job.name, "labels": job.labels or {}, "created_at": iso(job.created_at),
                "started_at": iso(job.started_at), "finished_at": iso(job.finished_at)},
        "spec": normalized_spec(job.spec),
        "dataset": dataset,
        "normalization": {"inputs": normalization.get("inputs"), "targets": normalization.get("targets")},
        "model": {"params": info.get("params"), "trainable_params": info.get("trainable_params")},
        # What the exports take and answer (workers/trainer/export.py): raw features, raw target units.
        "serving": {"input": SERVING_INPUT, "input_shape": [None, *(input_shape or [])],
                    "inputs_normalized_in_graph": normalization.get("inputs") is not None,
                    "targets_denormalized_in_graph": normalization.get("targets") is not None},
        "best": best,
        "test_metrics": facts.get("test_metrics", job.test_metrics),
        "findings": _findings(findings),
        "environment": job.environment,
        "timings": timings(job, facts.get("phases")),
    }
