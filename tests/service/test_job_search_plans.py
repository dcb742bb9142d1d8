"""Every filter and sort of `GET /v1/jobs` reads an index on Postgres, on a later page as on the first.

A few thousand jobs are written straight into the session database (tenants of different sizes, labels,
names, best values with some missing), analysed, and the very statements the list runs
(`trainyard.job_search.page_queries`) are explained for each combination, first page and a later one.
No plan may read `jobs` or `job_labels` sequentially. Where the list pages in index order (newest first
without a label, or driven by a label's rows; by best value), the plan has no sort of its rows either: a
later page costs what the first does. The plans are printed (`pytest -s`) for the record.
"""
from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text

from service.api.jobs import _COUNT_ACTIVE
from service.api.status_cache import JOB_VERSIONS
from service.api.representations import (
    JOB_LIST_ROWS,
    JOB_LIST_VERSIONS,
    JOBS_WITH_FINDINGS,
    QUEUE_POSITION_OF,
    SUBMITTED_QUEUE,
)
from tests.conftest import tiny_spec
from trainyard.db.models import Job, JobLabel, Tenant, new_id
from trainyard.job_search import SORTS, JobSearch, LabelFilter, page_queries
from trainyard.spec import validate_spec

TENANT_JOBS = 3000
OTHER_TENANTS, OTHER_JOBS = 5, 800
NAMES = ("mnist", "cifar", "digits", "iris", "housing")
TEAMS = ("vision", "nlp", "speech", "tabular")


@pytest.fixture(scope="module")
def population(app: Any) -> Any:
    """(tenant id, one job's (created_at, id) and (best_value, id) in the middle of the list)."""
    db = app.extensions["trainyard"].db
    rng = random.Random(18)
    spec = validate_spec(tiny_spec())
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    tenants = [new_id("tn") for _ in range(OTHER_TENANTS + 1)]
    jobs, labels = [], []
    for t, tenant in enumerate(tenants):
        for i in range(TENANT_JOBS if t == 0 else OTHER_JOBS):
            job_id = new_id("job")
            created = t0 + timedelta(seconds=i // 3)  # three jobs per timestamp: ties are broken by id
            job_labels = {"team": TEAMS[i % 4], "exp": f"e{i % 60}"}
            if i % 10 == 0:
                job_labels["baseline"] = ""
            status = ("succeeded", "running", "queued", "cancelled")[i % 4]
            jobs.append({"id": job_id, "tenant_id": tenant, "name": f"{NAMES[i % 5]}-run-{i}", "status": status,
                         "spec": spec, "created_at": created, "epochs": 3, "labels": job_labels,
                         "best_value": None if i % 7 == 0 else rng.uniform(0, 2), "best_epoch": 1})
            labels += [{"job_id": job_id, "key": k, "value": v, "tenant_id": tenant, "created_at": created}
                       for k, v in job_labels.items()]
    with db.session() as s:
        s.execute(insert(Tenant), [{"id": t, "name": f"plans-{t}"} for t in tenants])
        s.execute(insert(Job), jobs)
        s.execute(insert(JobLabel), labels)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("ANALYZE job_labels"))
    middle = sorted((j for j in jobs if j["tenant_id"] == tenants[0] and j["best_value"] is not None),
                    key=lambda j: j["best_value"])[TENANT_JOBS // 3]
    yield tenants[0], (middle["created_at"], middle["id"]), (middle["best_value"], middle["id"])
    with db.session() as s:
        s.execute(delete(Tenant).where(Tenant.id.in_(tenants)))


SEARCHES = {
    "no filter": {},
    "status": {"status": "succeeded"},
    "label key:value": {"labels": (LabelFilter("team", "vision"),)},
    "label key": {"labels": (LabelFilter("baseline"),)},
    "two labels": {"labels": (LabelFilter("team", "nlp"), LabelFilter("exp", "e13"))},
    "name": {"name": "cifar"},
    "rare name": {"name": "RUN-2345"},
    "label, status and name": {"labels": (LabelFilter("team", "vision"),), "status": "succeeded", "name": "mnist"},
}
# Where the list reads rows in the order it pages them: no sort node may appear in their plans.
IN_INDEX_ORDER = {(sort, search) for sort in SORTS for search in ("no filter", "label key:value", "label key")} \
    - {("-best_value", "label key:value"), ("best_value", "label key:value"),
       ("-best_value", "label key"), ("best_value", "label key")}


def explain(app: Any, stmt: Any, options: str = "") -> str:
    """Postgres' plan of `stmt` (`options`: EXPLAIN's own, "(ANALYZE, COSTS OFF)" runs it too)."""
    db = app.extensions["trainyard"].db
    compiled = stmt.compile(dialect=db.engine.dialect)
    with db.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"EXPLAIN {options} " + str(compiled), compiled.params).all()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("name", list(SEARCHES))
def test_every_filter_and_sort_reads_an_index(app: Any, population: Any, sort: str, name: str) -> None:
    tenant, created_position, value_position = population
    search = JobSearch(tenant_id=tenant, sort=sort, **SEARCHES[name])
    pages = [("first page", None), ("later page", created_position if sort == "-created_at" else value_position)]
    if sort != "-created_at":
        pages.append(("later page among the jobs without a value", (None, value_position[1])))
    for page, after in pages:
        for stmt in page_queries(JOB_LIST_VERSIONS, search, after, 21):  # what the list runs on Postgres
            plan = explain(app, stmt)
            print(f"\n--- sort={sort} {name}, {page}\n{plan}")
            assert "Seq Scan on jobs" not in plan and "Seq Scan on job_labels" not in plan, plan
            assert any(scan in plan for scan in ("Index Scan", "Index Only Scan", "Bitmap Index Scan")), plan
            if name == "rare name" and sort == "-created_at":  # one job in 3,000: the trigrams find it
                assert "ix_jobs_name_trgm" in plan, plan
            if (sort, name) in IN_INDEX_ORDER:
                top = plan.split("SubPlan")[0]  # the finding counts' subplans come after the page's own plan
                assert "Sort" not in top, plan


def test_a_pages_jobs_not_kept_by_the_api_process_are_read_in_full_by_their_primary_key(
        app: Any, population: Any) -> None:
    # A list page reads which jobs it holds (JOB_LIST_VERSIONS, above), then in full only those an API
    # process has no current item for (JOB_LIST_ROWS, by id): that read probes the primary key per job.
    tenant, _, _ = population
    db = app.extensions["trainyard"].db
    with db.session() as s:
        ids = list(s.execute(select(Job.id).where(Job.tenant_id == tenant).limit(200)).scalars())
    plan = explain(app, JOB_LIST_ROWS.params(ids=ids, tenant_id=tenant))
    assert "jobs_pkey" in plan and "Seq Scan on jobs" not in plan, plan
    # So are the versions of the polls of stored ended jobs that share one query (status_cache.VersionReads).
    plan = explain(app, JOB_VERSIONS.params(ids=ids[:30], tenants=[tenant] * 30))
    assert "jobs_pkey" in plan and "Seq Scan on jobs" not in plan, plan


def test_the_explained_statements_page_through_every_match_once_in_order(app: Any, population: Any) -> None:
    """The statements explained above, run page by page as the list runs them, give what a plain sort of
    the matching rows gives: the jobs with a value best first, then those without one."""
    tenant, _, _ = population
    db = app.extensions["trainyard"].db
    with db.session() as s:
        rows = s.execute(select(Job.id, Job.best_value, Job.labels).where(Job.tenant_id == tenant)).all()
    search = JobSearch(tenant_id=tenant, sort="-best_value", labels=(LabelFilter("exp", "e7"),))
    with db.read_session() as s:
        got: list[str] = []
        after = None
        while True:
            page: list[Any] = []
            for stmt in page_queries(JOBS_WITH_FINDINGS, search, after, 5):
                page += [row[0] for row in s.execute(stmt.limit(5 - len(page)))]
                if len(page) >= 5:
                    break
            got += [job.id for job in page]
            if len(page) < 5:
                break
            after = (page[-1].best_value, page[-1].id)
    matching = [r for r in rows if r.labels.get("exp") == "e7"]
    with_value = sorted((r for r in matching if r.best_value is not None), key=lambda r: (r.best_value, r.id),
                        reverse=True)
    without = sorted((r.id for r in matching if r.best_value is None), reverse=True)
    assert got == [r.id for r in with_value] + without


def generic_plan(app: Any, stmt: Any, params: dict[str, Any]) -> str:
    """The plan Postgres keeps for `stmt` once psycopg has prepared it (from its fifth run on a connection)
    and Postgres has settled on a generic plan: planned without the parameters' values."""
    from psycopg import sql

    db = app.extensions["trainyard"].db
    expanded = stmt.compile(dialect=db.engine.dialect).construct_expanded_state(params)
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    statement = re.sub(r"%\((\w+)\)s", number, expanded.statement)
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.execute("SET plan_cache_mode = force_generic_plan")
        raw.execute("PREPARE plan_check AS " + statement)
        try:
            values = sql.SQL(", ").join(sql.Literal(expanded.parameters[name]) for name in names).as_string(raw)
            rows = raw.execute(f"EXPLAIN EXECUTE plan_check({values})").fetchall()
        finally:
            raw.execute("DEALLOCATE plan_check")
            raw.execute("RESET plan_cache_mode")
        conn.rollback()
    return "\n".join(row[0] for row in rows)


def test_submission_statements_keep_their_indexes_in_a_prepared_statements_generic_plan(app: Any, population: Any) -> None:
    # psycopg prepares a statement a connection runs for the fifth time, and Postgres may then plan it once
    # for any parameters: `status = $1` cannot use the partial index of queued jobs, and the submission's 201
    # counted its class's queue through another index (47 ms under bench/scale.py's flood). The statuses the
    # estimate counts by are planned as what they are too (which index then serves them depends on how many
    # jobs have them: here a quarter of all jobs run, and Postgres reads the table for them).
    tenant, _, _ = population
    job_id, resource_class = new_id("job"), "cpu"  # a generic plan is the same whatever the values
    checks = [("one job's position", QUEUE_POSITION_OF, {"id": job_id}, "ix_jobs_queue"),
              ("a submission's position and estimate", SUBMITTED_QUEUE,
               {"id": job_id, "tenant_id": tenant, "resource_class": resource_class}, "ix_jobs_queue"),
              # (which index serves it depends on the tenant's size, unknown to a generic plan)
              ("a submission's quota count", _COUNT_ACTIVE, {"tenant": tenant}, "")]
    for what, stmt, params, index in checks:
        plan = generic_plan(app, stmt, params)
        print(f"\n--- {what}, generic plan\n{plan}")
        assert index in plan, plan
        assert not re.search(r"status\)::text = (\(\$|ANY \(\(?ARRAY\[\$)", plan), plan  # no status bound as a parameter


def test_a_submissions_queue_position_is_counted_once_whatever_its_tenants_history(app: Any) -> None:
    # The 201's statement joins the job's position to its tenant's recent run times (one row each): the count
    # of the queue ahead must run once, not once per run time (as a plain subquery, Postgres pulled it up
    # into every joined row).
    db = app.extensions["trainyard"].db
    tenant, t0 = new_id("tn"), datetime(2026, 4, 1, tzinfo=timezone.utc)
    spec = validate_spec(tiny_spec())
    runs = [{"id": new_id("job"), "tenant_id": tenant, "status": "succeeded", "spec": spec, "epochs": 1,
             "resource_class": "cpu", "created_at": t0 + timedelta(minutes=i),
             "started_at": t0 + timedelta(minutes=i, seconds=1), "finished_at": t0 + timedelta(minutes=i, seconds=9)}
            for i in range(6)]
    queued = {"id": new_id("job"), "tenant_id": tenant, "status": "queued", "spec": spec, "epochs": 1,
              "resource_class": "cpu", "created_at": datetime.now(timezone.utc),
              "enqueued_at": datetime.now(timezone.utc)}  # marked sent: the outbox sweep leaves it alone
    with db.session() as s:
        s.execute(insert(Tenant), [{"id": tenant, "name": f"plans-{tenant}"}])
        s.execute(insert(Job), runs + [queued])
    try:
        stmt = SUBMITTED_QUEUE.params(id=queued["id"], tenant_id=tenant, resource_class="cpu")
        plan = explain(app, stmt, "(ANALYZE, COSTS OFF)")
        print(plan)
        with db.engine.connect() as conn:
            result = conn.execute(stmt).all()
        assert len(result) == 6 and len({row[0] for row in result}) == 1  # one row per run, one position
        scans = [line for line in plan.splitlines() if "ix_jobs_queue" in line]
        assert scans and all("loops=1)" in line for line in scans), plan
    finally:
        with db.session() as s:
            s.execute(delete(Job).where(Job.tenant_id == tenant))
            s.execute(delete(Tenant).where(Tenant.id == tenant))
