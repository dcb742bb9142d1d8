"""GET /v1/jobs on Postgres builds its bodies from Core rows, splicing the jobs' JSON documents in as the
database's text (service/api/jobs.py `_list_page_json`): it must answer what the ORM path (`_list_page`,
`job_resource` on Job objects, as the status poll and SQLite build them) answers, key for key and in the
same order, for every kind of job, and it must not fall back to loading ORM objects."""
from __future__ import annotations

import json
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select

from service.api.jobs import _list_page, _list_page_json
from tests.conftest import tiny_spec
from trainyard.db.models import EpochMetrics, Job, utcnow
from trainyard.job_search import JobSearch, LabelFilter


def _jobs_of_every_kind(app: Any, client: Any, auth: dict[str, str]) -> str:
    """A tenant's jobs covering each part of a job's body; its tenant id."""
    svc = app.extensions["trainyard"]
    first = client.post("/v1/jobs", json=tiny_spec(labels={"team": "vision"}), headers=auth).get_json()
    now = utcnow()
    cls = f"gpu-{1000 + secrets.randbelow(10**6)}"  # its own class: our queue positions
    with svc.db.session() as s:
        tenant, spec = s.execute(select(Job.tenant_id, Job.spec).where(Job.id == first["id"])).one()
        # Numbers the database writes otherwise than Python (1e-07, 1e+20), and text beyond ASCII.
        odd_spec = {**spec, "optimizer": {**spec["optimizer"], "epsilon": 1e-07, "clipnorm": 1e20},
                    "labels": {"équipe": "vision ✓"}}
        old_spec = {k: v for k, v in spec.items() if k not in ("resources", "labels")}  # stored before both

        def job(i: int, **fields: Any) -> Job:
            created = now - timedelta(minutes=60 - i)
            base = {"tenant_id": tenant, "name": f"kind-{i}", "spec": spec, "epochs": 10, "resource_class": cls,
                    "created_at": created, "labels": {"team": "vision", "n": str(i)}}
            return Job(**{**base, **fields})

        succeeded = [job(i, status="succeeded", epoch=10, attempts=1, started_at=now - timedelta(minutes=50 - i),
                         finished_at=now - timedelta(minutes=45 - i), best_monitor="val_loss", best_value=0.5 + i,
                         best_epoch=7, stop_reason="completed", test_metrics={"loss": 0.25, "accuracy": 0.75},
                         environment={"python": "3.11.7", "packages": {"keras": "3.0"}, "gpus": []},
                         model_info={"params": 100, "trainable_params": 90, "normalization": {"x": [0.5]},
                                     "learning_rate_chosen": 0.001, "timings": {"fit": 1.5}})
                     for i in range(3)]
        s.add_all(succeeded)
        s.flush()
        others = [
            job(3, name="modèle ✓ \"quoted\"", spec=odd_spec, labels={"équipe": "vision ✓"}, status="failed",
                started_at=now - timedelta(minutes=40), finished_at=now - timedelta(minutes=39), attempts=1,
                error_code="nan_loss", error_message="The loss became NaN."),
            job(4, spec=old_spec, labels=None, status="cancelled", cancel_requested=True),
            job(5, status="queued", enqueued_at=now - timedelta(minutes=5)),
            job(6, status="queued"),
            job(7, status="running", epoch=3, attempts=1, started_at=now - timedelta(minutes=3),
                resume_state={"epoch": 2, "callbacks": {"early_stopping": {"wait": 1}}}),
            job(8, status="succeeded", parent_id=succeeded[0].id, parent_from="best", initial_weights_epoch=7,
                parent_patch={"optimizer": {"learning_rate": 0.01}}, parent_findings=["lr_too_high"]),
            job(9, status="succeeded", replay_of=succeeded[1].id,
                reproduction={"verdict": "identical", "max_abs_diff": 0.0}),
        ]
        s.add_all(others)
        s.flush()
        s.add_all(EpochMetrics(job_id=others[4].id, epoch=e, values={"loss": 1.0 / e, "seconds": 0.5 + e / 10},
                               created_at=now - timedelta(seconds=30 * (4 - e))) for e in (1, 2, 3))
    return tenant


def _same(db: Any, search: JobSearch, after: Any, limit: int, now: Any) -> dict[str, Any]:
    """The page by both paths: keys in the same order, the same values (the spliced documents keep the
    database's spacing). Queue positions and estimates count every tenant's queued and running jobs, which
    the session's worker may move between the two reads (it finishes other tests' jobs): read again then."""
    for _ in range(5):
        fast, slow = _list_page_json(db, search, after, limit, now), _list_page(db, search, after, limit, now)
        if json.dumps(json.loads(fast)) == json.dumps(slow):
            break
    assert json.dumps(json.loads(fast)) == json.dumps(slow)
    return slow


def test_list_bodies_are_the_orm_bodies(app: Any, make_token: Any) -> None:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(f'list-json-{secrets.token_hex(3)}')}"}
    tenant = _jobs_of_every_kind(app, client, auth)
    db = app.extensions["trainyard"].db
    now = utcnow()
    with app.test_request_context("/v1/jobs"):
        whole = json.loads(_list_page_json(db, JobSearch(tenant_id=tenant), None, 200, now))
        jobs = {job["name"]: job for job in whole["jobs"]}
        # Every part was exercised: a queue position and estimates, a fork and its parent, a replay.
        assert jobs["kind-5"]["queue"] is not None and jobs["kind-5"]["eta"] is not None
        assert jobs["kind-7"]["eta"] is not None and jobs["kind-7"]["eta"]["basis"]
        assert jobs["kind-0"]["children"] and jobs["kind-8"]["parent"]["patch"]
        assert jobs["kind-4"]["labels"] == {} and "resources" in jobs["kind-4"]["spec"]
        assert jobs['modèle ✓ "quoted"']["spec"]["optimizer"]["epsilon"] == 1e-07
        for search in (JobSearch(tenant_id=tenant), JobSearch(tenant_id=tenant, sort="-best_value"),
                       JobSearch(tenant_id=tenant, sort="best_value", labels=(LabelFilter("team", "vision"),)),
                       JobSearch(tenant_id=tenant, status="queued")):
            _same(db, search, None, 200, now)
            after = None
            for _ in range(5):  # page by page, with the cursors
                slow = _same(db, search, after, 3, now)
                if slow["next_cursor"] is None:
                    break
                last = slow["jobs"][-1]
                row = next(r for r in whole["jobs"] if r["id"] == last["id"])
                with db.read_session() as s:
                    created_at, best_value = s.execute(select(Job.created_at, Job.best_value)
                                                       .where(Job.id == row["id"])).one()
                after = (created_at, row["id"]) if search.sort == "-created_at" else (best_value, row["id"])


def test_the_list_loads_no_orm_objects(app: Any, make_token: Any) -> None:
    """The list answers from Core rows: a regression to the ORM path (Job objects, JSON decoded and encoded
    again) would load every job of the page."""
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(f'list-json-{secrets.token_hex(3)}')}"}
    _jobs_of_every_kind(app, client, auth)
    loaded: list[str] = []

    def on_load(target: Job, _context: Any) -> None:
        loaded.append(target.id)

    event.listen(Job, "load", on_load)
    try:
        resp = client.get("/v1/jobs?limit=200", headers=auth)
    finally:
        event.remove(Job, "load", on_load)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert len(resp.get_json()["jobs"]) == 11
    assert loaded == []
