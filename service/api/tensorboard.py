"""A job's curves as TensorBoard event files, written on demand from its database rows.

`GET /v1/jobs/{id}/tensorboard` answers a `.tar.gz` holding `<job_id>/train/events.out.tfevents.*` and
`<job_id>/validation/events.out.tfevents.*`, laid out as Keras' TensorBoard callback lays them out
(`epoch_loss`, `epoch_<metric>`, `epoch_learning_rate`; validation values under the same tags in the
validation run), plus the per-variable diagnostics in the train run. Steps are epochs counted from 1, as
in the metrics endpoint. Made from the rows at request time, so it is current even while the job runs.
"""
from __future__ import annotations

import heapq
import io
import itertools
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO

from flask import Blueprint, Response, send_file
from sqlalchemy import select

from service.api.common import load_owned
from service.services import services
from trainyard.db.models import EpochDiagnostics, EpochMetrics, Job
from trainyard.tfevents import write_event_file

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


# Rows read from Postgres per round trip; between batches a gevent worker serves its other requests.
ROWS_PER_BATCH = 200

# One epoch's row: (epoch, created_at, values) for metrics, (epoch, created_at, variables) for diagnostics.
Row = tuple[int, datetime, Any]


def _train_steps(metrics: Iterable[Row], diagnostics: Iterable[Row],
                 validation: list[tuple[float, int, list[tuple[str, float]]]]) -> Iterator[tuple[float, int, list]]:
    """The train run's (wall_time, epoch, scalars), merging both epoch-ordered row streams; each epoch's
    validation scalars go to `validation` on the way (small: a few per epoch)."""
    tagged = heapq.merge(((r[0], 0, r) for r in metrics), ((r[0], 1, r) for r in diagnostics))
    for count, (epoch, rows) in enumerate(itertools.groupby(tagged, key=lambda t: t[0])):
        wall, scalars = None, []
        for _, kind, (_, created_at, payload) in rows:
            if kind == 0:
                wall = _seconds(created_at)
                train_scalars, val_scalars = split_metrics(payload)
                scalars = train_scalars + scalars
                validation.append((wall, epoch, val_scalars))
            else:
                wall = wall if wall is not None else _seconds(created_at)
                scalars += diagnostic_scalars(payload)
        if count % ROWS_PER_BATCH == ROWS_PER_BATCH - 1:
            time.sleep(0)  # under gevent (bin/api): let the worker's other greenlets run
        yield wall, epoch, scalars


def write_tensorboard_archive(out: BinaryIO, job_id: str, created: float, metrics: Iterable[Row],
                              diagnostics: Iterable[Row]) -> None:
    """The `.tar.gz` of the job's two runs, written to `out`. The rows are consumed as they come and the
    event files are spooled through temporary files, so memory stays flat for a 10,000-epoch job."""
    validation: list[tuple[float, int, list[tuple[str, float]]]] = []
    with tempfile.TemporaryFile() as train, tempfile.TemporaryFile() as val:
        write_event_file(train, created, _train_steps(metrics, diagnostics, validation))
        write_event_file(val, created, validation)
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            _add(tar, job_id, int(created))
            for run, fh in (("train", train), ("validation", val)):
                _add(tar, f"{job_id}/{run}", int(created))
                _add(tar, f"{job_id}/{run}/events.out.tfevents.{int(created)}.trainyard", int(created), fh)


def _add(tar: tarfile.TarFile, name: str, mtime: int, fh: BinaryIO | None = None) -> None:
    """A folder (no file) or a file read from `fh`, owned by nobody in particular."""
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    if fh is None:
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    else:
        info.size, info.mode = fh.seek(0, io.SEEK_END), 0o644
        fh.seek(0)
        tar.addfile(info, fh)


@bp.get("/v1/jobs/<job_id>/tensorboard")
def download_tensorboard(job_id: str) -> Response:
    archive = tempfile.TemporaryFile()
    try:
        with services().db.session() as s:
            job = load_owned(s, Job, job_id)
            created = _seconds(job.started_at or job.created_at)
            batched = {"yield_per": ROWS_PER_BATCH}
            metrics = s.execute(
                select(EpochMetrics.epoch, EpochMetrics.created_at, EpochMetrics.values)
                .where(EpochMetrics.job_id == job_id).order_by(EpochMetrics.epoch).execution_options(**batched))
            diagnostics = s.execute(
                select(EpochDiagnostics.epoch, EpochDiagnostics.created_at, EpochDiagnostics.variables)
                .where(EpochDiagnostics.job_id == job_id).order_by(EpochDiagnostics.epoch)
                .execution_options(**batched))
            write_tensorboard_archive(archive, job_id, created, (tuple(r) for r in metrics),
                                      (tuple(r) for r in diagnostics))
        archive.seek(0)
    except BaseException:
        archive.close()
        raise
    # Streamed from the spooled file in blocks; the file goes when the response is closed.
    resp = send_file(archive, mimetype="application/gzip", conditional=False, etag=False)
    resp.headers["Content-Disposition"] = f'attachment; filename="{job_id}-tensorboard.tar.gz"'
    resp.headers["Cache-Control"] = "no-store"  # the job may still add epochs
    return resp
