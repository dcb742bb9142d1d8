"""Python client for the Trainyard API, and the `trainyard` command line built on it.

    from client import Trainyard
    ty = Trainyard()                      # $TRAINYARD_URL / $TRAINYARD_TOKEN, or ./var/dev-token
    job = ty.submit(spec)
    job = ty.wait(job["id"], on_epoch=lambda row: print(row["epoch"], row["loss"]))
    ty.download_best(job["id"], "best.keras")
    for event in ty.events(job["id"]):   # live: status, epoch, finding, then end
        print(event.event, event.data)
    ty.patch(job["id"], labels={"team": "vision", "draft": None})  # set one label, remove another
    ty.list_jobs(labels={"team": "vision"}, name="mlp", sort="-best_value")

Only `requests` is needed (and `click` for the command line).
"""
from client.api import Event, Trainyard
from client.download import Download
from client.errors import (
    ChecksumMismatch,
    Conflict,
    ConnectionFailed,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServerError,
    TrainyardError,
    Unauthorized,
    ValidationError,
)

__all__ = [
    "ChecksumMismatch",
    "Conflict",
    "ConnectionFailed",
    "Download",
    "Event",
    "JobFailed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServerError",
    "Trainyard",
    "TrainyardError",
    "Unauthorized",
    "ValidationError",
]
