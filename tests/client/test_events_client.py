"""`Trainyard.events` against the live API, and `trainyard watch` on a server without the events endpoint."""
from __future__ import annotations

from typing import Any

import pytest

from client import Event, NotFound, Trainyard
from tests.client.conftest import RunCli


def test_events_yield_status_then_each_epoch_then_end(ty: Trainyard, done_job: dict[str, Any]) -> None:
    events = list(ty.events(done_job["id"]))
    assert all(isinstance(e, Event) for e in events)
    assert events[0].event == "status" and events[0].data["job"]["id"] == done_job["id"]
    assert [e.data for e in events if e.event == "epoch"] == ty.metrics(done_job["id"])
    assert events[-1].event == "end" and events[-1].data == {"status": "succeeded"}
    # Resuming after the second epoch's id yields only what followed it.
    second = next(e.id for e in events if e.event == "epoch" and e.data["epoch"] == 2)
    rest = list(ty.events(done_job["id"], last_event_id=second))
    assert [e.data["epoch"] for e in rest if e.event == "epoch"] == [3, 4]
    assert rest[-1].event == "end"


def test_events_of_an_unknown_job_raise_not_found(ty: Trainyard) -> None:
    with pytest.raises(NotFound):
        next(ty.events("job_" + "0" * 32))


def test_watch_falls_back_to_polling_without_the_events_endpoint(
        run_cli: RunCli, done_job: dict[str, Any], server_without_events: str) -> None:
    direct = run_cli("watch", done_job["id"])
    polled = run_cli("watch", done_job["id"], "--poll", "0.1", env={"TRAINYARD_URL": server_without_events})
    assert polled.exit_code == direct.exit_code == 0, polled.output
    assert polled.stdout == direct.stdout
    assert len([line for line in polled.stdout.splitlines() if line.startswith("epoch ")]) == 4
