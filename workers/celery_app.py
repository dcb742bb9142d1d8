"""The worker process: the Celery app with the training task registered, TensorFlow warmed once per
process, and a heartbeat thread.

Run one solo-pool process per device (`celery -A workers.celery_app worker --pool solo`): a process that
has run TensorFlow ops and then forks hangs in the child's first fit, so nothing here forks after warming.
With the prefork pool, each child warms itself in `worker_process_init` and the parent never runs TF ops.
"""
from __future__ import annotations

import atexit
import contextlib
import faulthandler
import logging
import os
import socket
import sys

from celery import signals

from trainyard.queue import make_celery
from trainyard.logconfig import configure_logging
from trainyard.resources import worker_queues
from trainyard.settings import Settings, SettingsError
from workers.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

try:
    settings = Settings.from_env()
except SettingsError as exc:
    # bin/worker's first step: a typo in a setting stops the worker before Celery starts, in one line
    # (SystemExit passes through Celery's app loader, which would print the whole traceback).
    print(f"trainyard worker: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
app = make_celery(settings)
app.conf.imports = ("workers.tasks",)
runtime = WorkerRuntime(settings, app)


def _gpu_for_child(index: int) -> None:
    # One GPU per prefork child; a solo-pool process is pinned by the operator's CUDA_VISIBLE_DEVICES.
    gpus = os.environ.get("TRAINYARD_GPUS")
    if gpus:
        ids = [g for g in gpus.split(",") if g.strip()]
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[index % len(ids)]


@signals.celeryd_init.connect
def _select_queues(**_: object) -> None:
    # The queues of the classes this worker serves (TRAINYARD_WORKER_GPUS, TRAINYARD_WORKER_CLASSES) and
    # the default queue, e.g. trainyard.gpu-2,trainyard: what `celery worker --queues` would select, chosen
    # here rather than by a Python process of its own in bin/worker (about 0.5 s of CPU per worker start).
    # Sent before Celery applies its command line, so an explicit --queues still wins.
    app.amqp.queues.select(worker_queues(settings.worker_classes))


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    # Connected, so Celery leaves logging alone: one configuration for the API and the workers.
    configure_logging(settings)


def _worker_id(hostname: object) -> str:
    """`<node name>:<pid>`: the name jobs, leases and job log lines carry, one per training process."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@signals.worker_process_init.connect
def _init_prefork_child(sender: object = None, **_: object) -> None:
    from billiard.process import current_process

    # The solo pool sends this too (sender: the node name), before worker_ready: the job-log handler made
    # here keeps the id it is given, so the id must be the process's own by now.
    runtime.worker_id = _worker_id(sender)
    runtime.reset_after_fork()
    runtime.start_job_logs()
    _gpu_for_child(getattr(current_process(), "index", 0) or 0)
    runtime.warm()


@signals.worker_ready.connect
def _ready(sender: object = None, **_: object) -> None:
    pool = getattr(getattr(sender, "controller", None), "pool", None) or getattr(sender, "pool", None)
    is_solo = type(pool).__module__.endswith("solo") if pool is not None else False
    if is_solo:
        runtime.warm()
    runtime.start_heartbeat(_worker_id(getattr(sender, "hostname", None)), socket.gethostname())


# A warm shutdown takes a batch and a backup; a worker still alive this long after SIGTERM is stuck, and
# writes every thread's stack to stderr (from a C-level watchdog, so even a main thread blocked in C shows).
SHUTDOWN_STACKS_AFTER_SECONDS = 20.0


@signals.worker_shutting_down.connect
def _shutting_down(**_: object) -> None:
    # Warm shutdown (SIGTERM): a running job stops at its next batch, keeps its last backup and goes back
    # to the queue (workers/tasks.py); on the solo pool this runs in the signal handler, so only set a flag
    # (and arm the watchdog).
    runtime.shutting_down.set()
    faulthandler.dump_traceback_later(SHUTDOWN_STACKS_AFTER_SECONDS, exit=False)


@signals.worker_shutdown.connect
def _shutdown(sender: object = None, **_: object) -> None:
    runtime.stop_heartbeat()
    code = getattr(sender, "exitcode", None)
    if not isinstance(code, int):  # the status `sys.exit(worker.exitcode)` would give: None is 0, a message 1
        code = 0 if code is None else 1
    atexit.register(_exit_without_teardown, code)


def _exit_without_teardown(code: int) -> None:
    """The first exit handler once Celery has stopped: flush the logs, close the database connections, and
    end the process without the interpreter's teardown. That teardown (modules, then TensorFlow's native
    state) took 1.3 s of every worker stop, and some stops after a run of jobs hung in it for 20-30 s (3 of
    about 50 in two suite runs; faulthandler showed only the main thread, in native code). Nothing of ours
    is left running by then: the heartbeat, the job-log writer and the webhook sender have been stopped
    above."""
    logging.shutdown()
    with contextlib.suppress(Exception):
        runtime.db.dispose()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


