"""Replaying a job: a new job with the same normalised spec, data and seed, and when it ends its
`reproduction` (trainyard/compare.py, written by trainyard/lifecycle.py at the replay's end). No Flask: the
API's `POST /v1/jobs/{id}/replay` (service/api/replays.py) plans it here and submits it through the fork's
path (service/api/forks.py `submit_derived`), so it is submitted like any job.

The rules:
- Only a job that ended (succeeded, failed or cancelled) is replayed: the replay's epochs are compared with
  a whole run. Anything else is a `ReplayConflict` (409).
- The spec is the original's normalised spec, validated again like any submitted one (so a data set
  deleted since is a 422 at `dataset.id`), without its webhook, which is not inherited.
- A fork that started from its parent's weights starts from the same weights: the replay gets a copy of the
  original's own copy of them (trainyard/forks.py `copy_weights`).
- A job without `training.seed` is replayed unseeded: its reproduction then measures how far two unseeded
  runs of it differ.
"""
from __future__ import annotations

from typing import Any

from trainyard.db.models import FINAL_STATUSES, Job
from trainyard.forks import WeightsSource
from trainyard.spec import validate_spec
from trainyard.spec.catalog import DatasetLookup
from trainyard.spec.limits import SpecLimits

class ReplayConflict(Exception):
    """The job cannot be replayed as it is now (it has not ended)."""


def check_replayable(original: Job) -> None:
    if original.status not in FINAL_STATUSES:
        raise ReplayConflict(f"Job {original.id} is {original.status}; replay it once it has ended, so the replay "
                             "has a whole run to be compared with.")


def replay_spec(original: Job, *, datasets: DatasetLookup | None, limits: SpecLimits) -> dict[str, Any]:
    """The replay's normalised spec, or `SpecError` naming the fields that are no longer valid."""
    base = {key: value for key, value in original.spec.items() if key != "webhook"}
    return validate_spec(base, datasets=datasets, limits=limits)


def weights_source(original: Job) -> WeightsSource | None:
    """The weights the original started from (a fork's), which the replay starts from too; None from scratch."""
    key = original.initial_weights_key
    if key is None:
        return None
    suffix = ".weights.h5" if key.endswith(".weights.h5") else ".keras"
    return WeightsSource(key, int(original.initial_weights_epoch or 0), suffix)
