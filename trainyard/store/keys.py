"""The artifact key layout: where a job's checkpoints, resume backups and exports and a data set's file
are stored, the same in every backend.

Keys are built here from server-issued ids (trainyard.db.models.new_id) and numbers only; nothing a client
sends (a file name, a path) can become part of one, and a malformed id is a bug, refused loudly.
"""
from __future__ import annotations

import re

_SERVER_ID = re.compile(r"[a-z]{2,4}_[0-9a-f]{32}")


def _server_id(value: str) -> str:
    if not isinstance(value, str) or not _SERVER_ID.fullmatch(value):
        raise ValueError(f"artifact keys are built from server-issued ids only, not {value!r}")
    return value


def _attempt_part(attempt: int | None) -> str:
    # A training attempt writes under keys of its own: a worker that lost its lease and has not noticed
    # yet can then neither overwrite nor delete what the attempt that replaced it stored for the same epoch.
    return "" if attempt is None else f".a{int(attempt)}"


def checkpoint_key(job_id: str, epoch: int, attempt: int | None = None) -> str:
    return f"jobs/{_server_id(job_id)}/checkpoints/epoch-{int(epoch):04d}{_attempt_part(attempt)}.keras"


def backup_key(job_id: str, epoch: int, attempt: int | None = None) -> str:
    # One key per epoch: the job row points at the previous backup until the new one is complete.
    return f"jobs/{_server_id(job_id)}/backups/epoch-{int(epoch):04d}{_attempt_part(attempt)}.weights.h5"


def export_key(job_id: str, fmt: str, epoch: int, attempt: int | None = None) -> str:
    # Named after the checkpoint it was made from: a later, better checkpoint never matches an old export.
    return f"jobs/{_server_id(job_id)}/exports/epoch-{int(epoch):04d}{_attempt_part(attempt)}.{fmt}.tar.gz"


def initial_weights_key(job_id: str, epoch: int, suffix: str) -> str:
    # A fork's starting weights, copied from its parent: `suffix` is ".keras" (a checkpoint) or ".weights.h5"
    # (a resume backup), which is how Keras' load_weights tells the two apart.
    if suffix not in (".keras", ".weights.h5"):
        raise ValueError(f"not a weights file suffix: {suffix!r}")
    return f"jobs/{_server_id(job_id)}/initial/epoch-{int(epoch):04d}{suffix}"


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{_server_id(dataset_id)}"
