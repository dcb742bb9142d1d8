"""psycopg's waits in a gevent-patched process (the API's gunicorn gevent workers): trainyard.db installs a
wait on one libev watcher in place of psycopg's poll emulation. Each check runs in a fresh interpreter,
since gevent must patch before psycopg is imported."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import subprocess_env

PRELUDE = """
from gevent import monkey
monkey.patch_all()
import gevent, psycopg, socket
from psycopg import waiting, errors
from trainyard.db import make_engine
from trainyard.db.gevent_wait import wait_gevent
"""


def run(pg_url: str, body: str, patched: bool = True) -> str:
    code = (PRELUDE if patched else PRELUDE.replace("monkey.patch_all()", "")) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env({"PG": pg_url}), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_a_gevent_process_waits_on_a_watcher_and_others_keep_it(pg_url: str) -> None:
    assert run(pg_url, """
        import os
        make_engine(os.environ["PG"])
        print(waiting.wait is wait_gevent)
    """).split() == ["True"]
    # Not patched (a worker, a tool): psycopg keeps its own choice, the C wait.
    assert run(pg_url, """
        import os
        make_engine(os.environ["PG"])
        print(waiting.wait is wait_gevent, waiting.wait is waiting.wait_c)
    """, patched=False).split() == ["False", "True"]


def test_a_query_blocked_in_postgres_parks_only_its_greenlet(pg_url: str) -> None:
    # Greenlet `blocked` waits in Postgres for an advisory lock that greenlet `holder` takes first and
    # releases only after a third query of its own ran: with a wait that blocked the process, `holder`
    # could never run again and the join would give up with the lock still taken.
    out = run(pg_url, """
        import os
        engine = make_engine(os.environ["PG"])
        dsn = os.environ["PG"].replace("postgresql+psycopg://", "postgresql://")
        holder_conn = psycopg.connect(dsn, autocommit=True)
        blocked_conn = psycopg.connect(dsn, autocommit=True)
        holder_conn.execute("SELECT pg_advisory_lock(2121)")
        order = []
        def blocked():
            order.append("blocked waits")
            blocked_conn.execute("SELECT pg_advisory_lock(2121)")
            order.append("blocked got the lock")
        def holder():
            gevent.sleep(0)
            with engine.connect() as conn:
                from sqlalchemy import text
                conn.execute(text("SELECT 1"))
            order.append("holder ran a query meanwhile")
            holder_conn.execute("SELECT pg_advisory_unlock(2121)")
        jobs = [gevent.spawn(blocked), gevent.spawn(holder)]
        gevent.joinall(jobs, timeout=30)
        print("|".join(order))
    """)
    assert out.strip() == "blocked waits|holder ran a query meanwhile|blocked got the lock"


def test_the_deadline_is_kept_and_readiness_is_exact() -> None:
    out = run("", """
        a, b = socket.socketpair()
        def never_readable():
            yield waiting.WAIT_R
        try:
            wait_gevent(never_readable(), a.fileno(), timeout=0.2)
            print("returned")
        except errors._WaitTimeout:
            print("timed out")
        b.send(b"x")
        def read_then_write():
            got = yield waiting.WAIT_RW
            print("ready", got)
            return "done"
        print(wait_gevent(read_then_write(), a.fileno()))
    """)
    assert out.split("\n")[:3] == ["timed out", "ready 3", "done"]
