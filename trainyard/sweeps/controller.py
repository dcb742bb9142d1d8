"""The sweep controller: thin glue between a sweep's row, its trial jobs and the queue.

Who drives a sweep: no scheduler of its own. `top_up` keeps `parallelism` trials queued or running until
`max_trials` were submitted, and marks the sweep finished when the last trial ended. It is idempotent and
runs under the sweep's row lock, so any number of callers may race:
- `POST /v1/sweeps` calls it to submit the first trials;
- the worker's task calls it (`after_trial`) whenever a trial's delivery ends;
- every worker's heartbeat calls `top_up_running` as the safety net (a worker killed mid-trial, a trial
  cancelled by hand while queued, a crash between two steps).
Trials are submitted with `trainyard.submission.submit` inside the locked transaction and enqueued once it
commits; a lost message is re-sent by the reaper like any job's.

Early stopping runs in the worker that trains a trial: `trial_stopper` gives its reporter a check called
after each epoch's metrics are written; when the rule says stop, the run stops at the next batch with
stop_reason `sweep_early_stopped` and ends `succeeded`, keeping its best checkpoint.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard import lifecycle
from trainyard.datasets.lookup import dataset_lookup
from trainyard.db import Database
from trainyard.db.models import FINAL_STATUSES, EpochMetrics, Job, utcnow
from trainyard.db.sweeps import Sweep
from trainyard.spec import SpecError, SpecLimits
from trainyard.stop_reasons import StopReason
from trainyard.submission import Send, new_job, submit
from trainyard.sweeps.config import SweepConfig, trial_spec
from trainyard.sweeps.rules import Curve, MedianRule, TrialResult, rank

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "running")


def new_sweep(tenant_id: str, config: SweepConfig, **fields: Any) -> Sweep:
    return Sweep(tenant_id=tenant_id, name=config.name, status="running", base=config.base,
                 config=config.as_json(), plan=config.plan, trials_submitted=0, **fields)


def status_counts(session: Session, sweep_ids: list[str]) -> dict[str, dict[str, int]]:
    """Trials per sweep and job status, in one grouped query."""
    counts: dict[str, dict[str, int]] = {i: {} for i in sweep_ids}
    if sweep_ids:
        rows = session.execute(select(Job.sweep_id, Job.status, func.count())
                               .where(Job.sweep_id.in_(sweep_ids)).group_by(Job.sweep_id, Job.status))
        for sweep_id, status, n in rows:
            counts[sweep_id][status] = n
    return counts


def _finish(sweep: Sweep, counts: dict[str, int]) -> None:
    sweep.finished_at = utcnow()
    if counts.get("succeeded"):
        sweep.status = "completed"
    else:
        sweep.status = "failed"
        sweep.error_code = "no_trial_succeeded"
        sweep.error_message = "Every trial failed or was cancelled; see the trials' errors."


def top_up(db: Database, send: Send, sweep_id: str, limits: SpecLimits, *, skip_locked: bool = False) -> list[str]:
    """Submit trials until `parallelism` are active or all `max_trials` are out; finish a sweep whose
    trials all ended. Returns the ids of the jobs submitted."""
    submitted: list[str] = []
    try:
        submitted = _top_up(db, send, sweep_id, limits, skip_locked)
    except IntegrityError:
        # Only where the row lock is a no-op (SQLite): another caller created the same trial first.
        logger.info("sweep %s: another caller topped it up first", sweep_id)
        return []
    if submitted:
        logger.info("sweep %s: submitted trial jobs %s", sweep_id, ", ".join(submitted))
    return submitted


def _top_up(db: Database, send: Send, sweep_id: str, limits: SpecLimits, skip_locked: bool) -> list[str]:
    submitted: list[str] = []
    with db.session() as s:
        sweep = s.execute(select(Sweep).where(Sweep.id == sweep_id)
                          .with_for_update(skip_locked=skip_locked)).scalar_one_or_none()
        if sweep is None or sweep.status != "running":
            return []
        counts = status_counts(s, [sweep.id])[sweep.id]
        active = sum(counts.get(status, 0) for status in ACTIVE_STATUSES)
        config = sweep.config
        room = min(config["parallelism"] - active, config["max_trials"] - sweep.trials_submitted)
        datasets = dataset_lookup(s, sweep.tenant_id)
        for _ in range(max(0, room)):
            index = sweep.trials_submitted
            values = sweep.plan[index]
            try:
                spec = trial_spec(sweep.base, values, config["objective"], sweep.name, index,
                                  datasets=datasets, limits=limits)
            except SpecError as exc:
                # Checked when the sweep was accepted; only a change since (a deleted data set, lower
                # operator limits) gets here. Running trials finish; no more are submitted.
                sweep.status, sweep.finished_at = "failed", utcnow()
                sweep.error_code, sweep.error_message = "invalid_trial", f"Trial {index}: {exc}"
                logger.warning("sweep %s: trial %d is no longer a valid job: %s", sweep.id, index, exc)
                break
            job, _ = submit(db, send, new_job(sweep.tenant_id, spec, sweep_id=sweep.id, trial_index=index,
                                              trial_params=values), session=s)
            sweep.trials_submitted = index + 1
            submitted.append(job.id)
        if (sweep.status == "running" and not submitted and active == 0
                and sweep.trials_submitted >= config["max_trials"]):
            _finish(sweep, counts)
            logger.info("sweep %s %s", sweep.id, sweep.status)
    return submitted


def top_up_running(db: Database, send: Send, limits: SpecLimits) -> int:
    """The safety net, on every worker heartbeat: top up every running sweep (skipping locked ones)."""
    with db.session() as s:
        ids = list(s.execute(select(Sweep.id).where(Sweep.status == "running")
                             .order_by(Sweep.created_at).limit(200)).scalars())
    return sum(len(top_up(db, send, sweep_id, limits, skip_locked=True)) for sweep_id in ids)


def after_trial(db: Database, send: Send, job_id: str, limits: SpecLimits) -> None:
    """A delivery of `job_id` ended (trained, failed, skipped): top up its sweep, if it has one."""
    with db.session() as s:
        sweep_id = s.execute(select(Job.sweep_id).where(Job.id == job_id)).scalar_one_or_none()
    if sweep_id is not None:
        top_up(db, send, sweep_id, limits)


def cancel(session: Session, sweep: Sweep) -> None:
    """Stop submitting, end queued trials at once and ask running ones to stop at their next batch."""
    sweep.status, sweep.finished_at = "cancelled", utcnow()
    trials = session.execute(select(Job).where(Job.sweep_id == sweep.id, Job.status.in_(ACTIVE_STATUSES))
                             .with_for_update()).scalars()
    for job in trials:
        lifecycle.request_cancel(job)


def ranked_trials(session: Session, sweep: Sweep) -> list[tuple[int | None, Job]]:
    """The sweep's trial jobs, best objective first (a trial's best checkpoint value is its best
    objective, as the sweep points every trial's checkpoint at the objective); unscored ones last."""
    jobs = {j.trial_index: j for j in session.execute(select(Job).where(Job.sweep_id == sweep.id)).scalars()}
    results = [TrialResult(index, job.best_value) for index, job in jobs.items()]
    return [(position, jobs[result.trial]) for position, result in rank(results, sweep.config["objective"]["mode"])]


def best_trial(ranked: list[tuple[int | None, Job]]) -> Job | None:
    """The best trial that succeeded (so its checkpoint is stored and proven to load)."""
    return next((job for position, job in ranked if position is not None and job.status == "succeeded"), None)


def trial_stopper(db: Database, job_id: str) -> Callable[[int], str | None] | None:
    """For a trial of a sweep with early stopping: a check to call after each epoch's metrics are written,
    answering `sweep_early_stopped` when the trial should stop. None for any other job."""
    with db.session() as s:
        sweep = s.execute(select(Sweep).join(Job, Job.sweep_id == Sweep.id).where(Job.id == job_id)).scalar_one_or_none()
        if sweep is None or not sweep.config.get("early_stopping"):
            return None
        sweep_id, config = sweep.id, sweep.config
    rule = MedianRule(config["early_stopping"]["grace_epochs"], config["early_stopping"]["min_trials"])
    metric, mode = config["objective"]["metric"], config["objective"]["mode"]
    finished: dict[str, Curve] = {}  # finished trials' curves never change: read each once

    def curves(s: Session, ids: list[str]) -> dict[str, Curve]:
        out: dict[str, Curve] = {i: {} for i in ids}
        rows = s.execute(select(EpochMetrics.job_id, EpochMetrics.epoch, EpochMetrics.values)
                         .where(EpochMetrics.job_id.in_(ids)))
        for trial_id, epoch, values in rows:
            out[trial_id][epoch] = values.get(metric)
        return out

    def check(epoch: int) -> str | None:
        if epoch <= rule.grace_epochs:
            return None
        with db.session() as s:
            done = list(s.execute(select(Job.id).where(Job.sweep_id == sweep_id, Job.id != job_id,
                                                       Job.status.in_(FINAL_STATUSES))).scalars())
            unread = [i for i in done if i not in finished]
            if unread:
                finished.update(curves(s, unread))
            own = curves(s, [job_id])[job_id]
        if rule.should_stop(own, [finished[i] for i in done], epoch, mode):
            logger.info("job %s: %s at epoch %d is worse than the median of the sweep's finished trials; "
                        "stopping it", job_id, metric, epoch)
            return StopReason.SWEEP_EARLY_STOPPED.value
        return None

    return check
