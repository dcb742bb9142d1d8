"""Shared fixtures: a fresh Postgres database and Redis database per test session, the real API and
worker processes started with the same scripts docker-compose.yml runs, and API tokens.

Nothing here patches the database, the queue or Keras: integration tests talk to real services.
"""
from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_DSN = os.environ.get("TRAINYARD_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_BASE = os.environ.get("TRAINYARD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("TRAINYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379")



def _redis_db() -> int:
    """Two Redis databases per pytest-xdist worker, from TRAINYARD_TEST_REDIS_DB up: gw0 gets base and
    base + 1, gw1 base + 2 and base + 3, ... (a run without xdist counts as gw0). The session's broker is
    REDIS_DB; modules that run their own workers use REDIS_DB + 1, so no two Celery workers of different
    test processes ever share a broker."""
    base = int(os.environ.get("TRAINYARD_TEST_REDIS_DB", "9"))
    return base + 2 * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


REDIS_DB = _redis_db()


@functools.cache
def redis_db_url(offset: int = 0) -> str:
    """The URL of this test process' Redis database REDIS_DB + offset (0 or 1), refused clearly when the
    server has fewer databases than TRAINYARD_TEST_REDIS_DB and the number of xdist workers need."""
    assert offset in (0, 1)
    url = f"{REDIS_BASE}/{REDIS_DB + offset}"
    databases = int(redis.Redis.from_url(REDIS_BASE).config_get("databases")["databases"])
    if REDIS_DB + 1 >= databases:
        pytest.fail(f"Redis has {databases} databases (0..{databases - 1}); this test process needs {REDIS_DB} "
                    f"and {REDIS_DB + 1}: lower TRAINYARD_TEST_REDIS_DB or run fewer xdist workers (-n)",
                    pytrace=False)
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # The suite's workers make no SavedModel/ONNX exports (three of them cost a job ~2 s of a worker's time);
    # the tests of exports ask for them (`exporting_worker`, or their own worker's environment).
    env["TRAINYARD_EXPORT_FORMATS"] = "none"
    env.update(extra)
    return env


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"trainyard_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG_URL_BASE}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = redis_db_url()
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture(scope="session")
def service_env(tmp_path_factory: pytest.TempPathFactory, pg_url: str, redis_url: str) -> dict[str, str]:
    """Environment for every process of the Postgres/Redis set-up, migrated with `bin/migrate`."""
    var = tmp_path_factory.mktemp("var")
    env = subprocess_env({
        "TRAINYARD_DATABASE_URL": pg_url,
        "TRAINYARD_BROKER_URL": redis_url,
        "TRAINYARD_VAR_DIR": str(var),
        "TRAINYARD_WORKER_HEARTBEAT_SECONDS": "1",
        # Two test processes, their workers and the clusters some tests start share the machine's cores:
        # one thread per TensorFlow pool, so ops do not wait on threads that wait for a time slice.
        "TRAINYARD_WORKER_THREADS": "1",
        # Webhook tests run their receivers on 127.0.0.1, with quick retries (tests/service/test_webhooks.py).
        "TRAINYARD_WEBHOOK_ALLOW_PRIVATE": "true",
        "TRAINYARD_WEBHOOK_BACKOFF_SECONDS": "0.2",
        "TRAINYARD_WEBHOOK_TIMEOUT_SECONDS": "1",
        "TRAINYARD_WEBHOOK_POLL_SECONDS": "0.2",
        # Short, so tests that revoke a token see it refused within a second or two (production: 5 s).
        "TRAINYARD_TOKEN_CACHE_SECONDS": "1",
    })
    subprocess.run([str(ROOT / "bin" / "migrate")], env=env, check=True, cwd=ROOT)
    return env


@pytest.fixture(autouse=True)
def _stray_jobs_cancelled(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that submits jobs or sweeps without a worker to run them, end them: otherwise the
    session worker, once a later test starts it, trains every job left queued (sweeps top up with more
    trials) before the jobs that later test waits for. Tests that use the worker end their own jobs."""
    if "service_env" not in request.fixturenames or "worker" in request.fixturenames:
        yield
        return
    db = request.getfixturevalue("_stray_jobs_db")
    yield
    from sqlalchemy import select

    from trainyard import lifecycle
    from trainyard.db.models import Job
    from trainyard.db.sweeps import Sweep
    from trainyard.sweeps import controller

    with db.session() as s:
        for sweep in s.execute(select(Sweep).where(Sweep.status == "running").with_for_update()).scalars():
            controller.cancel(s, sweep)
        for job in s.execute(select(Job).where(Job.status.in_(controller.ACTIVE_STATUSES)).with_for_update()).scalars():
            lifecycle.request_cancel(job)


@pytest.fixture(scope="session")
def _stray_jobs_db(service_env: dict[str, str]) -> Iterator[Any]:
    """One engine for `_stray_jobs_cancelled`, kept for the session: a new engine per test cost a connection
    and SQLAlchemy's first-connect queries after every test (~60 ms each on this machine)."""
    from trainyard.db import Database

    db = Database(service_env["TRAINYARD_DATABASE_URL"])
    yield db
    db.dispose()


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Any:
    from trainyard.settings import Settings

    return Settings.from_env(service_env)


@pytest.fixture(scope="session")
def app(settings: Any) -> Iterator[Any]:
    from service import create_app

    app = create_app(settings)
    yield app
    app.extensions["trainyard_events"].close()  # its listener must not outlive the test database


@pytest.fixture()
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(params=["postgres", "sqlite"])
def either_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The API app on the suite's Postgres (`app`), then on the embedded default's stores (`make run`'s): a
    migrated SQLite database and kombu's SQLite broker in `tmp_path`, closed and disposed after the test."""
    if request.param == "postgres":
        yield request.getfixturevalue("app")
        return
    from service import create_app
    from trainyard.db import upgrade_schema
    from trainyard.settings import Settings

    url = f"sqlite:///{tmp_path / 'trainyard.sqlite3'}"
    upgrade_schema(url)
    app = create_app(Settings.from_env({"TRAINYARD_VAR_DIR": str(tmp_path), "TRAINYARD_DATABASE_URL": url,
                                        "TRAINYARD_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"}))
    try:
        yield app
    finally:
        app.extensions["trainyard_events"].close()
        app.extensions["trainyard"].db.dispose()


@pytest.fixture(scope="session")
def make_token(app: Any) -> Any:
    from service.auth import create_token

    def make(tenant: str) -> str:
        with app.extensions["trainyard"].db.session() as s:
            return create_token(s, tenant).token

    return make


@pytest.fixture(scope="session")
def token(make_token: Any) -> str:
    return make_token("alice")


@pytest.fixture(scope="session")
def other_token(make_token: Any) -> str:
    return make_token("mallory")


@pytest.fixture(scope="session")
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def other_auth(other_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {other_token}"}


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path, append: bool = False) -> None:
        self.log = log
        self._fh = open(log, "ab" if append else "wb")
        self.popen = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                # Hung: a Celery worker writes every thread's stack to its log on SIGUSR1 (gunicorn only
                # reopens its log files), so what it hung on is on record before it is killed.
                self.popen.send_signal(signal.SIGUSR1)
                time.sleep(1)
                self.popen.kill()
                self.popen.wait()
                # A warning, so the run's summary names it even from a session fixture's teardown.
                warnings.warn(f"{self.log} did not stop within {timeout} s of SIGTERM; its stacks are in that log",
                              RuntimeWarning, stacklevel=1)
        self._fh.close()


def start_worker(env: dict[str, str], log: Path, settings: Any, append: bool = False) -> Proc:
    """`bin/worker`, waited for until its heartbeat row shows it is ready for jobs."""
    from sqlalchemy import func, select

    from trainyard.db import Database
    from trainyard.db.models import Worker

    db = Database(settings.database_url)
    with db.session() as s:
        before = s.execute(select(func.count()).select_from(Worker)).scalar_one()
    proc = Proc([str(ROOT / "bin" / "worker")], env, log, append)

    def ready() -> bool:
        if not proc.alive():
            raise AssertionError(f"worker exited:\n{proc.output()[-4000:]}")
        with db.session() as s:
            return s.execute(select(func.count()).select_from(Worker)).scalar_one() > before

    try:
        wait_until(ready, 120, 0.2, "the worker's first heartbeat")
    except BaseException:
        proc.stop(timeout=5)  # a worker that never got ready must not go on taking this database's jobs
        raise
    finally:
        db.dispose()
    return proc


class SupervisedWorker:
    """The session's worker, restarted whenever it exits, as docker-compose.yml's `restart: unless-stopped`
    and `make run` restart theirs. A worker ends itself on purpose when a cancelled job's thread stays stuck
    in one native call (workers/runtime.py, EXIT_STUCK): without a supervisor every later test would wait
    for a worker that is gone. Each restart is logged in the same file and counted in `restarts`."""

    def __init__(self, env: dict[str, str], log: Path, settings: Any) -> None:
        self._env, self._log, self._settings = env, log, settings
        self._proc = start_worker(env, log, settings)
        self.restarts: list[int | None] = []  # the exit status of each process that was replaced
        self._stopping = threading.Event()
        self._swapping = threading.Lock()  # held while `environment` replaces the process on purpose
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)
        self._thread.start()

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        return self._proc.popen

    @property
    def log(self) -> Path:
        return self._log

    def output(self) -> str:
        return self._log.read_text(errors="replace")

    def alive(self) -> bool:
        return self._proc.alive()

    def running(self, timeout: float = 180) -> subprocess.Popen[bytes]:
        """The live worker process, ready for jobs: a restart in progress (the supervisor's back-off and the
        new process's start-up, under `_swapping`) is waited out, as is an exit the supervisor has not seen."""
        def live() -> subprocess.Popen[bytes] | None:
            with self._swapping:
                return self._proc.popen if self._proc.alive() else None

        return wait_until(live, timeout, 0.1, "the session worker to be running")

    @contextmanager
    def environment(self, changes: dict[str, str | None]) -> Iterator["SupervisedWorker"]:
        """This worker restarted with `changes` to its environment (None removes a variable), then restarted
        as it was: for a module that needs a setting the rest of the suite runs without. A job it was
        running is interrupted and resumed, as on any worker restart."""
        base = self._env
        self._swap({k: v for k, v in {**base, **changes}.items() if v is not None})
        try:
            yield self
        finally:
            self._swap(base)

    def _swap(self, env: dict[str, str]) -> None:
        with self._swapping:
            self._env = env
            self._proc.stop()
            self._proc = start_worker(env, self._log, self._settings, append=True)

    def _supervise(self) -> None:
        while not self._stopping.wait(0.2):
            if self._proc.alive():
                continue
            with self._swapping:  # not while `environment` replaces it on purpose
                if self._proc.alive():
                    continue
                status = self._proc.popen.returncode
                self._proc.stop()
                if self._stopping.is_set():
                    return
                self.restarts.append(status)
                with open(self._log, "ab") as fh:
                    fh.write(f"\n--- worker exited with status {status}; restarting it ---\n".encode())
                time.sleep(1.0)  # the restart policy's back-off
                try:
                    self._proc = start_worker(self._env, self._log, self._settings, append=True)
                except Exception as exc:  # tests waiting for the worker will say so; try again
                    warnings.warn(f"restarting the session worker failed: {exc}", RuntimeWarning, stacklevel=1)

    def stop(self, timeout: float = 30) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._proc.stop(timeout)
        if self.restarts:
            warnings.warn(f"the session worker was restarted {len(self.restarts)} time(s) (exit statuses "
                          f"{self.restarts}); see {self._log}", RuntimeWarning, stacklevel=1)


@pytest.fixture(scope="session")
def worker(service_env: dict[str, str], settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    proc = SupervisedWorker(service_env, tmp_path_factory.mktemp("logs") / "worker.log", settings)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def exporting_worker(worker: SupervisedWorker) -> Iterator[SupervisedWorker]:
    """The session's worker making every export format (the production default) for this module's jobs."""
    with worker.environment({"TRAINYARD_EXPORT_FORMATS": None}):
        yield worker


def start_api(env: dict[str, str], log: Path) -> tuple[Proc, str]:
    """`bin/api` (gunicorn) on a free port, exactly as docker-compose.yml runs it; waited for until
    /healthz answers. Returns the process and its base URL."""
    import requests

    port = free_port()
    proc = Proc([str(ROOT / "bin" / "api")], {**env, "TRAINYARD_PORT": str(port)}, log)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            raise AssertionError(f"api exited:\n{proc.output()[-4000:]}")
        try:
            return requests.get(url + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:  # refused, or a worker still booting on a busy machine
            return False

    wait_until(up, 60, 0.2, "gunicorn to answer")
    return proc, url


@pytest.fixture(scope="session")
def api_url(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_api(service_env, tmp_path_factory.mktemp("logs") / "api.log")
    yield url
    proc.stop()


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A job that trains in a second on the iris data set."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"id": "builtin:iris", "normalize": "standardize"},
        "model": {"input_shape": [4], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                                  {"type": "dense", "units": 3, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.01},
        "training": {"epochs": 3, "batch_size": 16, "seed": 1},
    }
    spec.update(overrides)
    return spec


@contextmanager
def statements(db: Any) -> Iterator[list[str]]:
    """The SQL statements this thread sends through `db`'s engine while the block runs (other tests'
    threads share the engine)."""
    seen: list[str] = []
    me = threading.get_ident()

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == me:
            seen.append(statement)

    from sqlalchemy import event

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def unsent_job(app: Any, client: Any, auth: dict[str, str], name: str) -> str:
    """A queued job of this tenant that no worker was ever sent (a worker other tests started would run a
    submitted one): only the calling test moves it."""
    from trainyard.db.models import Job

    template = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()
    with app.extensions["trainyard"].db.session() as s:
        row = s.get(Job, template["id"])
        job = Job(tenant_id=row.tenant_id, name=name, status="queued", spec=row.spec, epochs=row.epochs,
                  resource_class=row.resource_class)
        s.add(job)
        s.flush()
        return job.id
