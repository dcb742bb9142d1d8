"""Finding a tenant's jobs: filters (status, labels, a name substring) and sort orders, paged by keyset.

Every filter and sort has an index that holds its rows in page order, so a page starts at its cursor rather
than counting or skipping rows (page 200 costs what page 1 does); where a filter is selective, Postgres may
instead read the few matching rows from another index and sort them (tests show the plans):
- `-created_at` (the default): `ix_jobs_tenant_created` (or `ix_jobs_tenant_status_created`); with a label
  filter, the first label with a value (else the first) drives the scan on `job_labels`, whose index holds
  (tenant, key, value, created_at, job_id) in the order pages are read; any further labels are checked by
  their primary key (job_id, key), or their own index.
- `-best_value` / `best_value`: `ix_jobs_tenant_best` (tenant, best_value, id) read backward or forward, then
  the jobs that have no best value yet (queued, or no epoch done), by id on the same index: nulls come last
  in either direction, as two range scans rather than one sort.
- `name`: a case-insensitive substring; on Postgres the planner may answer it from the trigram index
  `ix_jobs_name_trgm`, on SQLite it filters the tenant's rows as the scan reads them.

Ties are broken by id, so every job is listed once across pages. The plans:
tests/service/test_job_search_plans.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, exists, tuple_
from sqlalchemy.orm import aliased

from trainyard.db.models import Job, JobLabel

NEWEST_FIRST = "-created_at"
SORTS = (NEWEST_FIRST, "-best_value", "best_value")


@dataclass(frozen=True)
class LabelFilter:
    key: str
    value: str | None = None  # None: the job has the key, whatever its value


@dataclass(frozen=True)
class JobSearch:
    tenant_id: str
    status: str | None = None
    labels: tuple[LabelFilter, ...] = field(default_factory=tuple)
    name: str | None = None
    sort: str = NEWEST_FIRST


# Where the previous page ended: (created_at, id) for -created_at, (best_value or None, id) for the others.
Position = tuple[Any, str]


def position_of(job: Any, sort: str) -> Position:
    """The sort key of `job` (a row of the page), which the next page starts after."""
    return (job.created_at, job.id) if sort == NEWEST_FIRST else (job.best_value, job.id)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _filtered(base: Select[Any], search: JobSearch, labels: tuple[LabelFilter, ...]) -> Select[Any]:
    stmt = base.where(Job.tenant_id == search.tenant_id)
    if search.status:
        stmt = stmt.where(Job.status == search.status)
    if search.name:
        stmt = stmt.where(Job.name.ilike(f"%{_escape_like(search.name)}%", escape="\\"))
    for label in labels:
        # The tenant too: the planner may then read the label's rows of this tenant from its index rather
        # than probe each job by primary key, whichever is cheaper.
        cond = [JobLabel.job_id == Job.id, JobLabel.tenant_id == search.tenant_id, JobLabel.key == label.key]
        if label.value is not None:
            cond.append(JobLabel.value == label.value)
        stmt = stmt.where(exists().where(*cond))
    return stmt


def newest_first(base: Select[Any], search: JobSearch, after: Position | None, limit: int) -> Select[Any]:
    """One page of `-created_at`, after `after` (created_at, id)."""
    if not search.labels:
        stmt = _filtered(base, search, ())
        if after is not None:
            # A row-value comparison, not `a < x OR (a = x AND id < y)`: Postgres turns it into a bound on the
            # (tenant_id, [status,] created_at, id) index, so page 200 costs what page 1 does.
            stmt = stmt.where(tuple_(Job.created_at, Job.id) < tuple_(*after))
        return stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    driver = next((label for label in search.labels if label.value is not None), search.labels[0])
    rest = tuple(label for label in search.labels if label is not driver)
    row = aliased(JobLabel, name="driver")
    stmt = _filtered(base, search, rest).join(row, row.job_id == Job.id).where(
        row.tenant_id == search.tenant_id, row.key == driver.key)
    if driver.value is not None:
        stmt = stmt.where(row.value == driver.value)
    if after is not None:
        stmt = stmt.where(tuple_(row.created_at, row.job_id) < tuple_(*after))
    return stmt.order_by(row.created_at.desc(), row.job_id.desc()).limit(limit)


def by_best_value(base: Select[Any], search: JobSearch, after: Position | None, limit: int,
                  *, with_value: bool) -> Select[Any]:
    """One part of a best-value page: the jobs that have a best value (`with_value`), in the search's
    direction after `after`, or those without one, by id. A page reads the first part, then the second
    when the first ran out."""
    descending = search.sort.startswith("-")
    stmt = _filtered(base, search, search.labels)
    if with_value:
        stmt = stmt.where(Job.best_value.is_not(None))
        if after is not None:
            key, bound = tuple_(Job.best_value, Job.id), tuple_(*after)
            stmt = stmt.where(key < bound if descending else key > bound)
        order = (Job.best_value.desc(), Job.id.desc()) if descending else (Job.best_value, Job.id)
    else:
        stmt = stmt.where(Job.best_value.is_(None))
        if after is not None:
            stmt = stmt.where(Job.id < after[1] if descending else Job.id > after[1])
        # By the (null) value too: Postgres does not take `IS NULL` as fixing the column, and would read the
        # whole primary key in id order rather than this tenant's null range of ix_jobs_tenant_best.
        order = (Job.best_value.desc(), Job.id.desc()) if descending else (Job.best_value, Job.id)
    return stmt.order_by(*order).limit(limit)


def page_queries(base: Select[Any], search: JobSearch, after: Position | None, limit: int) -> list[Select[Any]]:
    """The statements that read one page of at most `limit` rows, in order: run them one after another
    until `limit` rows are read. `base` selects from `Job` (and may add columns)."""
    if search.sort == NEWEST_FIRST:
        return [newest_first(base, search, after, limit)]
    if after is not None and after[0] is None:  # the last page ended among the jobs without a value
        return [by_best_value(base, search, after, limit, with_value=False)]
    return [by_best_value(base, search, after, limit, with_value=True),
            by_best_value(base, search, None, limit, with_value=False)]
