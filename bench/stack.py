"""A real Trainyard stack for a benchmark: a fresh Postgres database and a Redis database, migrated with
`bin/migrate`, the API under gunicorn via `bin/api` (production's settings), and a worker via
`bin/worker` where a benchmark needs one. Mirrors tests/conftest.py; nothing is patched.

    from bench.stack import Stack
    with Stack(env={"TRAINYARD_ARTIFACT_URL": "db"}) as stack:
        stack.start_api()                      # or stack.start(api=True, worker=True)
        headers = stack.auth_headers("acme")   # {"Authorization": "Bearer ty_..."}
        requests.get(stack.base_url + "/v1/jobs", headers=headers)

Where: Postgres from TRAINYARD_BENCH_PG_DSN / TRAINYARD_BENCH_PG_URL (default 127.0.0.1:5432, user
postgres), Redis database TRAINYARD_BENCH_REDIS_DB (default 15) on 127.0.0.1:6379. The database is
dropped and the Redis database flushed on stop.
"""
from __future__ import annotations

import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

PG_ADMIN_DSN = os.environ.get("TRAINYARD_BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
PG_URL_BASE = os.environ.get("TRAINYARD_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_BASE = os.environ.get("TRAINYARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("TRAINYARD_BENCH_REDIS_DB", "15"))

# What bin/api serves; `start_like_api` swaps it for another WSGI app and keeps every other flag.
API_APP_TARGET = "'service:create_app()'"
API_CD_LINE = 'cd "$(dirname "$0")/.." || exit 1'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Any, timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def base_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This environment less any TRAINYARD_* variable, with the venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


class Proc:
    """A child process in its own session, its output in a log file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self._fh = open(log, "wb")
        self.popen = subprocess.Popen(args, env=dict(env), cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")

    def children(self) -> list[int]:
        """Direct children (gunicorn's workers when this is its master)."""
        kids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces or parentheses: the ppid is the 2nd field after the last ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                kids.append(int(entry.name))
        return sorted(kids)

    def stop(self, timeout: float = 30) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._fh.close()


def start_like_api(app_target: str, env: Mapping[str, str], port: int, log: Path) -> Proc:
    """Run `bin/api` with the same gunicorn flags but serving `app_target` (module:app, importable from
    bench/): a bare baseline gets exactly production's worker class, workers, threads and access log."""
    script = (ROOT / "bin" / "api").read_text()
    if API_APP_TARGET not in script or API_CD_LINE not in script:
        raise RuntimeError("bin/api changed shape; update bench/stack.py's start_like_api")
    script = script.replace(API_CD_LINE, f"cd {shlex.quote(str(ROOT))} || exit 1")
    script = script.replace(API_APP_TARGET, f"--pythonpath {shlex.quote(str(ROOT / 'bench'))} {shlex.quote(app_target)}")
    path = log.with_suffix(".sh")
    path.write_text(script)
    return Proc(["sh", str(path)], {**env, "TRAINYARD_PORT": str(port)}, log)


def wait_http(url: str, proc: Proc, timeout: float = 60) -> None:
    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.log.name} exited:\n{proc.output()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until(up, timeout, 0.2, f"{url} to answer")


class Stack:
    """A fresh database (migrated) and Redis database; the API and a worker started on demand."""

    def __init__(self, name: str = "bench", *, env: Mapping[str, str] | None = None,
                 redis_db: int = REDIS_DB) -> None:
        self.name = name
        self.tmp = Path(tempfile.mkdtemp(prefix=f"trainyard-{name}-"))
        self.db_name = f"trainyard_{name}_{os.getpid()}_{secrets.token_hex(3)}"
        self.database_url = f"{PG_URL_BASE}/{self.db_name}"
        self.redis_url = f"{REDIS_BASE}/{redis_db}"
        self.env = base_env({
            "TRAINYARD_DATABASE_URL": self.database_url,
            "TRAINYARD_BROKER_URL": self.redis_url,
            "TRAINYARD_VAR_DIR": str(self.tmp / "var"),
            **(env or {}),
        })
        self.api: Proc | None = None
        self.worker: Proc | None = None
        self.base_url = ""
        self._created = False
        self._db: Any = None

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> "Stack":
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def create(self) -> None:
        """Create the database and migrate it with bin/migrate; flush the Redis database."""
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self._created = True
        redis.Redis.from_url(self.redis_url).flushdb()
        subprocess.run([str(ROOT / "bin" / "migrate")], env=self.env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self, *, api: bool = True, worker: bool = False) -> "Stack":
        if not self._created:
            self.create()
        if worker:
            self.start_worker()
        if api:
            self.start_api()
        return self

    def start_api(self) -> str:
        port = free_port()
        self.api = Proc([str(ROOT / "bin" / "api")], {**self.env, "TRAINYARD_PORT": str(port)},
                        self.tmp / "api.log")
        self.base_url = f"http://127.0.0.1:{port}"
        wait_http(self.base_url + "/healthz", self.api)
        return self.base_url

    def start_worker(self, timeout: float = 180) -> Proc:
        """`bin/worker`, waited for until its first heartbeat row."""
        from sqlalchemy import func, select

        from trainyard.db.models import Worker

        def count() -> int:
            with self.db().session() as s:
                return s.execute(select(func.count()).select_from(Worker)).scalar_one()

        before = count()
        self.worker = Proc([str(ROOT / "bin" / "worker")], self.env, self.tmp / "worker.log")

        def ready() -> bool:
            if not self.worker.alive():
                raise RuntimeError(f"worker exited:\n{self.worker.output()[-4000:]}")
            return count() > before

        wait_until(ready, timeout, 0.2, "the worker's first heartbeat")
        return self.worker

    def stop(self) -> None:
        for proc in (self.api, self.worker):
            if proc is not None:
                proc.stop()
        self.api = self.worker = None
        if self._db is not None:
            self._db.dispose()
            self._db = None
        if self._created:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            redis.Redis.from_url(self.redis_url).flushdb()
            self._created = False

    # -- what benchmarks use ------------------------------------------------------------------------
    def settings(self) -> Any:
        from trainyard.settings import Settings

        return Settings.from_env(self.env)

    def db(self) -> Any:
        """A `trainyard.db.Database` on the stack's database (one per stack, disposed on stop)."""
        if self._db is None:
            from trainyard.db import Database

            self._db = Database(self.database_url)
        return self._db

    def store(self) -> Any:
        """The artifact store the API uses (TRAINYARD_ARTIFACT_URL of this stack)."""
        from trainyard.store.routing import store_from_settings

        return store_from_settings(self.db(), self.settings())

    def token(self, tenant: str = "bench") -> str:
        """A new API token for `tenant` (created if missing), made with the service's own auth code."""
        from service.auth import create_token

        with self.db().session() as s:
            return create_token(s, tenant).token

    def auth_headers(self, tenant: str = "bench") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(tenant)}"}

    def tenant_id(self, tenant: str) -> str:
        from sqlalchemy import select

        from trainyard.db.models import Tenant

        with self.db().session() as s:
            return s.execute(select(Tenant.id).where(Tenant.name == tenant)).scalar_one()

    def api_worker_pids(self) -> list[int]:
        """The gunicorn worker processes serving requests (children of the master bin/api exec'd)."""
        if self.api is None:
            return []
        return self.api.children()

    def pg_dsn(self) -> str:
        """A libpq DSN for psycopg, for bare baselines that talk to the database directly."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs), so the next peak is this run's."""
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")
