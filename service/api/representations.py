"""What the API returns: every resource's JSON representation, built in one place from rows.

Views load rows (tenant-scoped, through `common.load_owned`) and answer with these; no view writes a
resource's fields itself. The few reads here exist only to fill a representation: a job's finding counts
and its place in the queue, each in one query for a whole page of jobs.
"""
from __future__ import annotations

import json
import secrets
from collections import namedtuple
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from flask import current_app, has_request_context, request, url_for
from sqlalchemy import (Connection, String, Text, any_, bindparam, case, cast, func, literal_column, select, true,
                        tuple_, type_coerce)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Session

from service.api.common import iso
from trainyard import cards, compare, eta
from trainyard.cards import normalized_spec
from trainyard.db import status_sql
from trainyard.db.models import Checkpoint, Dataset, EpochDiagnostics, EpochMetrics, Finding, Job, utcnow
from trainyard.db.live import JobLog
from trainyard.db.sweeps import Sweep
from trainyard.findings import SEVERITIES, ranked
from trainyard.forks import finding_key, from_value
from trainyard.resources import gpus_of, queue_name
from trainyard.spec import DatasetInfo

# ---------------------------------------------------------------------------------------------- jobs


_JOB_LINKS = {
    "self": "jobs.get_job",
    "metrics": "job_metrics.get_metrics",
    "checkpoints": "checkpoints.list_checkpoints",
    "best_checkpoint": "checkpoints.download_best",
    "cancel": "jobs.cancel_job",
    "diagnostics": "diagnostics.get_diagnostics",
    "tensorboard": "tensorboard.download_tensorboard",
    "events": "events.job_events",
    "logs": "logs.get_logs",
    "card": "cards.get_card",
}
# Stands for the job's id in the links' templates: server ids are lowercase, so it never occurs in one.
_ID_SLOT = "JOB-ID-SLOT"


def job_links(job_id: str) -> dict[str, str]:
    """The job's links, as `url_for` builds them: built once per application root with a stand-in id, then
    filled in (nine `url_for` calls were a tenth of a status poll's time). A job id needs no quoting."""
    if not has_request_context():
        return {name: url_for(endpoint, job_id=job_id) for name, endpoint in _JOB_LINKS.items()}
    cache = current_app.extensions.setdefault("trainyard_job_links", {})
    templates = cache.get(request.script_root)
    if templates is None:  # each link as (before the id, after it)
        templates = cache[request.script_root] = [
            (name, *url_for(endpoint, job_id=_ID_SLOT).split(_ID_SLOT)) for name, endpoint in _JOB_LINKS.items()]
    return {name: before + job_id + after for name, before, after in templates}


def _links_json_template() -> list[str]:
    """`job_links` as compact JSON text (as the body's encoder writes it) around the job's id: built once per
    application root; `job_id.join(template)` fills it in (an id needs no escaping)."""
    cache = current_app.extensions.setdefault("trainyard_job_links_json", {})
    parts = cache.get(request.script_root)
    if parts is None:
        parts = cache[request.script_root] = json.dumps(job_links(_ID_SLOT), separators=(",", ":")).split(_ID_SLOT)
    return parts


def job_resource(job: Any, findings: dict[str, Any] | None = None, position: int | None = None,
                 estimate: eta.Eta | None = None, children: list[str] | None = None) -> dict[str, Any]:
    """A job (an ORM row, or a Core row read by column name like one), with its finding counts, while
    queued its 1-based place in its queue, while queued or running its estimated end (`job_etas`), and the
    ids of its forks (oldest first)."""
    return _job_body(job, findings, position, estimate, children, labels=job.labels or {},
                     spec=normalized_spec(job.spec), test_metrics=job.test_metrics, environment=job.environment,
                     reproduction=job.reproduction, links=job_links(job.id))


def _job_body(job: Any, findings: dict[str, Any] | None, position: int | None, estimate: eta.Eta | None,
              children: list[str] | None, *, labels: Any, spec: Any, test_metrics: Any, environment: Any,
              reproduction: Any, links: Any) -> dict[str, Any]:
    """`job_resource`, its JSON documents and links given (a list page gives stand-ins for their text)."""
    best = None
    if job.best_epoch is not None:
        best = {"monitor": job.best_monitor, "value": job.best_value, "epoch": job.best_epoch}
    error = None
    if job.error_code:
        error = {"code": job.error_code, "message": job.error_message}
    info = job.model_info or {}
    return {
        "id": job.id,
        "name": job.name,
        # The labels as they are now (PATCH changes them; `spec.labels` keeps what was submitted).
        "labels": labels,
        "status": job.status,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "spec": spec,
        "progress": {"epoch": job.epoch, "epochs": job.epochs},
        "best": best,
        "stop_reason": job.stop_reason,
        "test_metrics": test_metrics,
        "error": error,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "model": {
            "params": info.get("params"),
            "trainable_params": info.get("trainable_params"),
            "normalization": info.get("normalization"),
        }
        if info
        else None,
        # optimizer.learning_rate "auto": the rate the range test chose and the job trains at (null until
        # the worker has chosen it, and for a job that gave a number).
        "optimizer": {"learning_rate_chosen": info.get("learning_rate_chosen")},
        "findings": findings or no_findings(),
        "timings": job_timings(job),
        # The reproducibility record of the attempt that ran last; null until a worker claims the job.
        "environment": environment,
        "sweep": {"id": job.sweep_id, "trial": job.trial_index} if job.sweep_id else None,
        "resources": {"gpus": gpus_of(job.resource_class), "class": job.resource_class},
        "queue": queue_resource(job, position),
        "eta": eta_resource(estimate),
        "parent": parent_resource(job),
        # A replay: the job it trains again, and once it ended how it compares with it (trainyard/compare.py).
        "replay_of": job.replay_of,
        "reproduction": reproduction,
        "children": children or [],
        "links": links,
    }


def parent_resource(job: Any) -> dict[str, Any] | None:
    """A fork's parent: its id, where the fork's weights came from (and the parent's epoch they were saved
    at), the merge patch applied to the parent's spec and the parent's findings it applied."""
    if job.parent_id is None:
        return None
    return {"id": job.parent_id, "from": from_value(job.parent_from, job.initial_weights_epoch),
            "epoch": job.initial_weights_epoch, "patch": job.parent_patch or {},
            "applied_findings": job.parent_findings or []}


def children_of(session: Session | Connection, job_ids: list[str]) -> dict[str, list[str]]:
    """The forks of each of these jobs, oldest first, in one query (on the parent_id index)."""
    out: dict[str, list[str]] = {}
    if not job_ids:
        return out
    rows = session.execute(select(Job.parent_id, Job.id).where(Job.parent_id.in_(job_ids))
                           .order_by(Job.created_at, Job.id))
    for parent_id, child_id in rows:
        out.setdefault(parent_id, []).append(child_id)
    return out


def job_timings(job: Any) -> dict[str, float] | None:
    """Where a job's time went: waiting in the queue, then the worker's phases once it has finished."""
    return cards.timings(job)


def job_with_findings(session: Session, job: Job) -> dict[str, Any]:
    """One job's resource, with its finding counts, while queued its queue position, its estimate, and its
    forks."""
    positions = queue_positions(session, [job])
    return job_resource(job, finding_counts(session, [job.id]).get(job.id), positions.get(job.id),
                        job_etas(session, [job], positions).get(job.id), children_of(session, [job.id]).get(job.id))


def status_event(status: str, stop_reason: str | None, job: dict[str, Any]) -> dict[str, Any]:
    """The data of an event stream's `status` event: the status it changed to, and the job now."""
    return {"status": status, "stop_reason": stop_reason, "job": job}


# ------------------------------------------------------------------------------------ queue position


def queue_resource(job: Any, position: int | None) -> dict[str, Any] | None:
    """While queued: the Celery queue of its resource class and its place in it (1 = next)."""
    if job.status == "queued" and position is not None:
        return {"name": queue_name(job.resource_class), "position": position}
    return None


def queue_positions(session: Session | Connection, jobs: Iterable[Any]) -> dict[str, int]:
    """1-based FIFO positions of the queued ones of these jobs among the queued jobs of their resource class,
    in one query; a page without a queued job costs none.

    The order is the broker's: when the job's message was (last) sent, so a job re-queued after its worker
    died queues behind the jobs already waiting, as its message does. Both ways of counting read the partial
    index of queued jobs (`ix_jobs_queue`, migration 0015) in exactly that order: no sort, and no row of a
    job that is not queued, however long the history. One job (a status poll, a submission's 201) counts the
    index entries from the head of its class's queue to its own. A page of them ranks the queues of its
    classes from their heads to its last-sent queued job (as the page read it) and no further: a job's place
    depends only on the jobs ahead of it, so a deep page, whose jobs wait near the heads, ranks a few entries
    and not the whole queue. A job sent again since the page read it (re-queued, or its send marked) may lie
    beyond that point: the whole queues are ranked again for it.
    """
    queued = [job for job in jobs if job.status == "queued"]
    if not queued:
        return {}
    if len(queued) == 1:
        position = session.execute(QUEUE_POSITION_OF, {"id": queued[0].id}).scalar()
        return {} if position is None else {queued[0].id: int(position)}
    ids = [job.id for job in queued]
    positions = {job_id: int(position) for job_id, position in session.execute(_QUEUE_POSITIONS_UP_TO, {
        "ids": ids, "classes": sorted({job.resource_class for job in queued}),
        "last_sent": max(job.enqueued_at or job.created_at for job in queued)})}
    if len(positions) < len(ids):  # sent again meanwhile, or no longer queued
        again = [job_id for job_id in ids if job_id not in positions]
        positions.update((job_id, int(position)) for job_id, position in session.execute(_QUEUE_POSITIONS,
                                                                                          {"ids": again}))
    return positions


# Written into the statements (`status_sql`): the partial index of queued jobs serves them also in a
# prepared statement's generic plan.
QUEUED = status_sql("queued")


def _queue_positions(*, up_to_last_sent: bool) -> Any:
    sent_at = func.coalesce(Job.enqueued_at, Job.created_at)  # as ix_jobs_queue indexes it
    order = func.row_number().over(partition_by=Job.resource_class, order_by=(sent_at, Job.id))
    ranked = select(Job.id.label("id"), order.label("position")).where(Job.status == QUEUED)
    if up_to_last_sent:  # a range of ix_jobs_queue per class: from the head to `last_sent`
        ranked = ranked.where(Job.resource_class.in_(bindparam("classes", expanding=True)),
                              sent_at <= bindparam("last_sent", type_=Job.created_at.type))
    ranked = ranked.subquery()
    return select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_(bindparam("ids", expanding=True)))


def _queue_position_of() -> Any:
    # The queued jobs of :id's class sent before it, and itself: a range of ix_jobs_queue from the head of the
    # class's queue to the job's own key (a row comparison on the index's columns). No row when :id is not
    # queued.
    jobs, me = Job.__table__, Job.__table__.alias("me")
    ahead = (select(func.count()).select_from(jobs)
             .where(jobs.c.status == QUEUED, jobs.c.resource_class == me.c.resource_class,
                    tuple_(func.coalesce(jobs.c.enqueued_at, jobs.c.created_at), jobs.c.id)
                    <= tuple_(func.coalesce(me.c.enqueued_at, me.c.created_at), me.c.id))
             .correlate(me).scalar_subquery())
    return select(ahead.label("position")).where(me.c.id == bindparam("id"), me.c.status == QUEUED)


QUEUE_POSITION_OF = _queue_position_of()
_QUEUE_POSITIONS = _queue_positions(up_to_last_sent=False)
_QUEUE_POSITIONS_UP_TO = _queue_positions(up_to_last_sent=True)


def submitted_queue_and_eta(db: Any, job: Any, now: datetime | None = None) -> tuple[int | None, eta.Eta | None]:
    """A job just submitted (queued, no findings): its queue position and estimate, exactly as
    `queue_positions` and `job_etas` give them for it, in one statement by the database's compiled-once path
    (`Database.all_rows`): the submission's 201 costs no ORM session and one round trip."""
    now = now or utcnow()
    rows = db.all_rows(SUBMITTED_QUEUE, {"id": job.id, "tenant_id": job.tenant_id,
                                          "resource_class": job.resource_class})
    if not rows:  # no longer queued (a worker took it already)
        return None, None
    position = int(rows[0][0])
    runs = [row[1:] for row in rows if row[1] is not None]  # the LEFT JOIN's one null row when none ran
    times = [(_utc(finished) - _utc(started)).total_seconds() for started, finished, _ in runs]
    workers = int(runs[0][2]) if runs else 0
    return position, eta.queued_eta(now, position, times, workers, job.epochs - job.epoch)


# ----------------------------------------------------------------------------------------------- eta


def eta_resource(estimate: eta.Eta | None) -> dict[str, Any] | None:
    if estimate is None:
        return None
    return {"seconds": estimate.seconds, "at": iso(estimate.at), "basis": estimate.basis.value,
            "epochs_left": estimate.epochs_left, "full_length_seconds": estimate.full_length_seconds}


RecentEpochs = tuple[list[float | None], datetime | None]


def job_etas(session: Session | Connection, jobs: Iterable[Any], positions: dict[str, int],
             recent: dict[str, RecentEpochs] | None = None, now: datetime | None = None) -> dict[str, eta.Eta]:
    """The estimated end of each running or queued job (trainyard/eta.py), by job id.

    A running job's latest epochs come with its row when it was read with `RECENT_EPOCH_COLUMNS` (pass
    them as `recent`: the status poll and the list cost no statement more); otherwise one statement reads
    them for all the running jobs. Queued jobs cost one statement for the run times of recent jobs of
    their tenants and classes. A page with neither costs nothing.
    """
    now = now or utcnow()
    jobs = list(jobs)
    recent = dict(recent or {})
    missing = [j.id for j in jobs if j.status == "running" and j.epoch > 0 and j.id not in recent]
    if missing:
        stmt = select(Job.id, *RECENT_EPOCH_COLUMNS).where(Job.id.in_(missing))
        recent.update((row[0], recent_epochs(row[1:])) for row in session.execute(stmt))
    return {**running_etas(jobs, recent, now), **queued_etas(session, jobs, positions, now)}


def running_etas(jobs: Iterable[Any], recent: dict[str, RecentEpochs], now: datetime) -> dict[str, eta.Eta]:
    """The running jobs' estimates, from their latest epochs (`recent`, by job id) and their rows."""
    out: dict[str, eta.Eta] = {}
    for job in jobs:
        times, last_end = recent.get(job.id, ([], None))
        if job.status != "running" or last_end is None:
            continue
        early = eta.early_stopping_of(job.spec, job.resume_state, job.epoch)
        estimate = eta.running_eta(now, last_end, times, job.epoch, job.epochs, early)
        if estimate is not None:
            out[job.id] = estimate
    return out


def queued_etas(session: Session | Connection, jobs: Iterable[Any], positions: dict[str, int],
                now: datetime) -> dict[str, eta.Eta]:
    """The queued jobs' estimates, from their queue `positions` and their classes' recent run times."""
    queued = [j for j in jobs if j.status == "queued" and j.id in positions]
    runs = recent_run_times(session, {(j.tenant_id, j.resource_class) for j in queued})
    out: dict[str, eta.Eta] = {}
    for job in queued:
        times, workers = runs.get((job.tenant_id, job.resource_class), ([], 0))
        estimate = eta.queued_eta(now, positions[job.id], times, workers, job.epochs - job.epoch)
        if estimate is not None:
            out[job.id] = estimate
    return out


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt  # SQLite's are naive UTC


def _recent_epoch_columns() -> list[Any]:
    """Columns for a query of jobs: while a job runs, the seconds of its epochs `epoch`, `epoch - 1`, ...
    (`RECENT_EPOCHS` of them; epochs are numbered without gaps) and when epoch `epoch` was written; null
    otherwise. Each is a primary-key lookup, only for running jobs (a finished job's poll skips them)."""
    running = Job.status == "running"

    def of_epoch(column: Any, back: int) -> Any:
        lookup = (select(column).where(EpochMetrics.job_id == Job.id, EpochMetrics.epoch == Job.epoch - back)
                  .correlate(Job).scalar_subquery())
        return case((running, lookup))

    seconds = EpochMetrics.values["seconds"].as_float()
    return [of_epoch(seconds, back) for back in range(eta.RECENT_EPOCHS)] + [of_epoch(EpochMetrics.created_at, 0)]


RECENT_EPOCH_COLUMNS = _recent_epoch_columns()


def recent_epochs(values: Any) -> RecentEpochs:
    """A row's `RECENT_EPOCH_COLUMNS` as (epoch seconds, when the latest epoch was written)."""
    *times, last_end = values
    return list(times), _utc(last_end) if last_end is not None else None


def recent_run_times(session: Session | Connection,
                     groups: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[list[float], int]]:
    """For each (tenant, resource class): the run times (started to finished) of the tenant's latest
    `RECENT_JOBS` succeeded jobs of the class, and how many jobs of the class run now, of any tenant (a
    queue with jobs waiting has every worker that serves it busy, so that counts them). One statement per
    group (a page of jobs rarely spans more than one class).

    Only the tenant's own jobs, newest first on its (tenant, status, created) index, at most
    `SCANNED_RUNS` of them: cheap however long the history, and it says nothing about other tenants' jobs."""
    out: dict[tuple[str, str], tuple[list[float], int]] = {}
    for tenant, cls in groups:
        rows = session.execute(_RECENT_RUNS, {"tenant_id": tenant, "resource_class": cls}).all()
        out[(tenant, cls)] = ([(_utc(finished) - _utc(started)).total_seconds() for started, finished, _ in rows],
                              int(rows[0][2]) if rows else 0)
    return out


# How many of a tenant's latest succeeded jobs `recent_run_times` looks through for those of one class.
SCANNED_RUNS = 200


def _recent_runs() -> Any:
    # Core, built once: building it with ORM aliases on every request cost more than running it. The statuses
    # are written into the statement (`status_sql`).
    jobs, busy = Job.__table__, Job.__table__.alias("busy")
    recent = (select(jobs.c.resource_class, jobs.c.created_at, jobs.c.started_at, jobs.c.finished_at)
              .where(jobs.c.tenant_id == bindparam("tenant_id"), jobs.c.status == status_sql("succeeded"))
              .order_by(jobs.c.created_at.desc()).limit(SCANNED_RUNS).subquery())
    running = (select(func.count()).select_from(busy)
               .where(busy.c.status == status_sql("running"), busy.c.resource_class == bindparam("resource_class"))
               .scalar_subquery())
    return (select(recent.c.started_at, recent.c.finished_at, running)
            # A succeeded job has both times when a worker ran it; a row written otherwise (an import, an
            # operator's fix) may lack one and says nothing about run times.
            .where(recent.c.resource_class == bindparam("resource_class"), recent.c.started_at.is_not(None),
                   recent.c.finished_at.is_not(None))
            .order_by(recent.c.created_at.desc()).limit(eta.RECENT_JOBS))


_RECENT_RUNS = _recent_runs()


def _submitted_queue() -> Any:
    # `QUEUE_POSITION_OF` the job :id, each row with one of `_RECENT_RUNS` for its tenant and class (one row
    # with null runs when there are none; no row when the job is not queued). The position is counted once,
    # materialised: as a subquery, Postgres pulled its count up into every joined row (28 ms a submission).
    position = QUEUE_POSITION_OF.cte("position").prefix_with("MATERIALIZED")
    runs = _RECENT_RUNS.subquery()
    return select(position.c.position, *runs.c).select_from(position.outerjoin(runs, true()))


SUBMITTED_QUEUE = _submitted_queue()


# ------------------------------------------------------------------------------------ finding counts

def no_findings() -> dict[str, Any]:
    return {"count": 0, "by_severity": dict.fromkeys(SEVERITIES, 0)}


def counts_resource(per_severity: Iterable[int]) -> dict[str, Any]:
    """A job's finding counts from its per-severity counts (in SEVERITIES order)."""
    per_severity = list(per_severity)
    return {"count": sum(per_severity), "by_severity": dict(zip(SEVERITIES, per_severity))}


def finding_counts(session: Session, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Findings per job and severity, in one grouped query for a whole page of jobs."""
    counts: dict[str, dict[str, Any]] = {}
    if not job_ids:
        return counts
    rows = session.execute(
        select(Finding.job_id, Finding.severity, func.count())
        .where(Finding.job_id.in_(job_ids)).group_by(Finding.job_id, Finding.severity)
    )
    for job_id, severity, n in rows:
        entry = counts.setdefault(job_id, no_findings())
        entry["count"] += n
        entry["by_severity"][severity] = entry["by_severity"].get(severity, 0) + n
    return counts


def per_severity_counts() -> list[Any]:
    return [select(func.count()).where(Finding.job_id == Job.id, Finding.severity == severity).correlate(Job)
            .scalar_subquery() for severity in SEVERITIES]


_CHILD = Job.__table__.alias("child")
_VERSION_CHILD = Job.__table__.alias("version_child")
# The forks' ids as "count:sum of hashtext(id)": any child added or deleted changes it.
_CHILDREN_SIGNATURE = (select(func.count().cast(Text) + ":"
                              + func.coalesce(func.sum(func.hashtext(_VERSION_CHILD.c.id)), 0).cast(Text))
                       .where(_VERSION_CHILD.c.parent_id == Job.id).correlate(Job).scalar_subquery())
# A job's version, with its finding counts (Postgres only): the row's `xmin` (the transaction that wrote this
# version of the row; any UPDATE writes a new one) and a signature of its forks' ids. What an API process
# keeps of an ended job (its status body, its list item: service/api/status_cache.py) is answered only
# while the version read now is the one read with the row it was built from.
VERSION_COLUMNS = (literal_column("jobs.xmin::text").label("row_version"), _CHILDREN_SIGNATURE.label("children_sig"))


def _has_children() -> Any:
    # Whether any job is a fork of this one (its first fork's id, or null): only then is a second query made
    # for their ids. A scalar subquery with LIMIT 1, not EXISTS: Postgres may plan an EXISTS over a page as
    # one hashed pass over every job of every tenant; this stays a probe of ix_jobs_parent per row.
    return select(_CHILD.c.id).where(_CHILD.c.parent_id == Job.id).correlate(Job).limit(1).scalar_subquery()


# Jobs with their finding counts per severity, whether they have forks and, while running, their latest
# epochs, in one round trip: a status poll or a list page is one query (and one more only for jobs that
# were forked). Built once; only the parameters change.
JOBS_WITH_FINDINGS = select(Job, *per_severity_counts(), _has_children(), *RECENT_EPOCH_COLUMNS)
# The status poll's query in Core: plain rows (read by column name like a Job), no ORM identity map; it
# takes `id` and `tenant_id` (common.load_owned_row).
JOB_ROW_WITH_FINDINGS = select(*Job.__table__.c, *per_severity_counts(), _has_children(),
                               *RECENT_EPOCH_COLUMNS).where(
    Job.id == bindparam("id"), Job.tenant_id == bindparam("tenant_id"))
_JOB_COLUMNS = len(Job.__table__.c)
_COUNTS = slice(_JOB_COLUMNS, _JOB_COLUMNS + len(SEVERITIES))


def job_and_counts(row: Any) -> tuple[Job, dict[str, Any], bool, RecentEpochs]:
    """A row of JOBS_WITH_FINDINGS as (job, finding counts, whether it has forks, latest epochs)."""
    job, *rest = row
    n = len(SEVERITIES)
    return job, counts_resource(rest[:n]), bool(rest[n]), recent_epochs(rest[n + 1:])


def job_row_counts(row: Any) -> tuple[dict[str, Any], bool]:
    """The finding counts of a row of JOB_ROW_WITH_FINDINGS (its columns after the job's), and whether the
    job has forks."""
    return counts_resource(row[_COUNTS]), bool(row[_COUNTS.stop])


def job_row_recent(row: Any) -> RecentEpochs:
    """The latest epochs of a row of JOB_ROW_WITH_FINDINGS (its last columns)."""
    return recent_epochs(row[_COUNTS.stop + 1:_COUNTS.stop + 1 + len(RECENT_EPOCH_COLUMNS)])


# ------------------------------------------------------------------------------------------ job list

# What a list page reads of each job: the columns its body needs, not the ones it never shows (resume_state,
# trial_params, keys, ...), and its JSON documents as the database's text (`<name>_json`), which
# `job_list_json` splices into the body as it is: a page of 200 jobs spent most of its time decoding the
# rows' JSON into ORM objects and encoding it again. Postgres only (`?`); SQLite lists through the ORM.
_LISTED_COLUMNS = ("id", "tenant_id", "name", "status", "created_at", "started_at", "finished_at", "epoch",
                   "epochs", "best_monitor", "best_value", "best_epoch", "stop_reason", "error_code",
                   "error_message", "attempts", "cancel_requested", "model_info", "resource_class", "sweep_id",
                   "trial_index", "parent_id", "parent_from", "parent_patch", "parent_findings",
                   "initial_weights_epoch", "replay_of", "enqueued_at")
# (`enqueued_at` is in no body: a page's queue positions are ranked up to its last-sent job, `queue_positions`.)
_LISTED_DOCUMENTS = ("labels", "spec", "test_metrics", "environment", "reproduction")


def _job_list_rows() -> Any:
    jobs, running = Job.__table__, Job.status == "running"
    spec = type_coerce(jobs.c.spec, JSONB)
    return select(
        *(jobs.c[name] for name in _LISTED_COLUMNS),
        *(cast(jobs.c[name], Text).label(f"{name}_json") for name in _LISTED_DOCUMENTS),
        # A spec stored before resources or labels existed is normalized (`normalized_spec`), not spliced.
        (spec.has_key("resources") & spec.has_key("labels")).label("spec_current"),
        # Decoded only while running: a running job's estimate reads its early stopping from them.
        case((running, jobs.c.spec)).label("spec"), case((running, jobs.c.resume_state)).label("resume_state"),
        *per_severity_counts(), _has_children(), *VERSION_COLUMNS, *RECENT_EPOCH_COLUMNS)


# A list page's jobs in full, by id (`ids`, within `tenant_id`), in no order; read as `ListedJob`s (`listed`).
JOB_LIST_ROWS = _job_list_rows().where(Job.id == any_(bindparam("ids", type_=ARRAY(String))),
                                       Job.tenant_id == bindparam("tenant_id"))
# A plain named tuple reads a column by name several times faster than SQLAlchemy's Row, and a page's bodies
# read some 40 columns of each of up to 200 rows.
ListedJob = namedtuple("ListedJob", list(JOB_LIST_ROWS.selected_columns.keys()), rename=True)  # type: ignore[misc]
_LIST_COUNTS = slice(len(_LISTED_COLUMNS) + len(_LISTED_DOCUMENTS) + 3,
                     len(_LISTED_COLUMNS) + len(_LISTED_DOCUMENTS) + 3 + len(SEVERITIES))
_LIST_RECENT = _LIST_COUNTS.stop + 1 + len(VERSION_COLUMNS)
# Which jobs a list page holds, in its order (trainyard/job_search.py adds the filters, order and limit):
# each job's sort keys (the next page's cursor) and its version. Only the jobs an API process has no
# current list item for are then read in full (JOB_LIST_ROWS; `paged_version` and `listed_version` read
# the same version from either).
_PAGED_KEYS = (Job.id, Job.status, Job.created_at, Job.best_value)
JOB_LIST_VERSIONS = select(*_PAGED_KEYS, *per_severity_counts(), *VERSION_COLUMNS)


def listed_version(row: Any) -> tuple[Any, ...]:
    """The version of a JOB_LIST_ROWS row (its finding counts, `xmin` and forks), as `paged_version` reads it."""
    return (*row[_LIST_COUNTS], row.row_version, row.children_sig)


# A JOB_LIST_VERSIONS row ends with its version: the finding counts, then VERSION_COLUMNS.
_PAGED_VERSION = slice(len(_PAGED_KEYS), None)


def paged_version(row: Any) -> tuple[Any, ...]:
    """The version of a JOB_LIST_VERSIONS row, as `listed_version` reads it (one slice: a page reads up to 200)."""
    return tuple(row[_PAGED_VERSION])


def listed(rows: Iterable[Any]) -> list[Any]:
    """Rows of JOB_LIST_ROWS as `ListedJob`s."""
    return [ListedJob._make(row) for row in rows]


def listed_forked(row: Any) -> bool:
    """Whether the job of a JOB_LIST_ROWS row has forks (only then are their ids read)."""
    return bool(row[_LIST_COUNTS.stop])


def listed_recent(row: Any) -> RecentEpochs:
    """The latest epochs of a JOB_LIST_ROWS row (null unless it runs)."""
    return recent_epochs(row[_LIST_RECENT:])


def job_list_items(rows: list[Any], positions: dict[str, int], etas: dict[str, eta.Eta],
                   children: dict[str, list[str]]) -> list[str]:
    """The jobs of `ListedJob` rows as JSON text, one each, as GET /v1/jobs holds them (`job_list_json`): the
    same resources as `job_resource` builds, their JSON documents and links spliced in as text. Each is a
    stand-in string while the rest is encoded (a random marker and its index, which no stored text can
    contain: it is drawn for this page), then replaced."""
    marker = "\x1f" + secrets.token_hex(8)  # encoded as "\u001f<hex>"
    quoted = json.dumps(marker)[:-1]
    links = _links_json_template()
    dumps = current_app.json.dumps
    items = []
    for row in rows:
        pieces: list[str] = []

        def splice(text: str) -> str:
            pieces.append(text)
            return f"{marker}{len(pieces) - 1}"

        def document(text: str | None) -> str | None:
            return None if text is None or text == "null" else splice(text)

        spec = splice(row.spec_json) if row.spec_current else normalized_spec(json.loads(row.spec_json))
        body = _job_body(
            row, counts_resource(row[_LIST_COUNTS]), positions.get(row.id), etas.get(row.id), children.get(row.id),
            labels=document(row.labels_json) or {}, spec=spec, test_metrics=document(row.test_metrics_json),
            environment=document(row.environment_json), reproduction=document(row.reproduction_json),
            links=splice(row.id.join(links)))
        head, *rest = dumps(body, separators=(",", ":")).split(quoted)
        out = [head]
        for part in rest:  # "<index>" and the text after the stand-in
            index, tail = part.split('"', 1)
            out += (pieces[int(index)], tail)
        items.append("".join(out))
    return items


def job_list_json(items: list[str], next_cursor: str | None) -> str:
    """GET /v1/jobs's body from its jobs' JSON texts (`job_list_items`), as the app's encoder writes it."""
    return f'{{"jobs":[{",".join(items)}],"next_cursor":{json.dumps(next_cursor)}}}\n'


# ------------------------------------------------------------------------------------------- metrics


def metrics_item(row: EpochMetrics) -> dict[str, Any]:
    """One item of GET /v1/jobs/{id}/metrics, from an ORM row (the events stream's `epoch` events)."""
    return {"epoch": row.epoch, **row.values}


def metrics_json(rows: Iterable[tuple[int, str]]) -> str:
    """GET /v1/jobs/{id}/metrics from (epoch, the row's values as the database's JSON text): a long run has
    thousands of epochs, so each row's text is spliced into the body, never decoded and encoded again."""
    return f'{{"epochs":[{",".join(_epoch_object(epoch, values) for epoch, values in rows)}]}}\n'


def _epoch_object(epoch: int, values_json: str) -> str:
    """`{"epoch": N, ...values}` from a row's JSON object text, by splicing the epoch in after its `{`."""
    rest = values_json.strip()[1:].lstrip()
    return f'{{"epoch":{int(epoch)}}}' if rest.startswith("}") else f'{{"epoch":{int(epoch)},{rest}'


# ------------------------------------------------------------------------- diagnostics and findings

VARIABLE_FIELDS = ("layer", "name", "grad_norm", "weight_norm", "update_norm", "update_ratio",
                   "zero_grad_fraction")


def finding_resource(f: Finding) -> dict[str, Any]:
    return {
        # (job, code, layer) is the row's unique key: the id is unique in the job and stable across epochs,
        # the same as the trainer's (workers/trainer/diagnostics/findings.py finding_id).
        "id": finding_key(f.code, f.layer),
        "code": f.code,
        "severity": f.severity,
        "message": f.message,
        "evidence": f.evidence,
        "layer": f.layer or None,  # stored as "" for model-wide findings
        "epoch": f.epoch,
        "suggested_change": f.suggested_change,
        "suggested_change_basis": f.suggested_change_basis,
        # Set when a fork that applied this finding ended (trainyard/lifecycle.py settle_applied_findings).
        "resolved_by": ({"job_id": f.resolved_by_job_id, "resolved": bool(f.resolved)}
                        if f.resolved_by_job_id is not None else None),
        "updated_at": iso(f.updated_at),
    }


def findings_ranked(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    """Findings, most severe first, then by epoch, code and layer."""
    return ranked(finding_resource(f) for f in findings)


def diagnostics_epoch(row: EpochDiagnostics) -> dict[str, Any]:
    return {
        "epoch": row.epoch,
        "learning_rate": row.learning_rate,
        "loss": row.loss,
        "variables": [{k: v.get(k) for k in VARIABLE_FIELDS} for v in row.variables],
    }


# ------------------------------------------------------------------------------- checkpoints and logs


def checkpoint_resource(c: Checkpoint) -> dict[str, Any]:
    return {
        "epoch": c.epoch,
        "monitor": c.monitor,
        "value": c.value,
        "size": c.size_bytes,
        "sha256": c.sha256,
        "created_at": iso(c.created_at),
        "is_best": c.is_best,
    }


def log_resource(r: JobLog) -> dict[str, Any]:
    return {"seq": r.seq, "time": iso(r.created_at), "level": r.level, "logger": r.logger,
            "message": r.message, "worker_id": r.worker_id}


# ------------------------------------------------------------------------------------------ datasets


def dataset_resource(row: Dataset) -> dict[str, Any]:
    # The summary goes first so that none of its keys can shadow the record's own fields.
    return {
        **row.info,
        "id": row.id,
        "name": row.name,
        "builtin": False,
        "format": row.format,
        "size": row.size_bytes,
        "sha256": row.sha256,
        "created_at": iso(row.created_at),
        "links": {"self": url_for("datasets.get_dataset", dataset_id=row.id)},
    }


def builtin_resource(info: DatasetInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "name": info.id.split(":", 1)[1],
        "builtin": True,
        "task": info.task,
        "n_classes": info.n_classes,
        "input_shape": list(info.input_shape),
        "target_shape": list(info.target_shape),
        "splits": {"train": info.train_samples, "val": None, "test": info.test_samples or None},
        "links": {"self": url_for("datasets.get_dataset", dataset_id=info.id)},
    }


# -------------------------------------------------------------------------------------------- sweeps

TRIAL_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def trial_resource(position: int | None, job: Job, results: dict[str, Any] | None = None) -> dict[str, Any]:
    results = results or {}
    return {
        "rank": position,
        "trial": job.trial_index,
        "job_id": job.id,
        "status": job.status,
        "stop_reason": job.stop_reason,
        "params": job.trial_params,
        "value": job.best_value,
        "best_epoch": job.best_epoch,
        "epochs": job.epoch,
        "values": results.get("values", {}).get(job.trial_index),
        "intermediate_values": results.get("curves", {}).get(job.trial_index, []),
        "links": {"job": url_for("jobs.get_job", job_id=job.id)},
    }


def sweep_resource(sweep: Sweep, counts: dict[str, int], ranked: list[tuple[int | None, Job]] | None = None,
                   best: Job | None = None, results: dict[str, Any] | None = None) -> dict[str, Any]:
    """A sweep; with `ranked` (and `results`, trainyard.sweeps.controller.results), its trials too (only
    `GET /v1/sweeps/{id}` lists them)."""
    config = dict(sweep.config)
    # Sweeps accepted before algorithms existed drew a grid or random values from their seed.
    config.setdefault("algorithm", {"type": "grid" if all(p["type"] == "grid" for p in config["search"].values())
                                    else "random", "seed": config["seed"]})
    config.setdefault("objectives", None)
    body: dict[str, Any] = {
        "id": sweep.id,
        "name": sweep.name,
        "status": sweep.status,
        "created_at": iso(sweep.created_at),
        "finished_at": iso(sweep.finished_at),
        **config,
        "base": sweep.base,
        "progress": {"submitted": sweep.trials_submitted, "max_trials": config["max_trials"],
                     "by_status": {status: counts.get(status, 0) for status in TRIAL_STATUSES}},
        "error": {"code": sweep.error_code, "message": sweep.error_message} if sweep.error_code else None,
        "links": {"self": url_for("sweeps.get_sweep", sweep_id=sweep.id),
                  "cancel": url_for("sweeps.cancel_sweep", sweep_id=sweep.id),
                  "resume": url_for("sweeps.resume_sweep", sweep_id=sweep.id)},
    }
    if ranked is not None:
        results = results or {}
        body["best_job_id"] = best.id if best else None
        body["best"] = trial_resource(next(p for p, j in ranked if j is best), best, results) if best else None
        body["trials"] = [trial_resource(position, job, results) for position, job in ranked]
        body["pareto_front"] = results.get("pareto_front")
        body["importance"] = results.get("importance")
        if best is not None:
            body["links"]["best_checkpoint"] = url_for("checkpoints.download_best", job_id=best.id)
    return body


# ------------------------------------------------------------------------------------------- compare


def compare_resource(jobs: list[Job], runs: list[dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """GET /v1/jobs/compare: the jobs (in the order asked), what differs in their specs and environments,
    their per-epoch metrics side by side, and where the runs of jobs with the same seed part
    (trainyard/compare.py); `runs` holds each job's epochs, in the same order."""
    ids = [job.id for job in jobs]
    names, epochs = compare.side_by_side(runs)
    seeds = [(normalized_spec(job.spec).get("training") or {}).get("seed") for job in jobs]
    return {
        "jobs": [{"id": job.id, "name": job.name, "status": job.status, "seed": seed,
                  "best": ({"monitor": job.best_monitor, "value": job.best_value, "epoch": job.best_epoch}
                           if job.best_epoch is not None else None),
                  "epochs_run": len(run), "replay_of": job.replay_of,
                  "links": {"self": url_for("jobs.get_job", job_id=job.id)}}
                 for job, seed, run in zip(jobs, seeds, runs)],
        "spec_diff": compare.document_diff([normalized_spec(job.spec) for job in jobs]),
        "environment_diff": compare.document_diff([job.environment for job in jobs]),
        "metrics": names,
        "epochs": epochs,
        "pairs": compare.pair_divergence(ids, seeds, runs),
    }
