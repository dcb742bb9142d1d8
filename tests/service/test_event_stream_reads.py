"""What an event stream reads when it wakes (issue #21: start latency): a status change, the usual wake-up
while a job starts, is rendered without reading epoch metrics or findings by id; an epoch event still
reads its row."""
from __future__ import annotations

from typing import Any

from sqlalchemy import event, select

from service.api import events
from trainyard.db.live import JobEvent
from trainyard.db.models import EpochMetrics, Job
from tests.conftest import statements, unsent_job


def test_a_status_event_reads_no_epoch_or_finding_rows(app: Any, client: Any, auth: dict[str, str]) -> None:
    job_id = unsent_job(app, client, auth, "stream")
    db = app.extensions["trainyard"].db
    with db.session() as s:
        s.add(EpochMetrics(job_id=job_id, epoch=1, values={"loss": 0.5}))
    with app.test_request_context(headers=auth), db.session() as s:
        job = s.get(Job, job_id)
        log = list(s.execute(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)).scalars())
        status = [e for e in log if e.kind == "status"]
        epoch = [e for e in log if e.kind == "epoch"]
        assert status and epoch
        with statements(db) as seen:
            chunks = events._render(s, job, status)
        assert [c.split("\n")[1] for c in chunks] == ["event: status"] * len(status)
        assert not [q for q in seen if "epoch_metrics" in q or "findings.id IN" in q], seen
        with statements(db) as seen:
            chunks = events._render(s, job, epoch)
        assert [c.split("\n")[1] for c in chunks] == ["event: epoch"]
        assert [q for q in seen if "epoch_metrics" in q]


def test_a_stream_opening_while_its_job_is_claimed_still_says_running(app: Any, client: Any,
                                                                        auth: dict[str, str]) -> None:
    """The worker's claim commits between the stream's reads of the job and of the log's head (the window a
    fast worker hits when a stream opens right after its POST): the snapshot must not say `queued` with a
    cursor already past the `running` event, or the stream never says running at all."""
    from trainyard import lifecycle

    job_id = unsent_job(app, client, auth, "stream")
    db = app.extensions["trainyard"].db
    claimed: list[object] = []

    def claim_before_the_head_is_read(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not claimed and "max(job_events.seq)" in statement:
            claimed.append(lifecycle.claim(db, job_id, "worker-x", lease_for=60))

    event.listen(db.engine, "before_cursor_execute", claim_before_the_head_is_read)
    try:
        resp = client.get(f"/v1/jobs/{job_id}/events", headers=auth, buffered=False)
        try:
            snapshot = next(iter(resp.response))
        finally:
            resp.close()
    finally:
        event.remove(db.engine, "before_cursor_execute", claim_before_the_head_is_read)
    assert claimed and claimed[0] is not None
    text = snapshot.decode() if isinstance(snapshot, bytes) else snapshot
    assert text.startswith("id: 0\nevent: status\n")
    assert '"status":"running"' in text.split("\n")[2], text[:300]
