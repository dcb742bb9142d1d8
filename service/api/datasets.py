"""Data sets: uploads (.npz or .csv) validated before they are kept, and the built-in catalogue."""
from __future__ import annotations

import logging
import os
from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import select

from service.api.common import SpooledUpload, load_owned, tenant_id
from service.api.representations import builtin_resource, dataset_resource
from service.errors import Conflict, PayloadTooLarge, ValidationFailed
from service.services import services
from trainyard.datasets import DatasetError, inspect_csv, inspect_npz
from trainyard.db.models import Dataset, Job, new_id
from trainyard.spec import BUILTIN_DATASETS
from trainyard.store import ArtifactTooLarge, dataset_key

logger = logging.getLogger(__name__)

bp = Blueprint("datasets", __name__)

FORMATS = ("npz", "csv")


def _upload_error(exc: DatasetError) -> ValidationFailed:
    return ValidationFailed(exc.detail, errors=exc.errors)


@bp.post("/v1/datasets")
def upload_dataset() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    if request.content_length is not None and request.content_length > svc.settings.max_upload_bytes + 1024 * 1024:
        raise PayloadTooLarge(f"Uploads are limited to {svc.settings.max_upload_bytes} bytes.")
    upload = request.files.get("file")
    if upload is None:
        raise ValidationFailed("Send the data set as a multipart form field named 'file'.",
                               errors=[{"field": "file", "message": "Missing file."}])
    # The client's file name is kept as a label only; it never becomes a path.
    original = "".join(ch for ch in os.path.basename(upload.filename or "") if ch.isprintable())
    original = original.strip()[:256] or "upload"
    fmt = (request.form.get("format") or original.rsplit(".", 1)[-1]).lower()
    if fmt not in FORMATS:
        raise ValidationFailed("The file must be a .npz or .csv file (or say which with the form field 'format').",
                               errors=[{"field": "file", "message": "Use a .npz or .csv file."}])
    target = request.form.get("target")
    if target is not None and (not target.isprintable() or len(target) > 1000):
        raise ValidationFailed("The form field 'target' must be a column name: printable text, at most 1000 "
                               "characters.", errors=[{"field": "target", "message": "Not a column name."}])
    if fmt == "csv" and not target:
        raise ValidationFailed("A CSV upload needs the form field 'target' naming the column to predict.",
                               errors=[{"field": "target", "message": "Missing target column name."}])
    # The form parser already wrote the file to disk (service.api.common.ApiRequest): validate and store
    # that file, read twice, never held in memory and never copied.
    stream = upload.stream
    path = stream.name
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    if size > svc.settings.max_upload_bytes:
        raise PayloadTooLarge(f"Uploads are limited to {svc.settings.max_upload_bytes} bytes.")
    try:
        if fmt == "npz":
            summary = inspect_npz(path, max_decompressed_bytes=svc.settings.max_dataset_bytes)
        else:
            summary = inspect_csv(path, target=target or "", max_bytes=svc.settings.max_upload_bytes)
    except DatasetError as exc:
        raise _upload_error(exc) from None
    info = summary.to_dict()
    if fmt == "csv":
        info["target"] = target
    # The id is needed now, for the artifact key: the column default would only fill it at flush.
    row = Dataset(id=new_id("ds"), tenant_id=tenant_id(), name=original, format=fmt, artifact_key="",
                  size_bytes=size, sha256="", info=info)
    row.artifact_key = dataset_key(row.id)
    meta = None
    if isinstance(stream, SpooledUpload) and stream.size == size:
        # A folder store on this filesystem takes the spooled file as it is (hashed while it was written).
        meta = svc.store.adopt(row.artifact_key, path, size, stream.sha256())
    if meta is None:
        stream.seek(0)
        try:
            meta = svc.store.put(row.artifact_key, stream, max_bytes=svc.settings.max_upload_bytes)
        except ArtifactTooLarge:
            raise PayloadTooLarge(f"Uploads are limited to {svc.settings.max_upload_bytes} bytes.") from None
    row.size_bytes, row.sha256 = meta.size, meta.sha256
    with svc.db.session() as s:
        s.add(row)
    return jsonify(dataset_resource(row)), 201, {"Location": url_for("datasets.get_dataset", dataset_id=row.id)}


@bp.get("/v1/datasets")
def list_datasets() -> Response:
    with services().db.session() as s:
        rows = s.execute(
            select(Dataset).where(Dataset.tenant_id == tenant_id()).order_by(Dataset.created_at.desc())
        ).scalars()
        uploaded = [dataset_resource(r) for r in rows]
    builtins = [builtin_resource(info) for info in BUILTIN_DATASETS.values()]
    return jsonify({"datasets": uploaded + builtins})


@bp.get("/v1/datasets/<dataset_id>")
def get_dataset(dataset_id: str) -> Response:
    if dataset_id in BUILTIN_DATASETS:
        return jsonify(builtin_resource(BUILTIN_DATASETS[dataset_id]))
    with services().db.session() as s:
        return jsonify(dataset_resource(load_owned(s, Dataset, dataset_id)))


@bp.delete("/v1/datasets/<dataset_id>")
def delete_dataset(dataset_id: str) -> tuple[str, int]:
    svc = services()
    if dataset_id in BUILTIN_DATASETS:
        raise Conflict(f"{dataset_id} is built into the service and cannot be deleted.")
    with svc.db.session() as s:
        row = load_owned(s, Dataset, dataset_id)
        active = s.execute(
            select(Job.id).where(Job.tenant_id == row.tenant_id, Job.status.in_(("queued", "running")),
                                 Job.spec["dataset"]["id"].as_string() == dataset_id).limit(1)
        ).scalar_one_or_none()
        if active:
            raise Conflict(f"Job {active} still uses data set {dataset_id}; wait for it to end or cancel it.")
        key = row.artifact_key
        s.delete(row)
    svc.store.delete(key)
    return "", 204
