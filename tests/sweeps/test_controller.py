"""The sweep controller against real Postgres: top-up under concurrent callers, finishing, ranking, and the
early-stopping check (Optuna's pruners over our tables). Its own database, and a `send` that records instead of queueing, so no worker (the
test session's, if one runs) ever sees these trials."""
from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import update

from trainyard.db import Database, upgrade_schema
from trainyard.db.models import EpochMetrics, Job, Tenant
from trainyard.db.sweeps import Sweep
from trainyard.job_errors import JobError
from trainyard.lifecycle import failure
from trainyard.spec import SpecLimits
from trainyard.sweeps import controller
from trainyard.stop_reasons import StopReason
from trainyard.sweeps.config import validate_sweep
from tests.conftest import PG_ADMIN_DSN, PG_URL_BASE, tiny_spec

LIMITS = SpecLimits()


@pytest.fixture(scope="module")
def db() -> Iterator[Database]:
    name = f"trainyard_sweeps_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database = Database(f"{PG_URL_BASE}/{name}")
    try:
        upgrade_schema(database.url)
        with database.session() as s:
            s.add(Tenant(id="tn_sweeps", name="sweeps"))
        yield database
    finally:
        database.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_sweep(db: Database, send: Any, **overrides: Any) -> str:
    body = {"base": tiny_spec(), "objective": {"metric": "val_loss"}, "seed": 5,
            "search": {"optimizer.learning_rate": {"type": "log_uniform", "low": 0.001, "high": 0.1},
                       "model.layers[0].units": {"type": "grid", "values": [8, 16, 32]}},
            **overrides}
    config = validate_sweep(body, datasets=None, limits=LIMITS, max_trials_limit=200)
    with db.session() as s:
        sweep = controller.new_sweep("tn_sweeps", config)
        s.add(sweep)
    controller.top_up(db, send, sweep.id, LIMITS)
    return sweep.id


def finish(db: Database, sweep_id: str, trial: int, value: float, status: str = "succeeded") -> None:
    # A failed job always carries its error (trainyard/job_errors.py); the database refuses one without.
    end = failure(JobError.NAN_LOSS, "The loss became NaN.") if status == "failed" else {"status": status}
    with db.session() as s:
        s.execute(update(Job).where(Job.sweep_id == sweep_id, Job.trial_index == trial)
                  .values(**end, best_value=value, best_epoch=1, epoch=1))


def test_top_up_keeps_parallelism_under_concurrent_callers_and_finishes(db: Database) -> None:
    sent: list[str] = []
    sweep_id = new_sweep(db, sent.append, max_trials=6, parallelism=2)
    assert len(sent) == 2

    def top_up_from_many_callers() -> None:
        threads = [threading.Thread(target=controller.top_up, args=(db, sent.append, sweep_id, LIMITS))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def counts() -> dict[str, int]:
        with db.session() as s:
            return controller.status_counts(s, [sweep_id])[sweep_id]

    top_up_from_many_callers()
    assert len(sent) == 2  # trials 0 and 1 are out: nothing is free
    values = {0: 0.5, 1: 0.3, 2: 0.9, 3: 0.2, 4: 0.4, 5: 0.25}
    for trial in range(6):
        finish(db, sweep_id, trial, values[trial], "failed" if trial == 3 else "succeeded")
        top_up_from_many_callers()
        assert counts().get("queued", 0) == min(2, 6 - trial - 1)
        assert len(sent) == min(6, trial + 3)
    assert len(set(sent)) == 6  # each trial sent once
    with db.session() as s:
        sweep = s.get(Sweep, sweep_id)
        assert sweep.status == "completed" and sweep.finished_at and sweep.trials_submitted == 6
        ranked = controller.ranked_trials(s, sweep)
        assert [(position, job.trial_index) for position, job in ranked] == [
            (1, 3), (2, 5), (3, 1), (4, 4), (5, 0), (6, 2)]
        # Trial 3 has the best value but failed: the best job is the best trial that succeeded.
        assert controller.best_trial(ranked).trial_index == 5
        jobs = {j.trial_index: j for j in s.query(Job).filter(Job.sweep_id == sweep_id)}
    assert [jobs[i].trial_params["model.layers[0].units"] for i in range(6)] == [8, 16, 32, 8, 16, 32]
    assert all(jobs[i].spec["model"]["layers"][0]["units"] == jobs[i].trial_params["model.layers[0].units"]
               for i in range(6))


def test_a_sweep_whose_trials_all_failed_fails(db: Database) -> None:
    sweep_id = new_sweep(db, lambda _id: None, search={"model.layers[0].units": {"type": "grid", "values": [8]}})
    finish(db, sweep_id, 0, 0.5, "failed")
    controller.top_up(db, lambda _id: None, sweep_id, LIMITS)
    with db.session() as s:
        sweep = s.get(Sweep, sweep_id)
        assert (sweep.status, sweep.error_code) == ("failed", "no_trial_succeeded")


def test_trial_stopper_compares_with_finished_trials_read_from_the_database(db: Database) -> None:
    sweep_id = new_sweep(db, lambda _id: None, max_trials=4, parallelism=4, seed=1,
                         search={"optimizer.learning_rate": {"type": "grid", "values": [0.1, 0.01, 0.001, 1e-4]}},
                         early_stopping={"type": "median", "grace_epochs": 1, "min_trials": 2})
    with db.session() as s:
        ids = {j.trial_index: j.id for j in s.query(Job).filter(Job.sweep_id == sweep_id)}
        curves = {0: [1.0, 0.5, 0.4], 1: [1.0, 0.6, 0.5], 2: [1.1, 0.9], 3: [1.1, 0.52]}
        for trial, curve in curves.items():
            for epoch, value in enumerate(curve, start=1):
                s.add(EpochMetrics(job_id=ids[trial], epoch=epoch, values={"loss": 0.1, "val_loss": value}))
    stop_2 = controller.trial_stopper(db, ids[2])
    stop_3 = controller.trial_stopper(db, ids[3])
    assert stop_2 is not None and stop_3 is not None
    assert stop_2(2) is None  # trials 0 and 1 have not finished: nothing to compare with yet
    with db.session() as s:
        for trial in (0, 1):
            s.execute(update(Job).where(Job.id == ids[trial]).values(status="succeeded", best_epoch=3,
                                                                     best_value=min(curves[trial])))
    assert stop_2(1) is None  # the grace epoch
    assert stop_2(2) == StopReason.SWEEP_PRUNED  # 0.9 is worse than the median 0.55 (Optuna's MedianPruner)
    assert stop_3(2) is None  # 0.52 beats it
    # Sweeps without early stopping, and jobs outside sweeps, get no check at all.
    plain_sweep = new_sweep(db, lambda _id: None, max_trials=3)
    with db.session() as s:
        trial = s.query(Job).filter(Job.sweep_id == plain_sweep).first()
        s.add(Job(id="job_" + "f" * 32, tenant_id="tn_sweeps", spec=tiny_spec(), epochs=3))
    assert controller.trial_stopper(db, trial.id) is None
    assert controller.trial_stopper(db, "job_" + "f" * 32) is None


def test_the_study_rebuilt_from_many_trials_asks_and_prunes(db: Database) -> None:
    """A sweep of 120 trials x 20 epochs: each ask and each pruning check rebuilds the study from the
    database. Correctness is asserted; the time per ask and per check (the controller's overhead) printed."""
    import time

    sent: list[str] = []
    sweep_id = new_sweep(db, sent.append, max_trials=121, parallelism=1, algorithm={"type": "tpe", "n_startup_trials": 5},
                         search={"optimizer.learning_rate": {"type": "log_uniform", "low": 0.001, "high": 0.1},
                                 "model.layers[0].units": {"type": "int_uniform", "low": 4, "high": 64}},
                         early_stopping={"type": "asha", "min_resource": 1, "reduction_factor": 3})
    ask_seconds = 0.0
    for trial in range(120):
        with db.session() as s:
            job = s.query(Job).filter(Job.sweep_id == sweep_id, Job.trial_index == trial).one()
            lr = job.trial_params["optimizer.learning_rate"]
            for epoch in range(1, 21):
                s.add(EpochMetrics(job_id=job.id, epoch=epoch, values={"loss": 0.1, "val_loss": abs(lr - 0.01) + 1 / epoch}))
            job.trial_attrs = {"completed_rung_0": abs(lr - 0.01) + 1}  # as its worker's pruner recorded it
        finish(db, sweep_id, trial, abs(lr - 0.01) + 0.05)
        began = time.perf_counter()
        controller.top_up(db, sent.append, sweep_id, LIMITS)
        ask_seconds += time.perf_counter() - began
    assert len(set(sent)) == 121
    with db.session() as s:
        last = s.query(Job).filter(Job.sweep_id == sweep_id, Job.trial_index == 120).one()
        s.add(EpochMetrics(job_id=last.id, epoch=1, values={"loss": 0.1, "val_loss": 50.0}))
    check = controller.trial_stopper(db, last.id)
    began = time.perf_counter()
    assert check(1) == StopReason.SWEEP_PRUNED  # far worse than the 120 trials' first rung
    check_seconds = time.perf_counter() - began
    with db.session() as s:
        assert s.get(Job, last.id).trial_attrs == {"completed_rung_0": 50.0}  # the pruner's record, kept
        s.add(EpochMetrics(job_id=last.id, epoch=2, values={"loss": 0.1, "val_loss": 40.0}))
    began = time.perf_counter()
    assert check(2) is None  # the next rung is at epoch 3 (reduction factor 3); finished trials now come from the cache
    later_seconds = time.perf_counter() - began
    print(f"\n120 finished trials x 20 epochs: top_up with one TPE ask {1000 * ask_seconds / 120:.0f} ms on "
          f"average (rebuild + ask + submit); ASHA pruning check {1000 * check_seconds:.0f} ms the first "
          f"epoch, {1000 * later_seconds:.0f} ms the next")
