"""A job's curves as TensorBoard event files, written on demand from its database rows.

`GET /v1/jobs/{id}/tensorboard` answers a `.tar.gz` holding `<job_id>/train/events.out.tfevents.*` and
`<job_id>/validation/events.out.tfevents.*`, laid out as Keras' TensorBoard callback lays them out
(`epoch_loss`, `epoch_<metric>`, `epoch_learning_rate`; validation values under the same tags in the
validation run), plus the per-variable diagnostics in the train run. Steps are epochs counted from 1, as
in the metrics endpoint. Made from the rows at request time, so it is current even while the job runs.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Response
from sqlalchemy import select

from service.api.jobs import load_job
from service.app import services
from service.db.models import EpochDiagnostics, EpochMetrics
from service.tfevents import event_file

bp = Blueprint("tensorboard", __name__)

DIAGNOSTIC_FIELDS = ("update_ratio", "grad_norm", "weight_norm", "update_norm", "zero_grad_fraction")


def _seconds(dt: datetime) -> float:
    if dt.tzinfo is None:  # SQLite hands back naive datetimes; they were written as UTC
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def split_metrics(values: dict[str, Any]) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """One epoch's logs as (train, validation) scalars under Keras' TensorBoard tags."""
    train, validation = [], []
    for key, value in values.items():
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # not finite when it was logged
        if key.startswith("val_"):
            validation.append((f"epoch_{key[4:]}", float(value)))
        else:
            train.append((f"epoch_{key}", float(value)))
    return train, validation


def diagnostic_scalars(variables: Iterable[dict[str, Any]]) -> list[tuple[str, float]]:
    out = []
    for var in variables:
        for field in DIAGNOSTIC_FIELDS:
            value = var.get(field)
            if value is not None:
                out.append((f"{field}/{var.get('layer')}/{var.get('name')}", float(value)))
    return out


def tensorboard_archive(job_id: str, created: float, metrics: list[EpochMetrics],
                        diagnostics: list[EpochDiagnostics]) -> bytes:
    train: dict[int, tuple[float, list[tuple[str, float]]]] = {}
    validation: list[tuple[float, int, list[tuple[str, float]]]] = []
    for row in metrics:
        wall = _seconds(row.created_at)
        train_scalars, val_scalars = split_metrics(row.values)
        train[row.epoch] = (wall, train_scalars)
        validation.append((wall, row.epoch, val_scalars))
    for row in diagnostics:
        wall, scalars = train.get(row.epoch, (_seconds(row.created_at), []))
        train[row.epoch] = (wall, scalars + diagnostic_scalars(row.variables))
    runs = {
        "train": event_file(created, [(wall, epoch, scalars) for epoch, (wall, scalars) in sorted(train.items())]),
        "validation": event_file(created, validation),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _add(tar, job_id, int(created))
        for run, data in runs.items():
            _add(tar, f"{job_id}/{run}", int(created))
            _add(tar, f"{job_id}/{run}/events.out.tfevents.{int(created)}.trainyard", int(created), data)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, mtime: int, data: bytes | None = None) -> None:
    """A folder (no data) or a file, owned by nobody in particular."""
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    if data is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))


@bp.get("/v1/jobs/<job_id>/tensorboard")
def download_tensorboard(job_id: str) -> Response:
    with services().db.session() as s:
        job = load_job(s, job_id)
        created = _seconds(job.started_at or job.created_at)
        metrics = list(s.execute(
            select(EpochMetrics).where(EpochMetrics.job_id == job_id).order_by(EpochMetrics.epoch)).scalars())
        diagnostics = list(s.execute(
            select(EpochDiagnostics).where(EpochDiagnostics.job_id == job_id).order_by(EpochDiagnostics.epoch)
        ).scalars())
    body = tensorboard_archive(job_id, created, metrics, diagnostics)
    resp = Response(body, mimetype="application/gzip")
    resp.headers["Content-Disposition"] = f'attachment; filename="{job_id}-tensorboard.tar.gz"'
    resp.headers["Cache-Control"] = "no-store"  # the job may still add epochs
    return resp
