"""A Postgres server of a test's own: a throw-away cluster made with the machine's Postgres binaries
(initdb into a temporary directory, trust authentication, a free port on loopback), so a test can restart
it without touching the shared cluster every other test, running at the same time, depends on."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.conftest import free_port, subprocess_env


def _bindir() -> Path:
    """The newest installed server's binaries (Debian keeps them out of PATH, under /usr/lib/postgresql)."""
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    if not versions:
        raise RuntimeError("no Postgres server binaries under /usr/lib/postgresql/<version>/bin")
    return max(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


class PostgresServer:
    def __init__(self) -> None:
        self.bin = _bindir()
        self.port = free_port()
        # Not under pytest's tmp_path: Postgres refuses to run as root, and root's pytest directories are
        # private to root, so the cluster lives in a directory of its own that the `postgres` user owns.
        self.base = Path(tempfile.mkdtemp(prefix="trainyard-pg-"))
        self.data, self.socket_dir, self.log = self.base / "data", self.base / "sock", self.base / "server.log"
        self.socket_dir.mkdir()
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            for path in (self.base, self.socket_dir):
                shutil.chown(path, self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.admin_dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.url_base = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([str(self.bin / tool), *args], check=True, timeout=120, user=self._user, cwd=self.base,
                       env=subprocess_env({}), stdout=subprocess.DEVNULL)

    def _pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", *args)

    def start(self) -> None:
        self._pg_ctl("start")
        with psycopg.connect(self.admin_dsn) as conn:
            conn.execute("SELECT 1")

    def restart(self) -> None:
        """A fast shutdown and start, as `pg_ctlcluster restart` does: every session is disconnected."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
