"""The interrupter stops a thread busy in Python (no batch boundary needed), only inside its region, never
in the middle of a shielded write, and again when the first exception was swallowed."""
from __future__ import annotations

import gc
import io
import logging
import threading
import time
from typing import Any

import pytest

from trainyard.stop_reasons import StopReason
from workers.interrupt import Interrupter, JobStopped, phase_of

CANCELLED = StopReason.CANCELLED.value

# How long a test waits for the other thread: generous, since a loaded machine can starve a thread for
# seconds; every wait returns as soon as its event happens.
WAIT = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _run(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            target(out)
            out["result"] = "returned"
        except JobStopped as exc:
            out["result"] = "stopped"
            out["phase"] = phase_of(exc.__traceback__)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def _busy(stop: Interrupter, out: dict[str, Any], seconds: float = 30.0) -> None:
    """Pure Python work with no stop check in it: what tracing a big model looks like to the interpreter."""
    out["started"] = True
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(1000))


def build_model(stop: Interrupter, out: dict[str, Any]) -> None:  # named like the trainer's phase
    _busy(stop, out)


def test_a_busy_thread_is_stopped_after_the_grace_period_and_the_phase_is_named() -> None:
    clock = Clock()
    stop = Interrupter(grace_seconds=1.5, clock=clock)

    def work(out: dict[str, Any]) -> None:
        with stop.interruptible():
            build_model(stop, out)

    thread, out = _run(work)
    while not out.get("started"):
        time.sleep(0.01)
    assert not stop.escalate(), "nothing requested"
    stop.request(CANCELLED)
    clock.now = 1.0
    assert not stop.escalate(), "within the grace period the batch-boundary check has its chance"
    clock.now = 1.6
    assert stop.escalate()
    thread.join(WAIT)
    assert out["result"] == "stopped"
    assert out["phase"] == "building the model"
    assert not stop.active


def test_nothing_is_sent_during_a_shielded_write_and_nothing_outlives_the_region() -> None:
    clock = Clock()
    stop = Interrupter(grace_seconds=0.0, clock=clock)
    in_write, release = threading.Event(), threading.Event()

    def work(out: dict[str, Any]) -> None:
        with stop.interruptible():
            with stop.shielded():
                in_write.set()
                release.wait(WAIT)
                out["write"] = "complete"
        # Outside the region: a pending exception would surface in here.
        out["after"] = sum(range(10_000))

    thread, out = _run(work)
    in_write.wait(WAIT)
    stop.request(CANCELLED)
    assert not stop.escalate(), "a shielded write is never cut"
    release.set()
    thread.join(WAIT)
    assert out == {"write": "complete", "after": sum(range(10_000)), "result": "returned"}
    assert not stop.escalate(), "no thread in the region: nothing to interrupt"


def test_a_shielded_write_after_an_interruption_does_not_start() -> None:
    stop = Interrupter(grace_seconds=0.0)
    inside, sent = threading.Event(), threading.Event()

    def work(out: dict[str, Any]) -> None:
        with stop.interruptible():
            inside.set()
            sent.wait(WAIT)
            # The exception may be pending still; entering the write must stop here, not write.
            with stop.shielded():
                out["wrote"] = True

    thread, out = _run(work)
    assert inside.wait(WAIT)  # in its region (on a busy machine the thread may start late)
    stop.request(CANCELLED)
    # Sent while the thread waits in C (Event.wait): it is delivered when that call returns at the earliest.
    assert stop.escalate()
    sent.set()
    thread.join(WAIT)
    assert out["result"] == "stopped" and "wrote" not in out


class _Swallower:
    """An object whose finaliser runs Python code: an exception delivered there is only printed."""

    def __del__(self) -> None:
        sum(range(200_000))


# The swallowed exception is what this test is about; pytest reports it as "unraisable".
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_exception_swallowed_by_a_finaliser_is_sent_again() -> None:
    clock = Clock()
    stop = Interrupter(grace_seconds=0.0, repeat_seconds=1.0, clock=clock)
    in_finaliser = threading.Event()
    first_sent = threading.Event()
    went_on = threading.Event()

    class Marker(_Swallower):
        def __del__(self) -> None:
            in_finaliser.set()
            first_sent.wait(WAIT)  # the exception is sent meanwhile and delivered in the code below
            super().__del__()

    def work(out: dict[str, Any]) -> None:
        with stop.interruptible():
            cycle = [Marker()]
            cycle.append(cycle)  # only the collector frees it: its __del__ runs inside gc.collect()
            del cycle
            gc.collect()
            went_on.set()
            _busy(stop, out)

    thread, out = _run(work)
    in_finaliser.wait(WAIT)
    stop.request(CANCELLED)
    assert stop.escalate()
    first_sent.set()
    went_on.wait(WAIT)
    assert thread.is_alive(), "the first exception was swallowed by the finaliser"
    assert not stop.escalate(), "not again before repeat_seconds"
    clock.now = 1.0
    assert stop.escalate()
    thread.join(WAIT)
    assert out["result"] == "stopped" and stop.sent == 2


def test_check_raises_only_inside_the_region_once_requested() -> None:
    stop = Interrupter()
    stop.request(CANCELLED)
    stop.check()  # outside any region: nothing to stop
    with pytest.raises(JobStopped):
        with stop.interruptible():
            stop.check()
    stop.reset()
    with stop.interruptible():
        stop.check()
    assert stop.reason is None


def test_an_interrupted_thread_leaves_no_logging_lock_held() -> None:
    """An exception that lands between a handler's acquire() and its try would leave the handler locked for
    every other thread of the worker (heartbeat, webhooks, job logs) forever. A thread that logs without
    pause is interrupted over and over; each time, another thread can still take the handler's lock."""
    handler = logging.StreamHandler(io.StringIO())
    log = logging.getLogger(f"{__name__}.busy")
    log.addHandler(handler)
    log.propagate = False
    try:
        for _ in range(200):  # the window is hit a few times in a hundred
            stop = Interrupter(grace_seconds=0.0)
            logging_now = threading.Event()

            def work(out: dict[str, Any], stop: Interrupter = stop, logging_now: threading.Event = logging_now) -> None:
                with stop.interruptible():
                    logging_now.set()
                    while True:
                        log.warning("line %d", 1)

            thread, out = _run(work)
            logging_now.wait(WAIT)
            time.sleep(0.001)
            stop.request(CANCELLED)
            assert stop.escalate()
            thread.join(WAIT)
            assert out["result"] == "stopped"
            assert handler.lock.acquire(timeout=1), "the interrupted thread kept the handler's lock"
            handler.lock.release()
    finally:
        log.removeHandler(handler)


def test_a_request_for_the_previous_job_does_not_stop_the_next() -> None:
    stop = Interrupter()
    stop.reset(("job-a", 1))
    stop.reset(("job-b", 1))  # job a ended and job b was claimed while a watcher still looked at a
    assert not stop.request(CANCELLED, ("job-a", 1))
    assert stop.reason is None
    assert stop.request(CANCELLED, ("job-b", 1)) and stop.reason == CANCELLED
