"""The sweep controller: thin glue between a sweep's row, its trial jobs and the queue.

Who drives a sweep: no scheduler of its own. `top_up` keeps `parallelism` trials queued or running until
`max_trials` were submitted, asking the sweep's Optuna study (trainyard/sweeps/study.py, rebuilt from the
trial jobs) for each new trial's values, and marks the sweep finished when the last trial ended. It is
idempotent and runs under the sweep's row lock, so any number of callers may race:
- `POST /v1/sweeps` calls it to submit the first trials;
- the worker's task calls it (`after_trial`) whenever a trial's delivery ends;
- every worker's heartbeat calls `top_up_running` as the safety net (a worker killed mid-trial, a trial
  cancelled by hand while queued, a crash between two steps).
Trials are submitted with `trainyard.submission.submit` inside the locked transaction and enqueued once it
commits; a lost message is re-sent by the reaper like any job's.

Early stopping runs in the worker that trains a trial: `trial_stopper` gives its reporter a check called
after each epoch's metrics are written (they are the trial's intermediate values); when the sweep's Optuna
pruner says prune, the run stops at the next batch with stop_reason `sweep_pruned` and ends `succeeded`,
keeping its best checkpoint.

Optuna is imported lazily (about half a second): by the first sweep the API or a worker acts on.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard import lifecycle
from trainyard.compare import load_epochs
from trainyard.datasets.lookup import dataset_lookup
from trainyard.db import Database
from trainyard.db.models import Job, utcnow
from trainyard.db.sweeps import Sweep
from trainyard.spec import SpecError, SpecLimits
from trainyard.stop_reasons import StopReason
from trainyard.submission import Send, new_job, submit
from trainyard.sweeps.config import SweepConfig, trial_spec
from trainyard.sweeps.rules import TrialResult, rank

if TYPE_CHECKING:
    from trainyard.sweeps.study import SweepStudy, TrialRecord

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "running")
PRUNED_REASONS = (StopReason.SWEEP_PRUNED.value, StopReason.SWEEP_EARLY_STOPPED.value)


def new_sweep(tenant_id: str, config: SweepConfig, **fields: Any) -> Sweep:
    return Sweep(tenant_id=tenant_id, name=config.name, status="running", base=config.base,
                 config=config.as_json(), plan=[], trials_submitted=0, **fields)


def objective_metrics(config: dict[str, Any]) -> list[str]:
    return [o["metric"] for o in (config.get("objectives") or [config["objective"]])]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.nan
    return float(value)


def trial_rows(session: Session, sweep_id: str) -> list[Any]:
    """The sweep's trial jobs, only the columns the study needs (a job row also holds its spec and model)."""
    return list(session.execute(
        select(Job.id, Job.trial_index, Job.status, Job.stop_reason, Job.best_value, Job.best_epoch,
               Job.trial_params, Job.trial_attrs).where(Job.sweep_id == sweep_id).order_by(Job.trial_index)))


def trial_records(session: Session, sweep: Sweep, jobs: list[Any] | None = None) -> list[TrialRecord]:
    """What the sweep's Optuna study is rebuilt from: each trial job's state, values and intermediate values."""
    from trainyard.sweeps.study import TrialRecord

    if jobs is None:
        jobs = trial_rows(session, sweep.id)
    metrics = objective_metrics(sweep.config)
    curves = load_epochs(session, [j.id for j in jobs])
    records = []
    for job in jobs:
        curve = curves[job.id]
        values: list[float] | None = None
        if job.status in ACTIVE_STATUSES:
            state = "running"
        elif job.status == "succeeded" and job.stop_reason in PRUNED_REASONS:
            state = "pruned"
        elif job.status == "succeeded":
            # One objective: the best checkpoint's value; several: their values at the best checkpoint's epoch.
            values = ([_number(job.best_value)] if len(metrics) == 1 else
                      [_number(curve.get(job.best_epoch or 0, {}).get(m)) for m in metrics])
            state = "complete" if not any(math.isnan(v) for v in values) else "fail"
        else:
            state = "fail"
        records.append(TrialRecord(
            index=job.trial_index or 0, state=state, params=dict(job.trial_params or {}),
            values=values if state == "complete" else None,
            intermediate={epoch: _number(row.get(metrics[0])) for epoch, row in curve.items()},
            system_attrs=dict(job.trial_attrs or {})))
    return records


def study_of(session: Session, sweep: Sweep, jobs: list[Any] | None = None) -> SweepStudy:
    from trainyard.sweeps.study import SweepStudy

    return SweepStudy(sweep.id, sweep.config, trial_records(session, sweep, jobs), sweep.study_attrs)


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
        # A cancelled trial does not count: resuming a cancelled sweep runs new trials in their place.
        counted = sweep.trials_submitted - counts.get("cancelled", 0)
        room = min(config["parallelism"] - active, config["max_trials"] - counted)
        datasets = dataset_lookup(s, sweep.tenant_id)
        study = None
        for _ in range(max(0, room)):
            index = sweep.trials_submitted
            attrs: dict[str, Any] | None = None
            if index < len(sweep.plan or []):  # a sweep accepted before Optuna chose values
                values = sweep.plan[index]
            else:
                began = time.perf_counter()
                if study is None:
                    study = study_of(s, sweep)
                values, attrs = study.ask()
                kind = (config.get("algorithm") or {}).get("type", "random")
                logger.info("sweep %s: %s chose trial %d in %.0f ms", sweep.id, kind, index,
                            1000 * (time.perf_counter() - began))
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
            job = new_job(sweep.tenant_id, spec, sweep_id=sweep.id, trial_index=index, trial_params=values)
            job.trial_attrs = attrs
            job, _ = submit(db, send, job, session=s)
            sweep.trials_submitted = index + 1
            submitted.append(job.id)
        if study is not None:
            sweep.study_attrs = study.study_attrs
        if sweep.status == "running" and not submitted and active == 0 and counted >= config["max_trials"]:
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
        try:
            refresh_importance(db, sweep_id)
        except Exception:  # importances are a read-out: never let them hold up the sweep
            logger.warning("sweep %s: could not refresh its parameter importances", sweep_id, exc_info=True)


def refresh_importance(db: Database, sweep_id: str) -> None:
    """Store the sweep's parameter importances once IMPORTANCE_MIN_TRIALS trials completed. Workers only:
    optuna.importance imports scikit-learn, which the API never loads."""
    with db.session() as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None:
            return
        records = trial_records(s, sweep)
        if sum(1 for r in records if r.state == "complete") < IMPORTANCE_MIN_TRIALS:
            return
        from trainyard.sweeps.study import SweepStudy, importances

        found = importances(SweepStudy(sweep.id, sweep.config, records, sweep.study_attrs))
        if found is not None:
            s.execute(update(Sweep).where(Sweep.id == sweep_id).values(importance=found))


def cancel(session: Session, sweep: Sweep) -> None:
    """Stop submitting, end queued trials at once and ask running ones to stop at their next batch."""
    sweep.status, sweep.finished_at = "cancelled", utcnow()
    trials = session.execute(select(Job).where(Job.sweep_id == sweep.id, Job.status.in_(ACTIVE_STATUSES))
                             .with_for_update()).scalars()
    for job in trials:
        lifecycle.request_cancel(job)


def extension_errors(sweep: Sweep, max_trials: Any, limit: int) -> list[dict[str, str]]:
    """Why `max_trials` cannot extend the sweep (field-path errors), or []."""
    config = sweep.config
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or not config["max_trials"] < max_trials <= limit:
        return [{"field": "max_trials", "message": f"Must be a whole number above the sweep's {config['max_trials']} "
                                                   f"and at most {limit}."}]
    if (config.get("algorithm") or {}).get("type") == "grid" or sweep.plan:
        return [{"field": "max_trials", "message": "A grid runs each combination once, and a sweep accepted before "
                                                   "trials were asked for has a fixed plan: it cannot be extended."}]
    from trainyard.sweeps.search import grid_size, param_from_json

    size = grid_size([param_from_json(path, raw) for path, raw in config["search"].items()])
    if max_trials % size:
        return [{"field": "max_trials", "message": f"Must be a multiple of {size}, the grid's combinations."}]
    return []


def extend(sweep: Sweep, max_trials: int) -> None:
    """Raise `max_trials` (checked with extension_errors); a finished sweep runs again. Under the row lock."""
    sweep.config = {**sweep.config, "max_trials": max_trials}
    if sweep.status in ("completed", "failed"):
        sweep.status, sweep.finished_at, sweep.error_code, sweep.error_message = "running", None, None, None


def resume(sweep: Sweep) -> None:
    """A cancelled sweep runs again: new trials take the place of the cancelled ones. Under the row lock."""
    sweep.status, sweep.finished_at = "running", None


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
    answering `sweep_pruned` when the sweep's Optuna pruner prunes the trial. None for any other job.

    Each check rebuilds the study from the sweep's trials (their epochs so far are the intermediate values),
    asks the pruner about this trial and keeps what the pruner recorded on it (`jobs.trial_attrs`)."""
    with db.session() as s:
        row = s.execute(select(Sweep, Job.trial_index).join(Job, Job.sweep_id == Sweep.id)
                        .where(Job.id == job_id)).one_or_none()
        if row is None or not row[0].config.get("early_stopping"):
            return None
        sweep_id, index, rule = row[0].id, row[1], row[0].config["early_stopping"]["type"]

    # Finished trials never change (their epochs, value and attributes are final): each is read once.
    finished: dict[int, TrialRecord] = {}

    def check(epoch: int) -> str | None:
        with db.session() as s:
            sweep = s.get(Sweep, sweep_id)
            unread = [row for row in trial_rows(s, sweep_id) if row.trial_index not in finished]
            fresh = trial_records(s, sweep, unread)
            config, study_attrs = sweep.config, sweep.study_attrs
        from trainyard.sweeps.study import SweepStudy

        finished.update((r.index, r) for r in fresh if r.state != "running")
        records = [*finished.values(), *(r for r in fresh if r.state == "running")]
        own = next(r for r in records if r.index == index)
        # The epochs this run wrote so far (a resumed run's rows past `epoch` belong to no one yet).
        own.intermediate = {e: v for e, v in own.intermediate.items() if e <= epoch}
        before = dict(own.system_attrs)
        study = SweepStudy(sweep_id, config, records, study_attrs)
        prune, attrs = study.should_prune(index)
        if attrs != before:
            with db.session() as s:
                s.execute(update(Job).where(Job.id == job_id).values(trial_attrs=attrs))
        if prune:
            logger.info("job %s: the sweep's %s pruner prunes it at epoch %d; stopping it", job_id, rule, epoch)
            return StopReason.SWEEP_PRUNED.value
        return None

    return check


#: Finished trials a sweep needs before it reports parameter importances.
IMPORTANCE_MIN_TRIALS = 4


def results(session: Session, sweep: Sweep, jobs: list[Job]) -> dict[str, Any]:
    """What `GET /v1/sweeps/{id}` adds to the ranked trials: each trial's intermediate values (the first
    objective per epoch) and, with several objectives, its values; the Pareto front (trial numbers) of a
    multi-objective sweep; the parameter importances the workers stored (refresh_importance)."""
    records = trial_records(session, sweep, sorted(jobs, key=lambda j: j.trial_index or 0))
    multi = bool(sweep.config.get("objectives"))
    curves = {r.index: [None if math.isnan(v) else v for _, v in sorted(r.intermediate.items())] for r in records}
    values = {r.index: r.values for r in records} if multi else {}
    pareto: list[int] | None = None
    if multi:
        pareto = []
        if any(r.state == "complete" for r in records):
            from trainyard.sweeps.study import SweepStudy

            study = SweepStudy(sweep.id, sweep.config, records, sweep.study_attrs)
            pareto = sorted(t.number for t in study.study.best_trials)
    return {"curves": curves, "values": values, "pareto_front": pareto, "importance": sweep.importance}
