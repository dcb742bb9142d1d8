"""Stopping a job's training thread in any phase, not only between batches.

The trainer stops cooperatively at batch boundaries (its StopRequest callback asks the reporter). Other
phases never reach one: reading a large data set, building a big model, tracing its train function (in
preflight, or in the first batch of fit) can each take minutes of Python work. So a stop request (a
cancel, a warm shutdown, a lost lease) is also delivered asynchronously: the worker's watch thread raises
`JobStopped` in the training thread with `PyThreadState_SetAsyncExc`, which the interpreter raises there
at its next bytecode. A thread inside a C call (one TensorFlow op, graph finalisation) sees it when the
call returns; the runtime ends a job that stays stuck past its limit by ending the process
(workers/runtime.py).

Only the region a task marks `interruptible` is ever interrupted; an exception still pending when the
region is left is withdrawn, so nothing outside it (Celery's loop, the next job) can receive one. An
exception that lands between a lock's `acquire()` and the `try` guarding it leaves the lock held; the
locks every thread of a worker takes all the time are logging's (a handler's lock is taken for each line
it writes), so the region's exit releases any logging lock the interrupted thread still holds. Writes
that must not be cut in half (the reporter's database and store writes) run `shielded`: no exception is
sent while one runs, and entering one after the thread was already interrupted raises at once, before
the write starts. An asynchronous exception can land where it is swallowed (a `__del__`, a weakref
callback run by the garbage collector), so it is sent again every `repeat_seconds` until the thread
leaves the region.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType



class JobStopped(BaseException):
    """Raised in the training thread when its job must stop now.

    A BaseException, like KeyboardInterrupt: Keras, TensorFlow and the trainer's own retry loops catch
    `Exception`, and none of them may swallow it or turn it into a failed job.
    """


# Functions of the task and the trainer that name the phase a job was in, matched from the outermost
# frame inwards (preflight calls fit: the outer one names it).
PHASES = {
    "load_data": "loading data",
    "prepare_resume": "loading data",
    "build_model": "building the model",
    "compile": "building the model",
    "preflight": "preflight",
    "fit": "training",
    "_evaluate_checkpoint": "evaluating",
    "_export_best": "exporting",
}


def phase_of(tb: TracebackType | None) -> str:
    """The phase a stopped job was in, from where the exception that stopped it was raised."""
    for frame, _ in traceback.walk_tb(tb):
        phase = PHASES.get(frame.f_code.co_name)
        if phase is not None:
            return phase
    return "between phases"


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule `exc` in the thread (None withdraws a scheduled one)."""
    target = ctypes.c_ulong(thread_id)
    if ctypes.pythonapi.PyThreadState_SetAsyncExc(target, ctypes.py_object(exc) if exc else None) > 1:
        # The C API's own advice: more than one thread state means a bad id; undo it.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(target, None)
        raise RuntimeError(f"thread id {thread_id} matched several threads")


def _release_logging_locks() -> int:
    """Release the logging locks the calling thread holds; call it where it holds none legitimately.
    Returns how many acquisitions were undone."""
    loggers = [logging.getLogger(), *(obj for obj in list(logging.Logger.manager.loggerDict.values())
                                      if isinstance(obj, logging.Logger))]
    locks = [getattr(logging, "_lock", None), *(h.lock for lg in loggers for h in lg.handlers)]
    released = 0
    for lock in locks:
        while lock is not None and lock._is_owned():
            lock.release()
            released += 1
    return released


class Interrupter:
    """The stop request of the job one worker process trains, and its delivery to the training thread.

    The training thread: `interruptible()` around a job's work, `shielded()` around writes, `check()`
    at phase boundaries. The watch thread: `request(reason)` when it learns the job must stop, then
    `escalate()` on every tick.
    """

    def __init__(self, *, grace_seconds: float = 1.5, repeat_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # The cooperative path (the next batch boundary) gets `grace_seconds` before the thread is interrupted.
        self.grace_seconds = grace_seconds
        self.repeat_seconds = repeat_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._thread: int | None = None
        self._shields = 0
        self._job: object = None
        self.reason: str | None = None
        self.requested_at: float | None = None
        self._sent_at: float | None = None
        self.sent = 0

    # the job's lifetime
    def reset(self, job: object = None) -> None:
        """A new job (any key naming it): no request, nothing sent."""
        with self._lock:
            self._job = job
            self.reason = self.requested_at = self._sent_at = None
            self.sent = 0

    def request(self, reason: str, job: object = None) -> bool:
        """Ask the job to stop; the first reason wins. With `job`, only if that is still the job (a watcher
        that looked at the previous job must not stop the next one). True if this call made the request."""
        with self._lock:
            if self.reason is not None or (job is not None and job != self._job):
                return False
            self.reason, self.requested_at = reason, self._clock()
            return True

    @property
    def job(self) -> object:
        """The key of the job the state is about (what `reset` was given)."""
        return self._job

    @property
    def active(self) -> bool:
        """Whether a thread is inside `interruptible()`."""
        return self._thread is not None

    # the training thread
    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """The region of a job's work that `escalate` may interrupt. Wrap it in `except JobStopped`:
        the exception can surface anywhere in it, this context manager's own exit included."""
        with self._lock:
            self._thread = threading.get_ident()
        try:
            yield
        finally:
            try:
                with self._lock:
                    ident, self._thread = self._thread, None
                    if self.sent and ident is not None:
                        _raise_in(ident, None)  # withdraw one not delivered yet: it must not outlive the region
            finally:
                if self.sent:
                    _release_logging_locks()

    @contextmanager
    def shielded(self) -> Iterator[None]:
        """A write that must complete or not start: nothing is sent while it runs."""
        with self._lock:
            if self.sent and self._thread == threading.get_ident():
                # Interrupted already (the exception may still be pending): stop here, before the write.
                _raise_in(self._thread, None)
                raise JobStopped()
            self._shields += 1
        try:
            yield
        finally:
            with self._lock:
                self._shields -= 1

    def check(self) -> None:
        """A cooperative stop at a phase boundary: raise `JobStopped` if a stop was requested."""
        if self.reason is not None and self._thread == threading.get_ident():
            raise JobStopped()

    # the watch thread
    def escalate(self) -> bool:
        """Interrupt the training thread if a stop was requested `grace_seconds` ago and it is still in its
        region (again every `repeat_seconds`); True when an exception was sent."""
        now = self._clock()
        with self._lock:
            if self.reason is None or self._thread is None or self._shields:
                return False
            if now - self.requested_at < self.grace_seconds:
                return False
            if self._sent_at is not None and now - self._sent_at < self.repeat_seconds:
                return False
            _raise_in(self._thread, JobStopped)
            self._sent_at = now
            self.sent += 1
            return True
