"""`make run`: migrate, make sure a dev token exists, start the API and one worker, and keep them running:
either one that dies (killed, out of memory) is started again with backoff while the other keeps serving; a
killed worker's job resumes from its last backup on the restarted worker (its lease expires and the new
worker's reaper re-queues it). Ctrl-C stops both.

It starts exactly the scripts docker-compose.yml runs (`bin/migrate`, `bin/api`, `bin/worker`), with the
same environment variables, so the embedded default and the Postgres/Redis set-up differ only in settings.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from trainyard.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The scripts find gunicorn, celery and alembic next to this interpreter (the project's .venv).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "service", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def ensure_token(settings: Settings, env: dict[str, str]) -> str:
    path = settings.var_dir / "dev-token"
    if path.exists():
        token = path.read_text().strip()
        if token and _flask(env, "tokens", "check", token).returncode == 0:
            return token
    created = _flask(env, "tokens", "create", "--tenant", "dev", "--quiet")
    if created.returncode != 0:
        sys.exit(f"could not create a dev token:\n{created.stderr}")
    token = created.stdout.strip()
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


# A process that dies is started again after 1 s, then 2, 4, ... up to 30 s while it keeps dying; one that
# ran this long before it died counts as healthy again and restarts after 1 s.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0
# How long a process may take to stop on SIGTERM (a worker finishes its batch and backup) before SIGKILL.
STOP_TIMEOUT_SECONDS = 20.0


class Supervised:
    """One `bin/` script, restarted with backoff whenever it exits until `make run` stops."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.delay = BACKOFF_FIRST_SECONDS
        self.restart_at: float | None = None

    def start(self) -> None:
        # Its own session: Ctrl-C reaches only this supervisor, which stops the children in order.
        self.proc = subprocess.Popen([str(ROOT / "bin" / self.name)], cwd=ROOT, env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None
        print(f"{self.name}: started (pid {self.proc.pid})", flush=True)

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def check(self) -> None:
        """Notice an exit (and schedule the restart), or restart when the backoff has passed."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return
        if not self.exited():
            return
        assert self.proc is not None
        # What it left behind goes with it (gunicorn's workers outlive a killed master for a moment, holding
        # the port the next master needs).
        _kill_group(self.proc.pid, signal.SIGKILL)
        self.delay = BACKOFF_FIRST_SECONDS if now - self.started_at >= STABLE_SECONDS else self.delay
        print(f"{self.name}: exited with {self.proc.returncode}; restarting in {self.delay:.0f} s", file=sys.stderr,
              flush=True)
        self.restart_at = now + self.delay
        self.delay = min(self.delay * 2, BACKOFF_MAX_SECONDS)

    def terminate(self) -> None:
        self.restart_at = None
        if self.proc is not None and self.proc.poll() is None:
            _kill_group(self.proc.pid, signal.SIGTERM)

    def wait_stopped(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{self.name}: did not stop within {STOP_TIMEOUT_SECONDS:.0f} s; killing it", file=sys.stderr)
        _kill_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _wait_healthy(url: str, children: list[Supervised], stopping: threading.Event, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.is_set():
        if any(c.exited() for c in children):
            # At start-up an exit is a configuration problem (a port in use, bad settings), not a crash.
            raise SystemExit("a process exited during start-up; see its output above")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    if not stopping.is_set():
        raise SystemExit(f"the API did not answer on {url} within {timeout:.0f} s")


def _stop_all(children: list[Supervised]) -> None:
    for c in children:
        c.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for c in children:
        c.wait_stopped(deadline)


def main() -> None:
    settings = Settings.from_env()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    env = _env()
    subprocess.run([str(ROOT / "bin" / "migrate")], cwd=ROOT, env=env, check=True)
    token = ensure_token(settings, env)
    url = f"http://{settings.host}:{settings.port}"
    children = [Supervised("api", env), Supervised("worker", env)]
    stopping = threading.Event()

    def on_signal(*_: object) -> None:
        # Only a flag: the loop below notices it within 0.2 s, never in the middle of starting a process.
        if stopping.is_set():  # a second Ctrl-C: stop waiting for a graceful stop
            for c in children:
                if c.proc is not None:
                    _kill_group(c.proc.pid, signal.SIGKILL)
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        for c in children:
            c.start()
        _wait_healthy(url, children, stopping)
        if not stopping.is_set():
            mode = "embedded (SQLite, SQLite broker)" if settings.is_embedded else "external database and broker"
            print(
                f"\nTrainyard is running ({mode}); data in {settings.var_dir}\n"
                f"  URL:   {url}\n"
                f"  token: {token}   (also in {settings.var_dir / 'dev-token'})\n"
                f"  try:   curl -H \"Authorization: Bearer $(cat {settings.var_dir / 'dev-token'})\" "
                f"{url}/v1/datasets\n"
                f"Press Ctrl-C to stop.\n",
                flush=True,
            )
        while not stopping.is_set():
            for c in children:
                c.check()
            stopping.wait(0.2)
    finally:
        _stop_all(children)


if __name__ == "__main__":
    main()
