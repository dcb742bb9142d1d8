"""`make run`: migrate, make sure a dev token exists, start the API and one worker, stop both on Ctrl-C.

It starts exactly the scripts docker-compose.yml runs (`bin/migrate`, `bin/api`, `bin/worker`), with the
same environment variables, so the embedded default and the Postgres/Redis set-up differ only in settings.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from service.settings import Settings

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


def _wait_healthy(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            sys.exit("a process exited during start-up; see its output above")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the API did not answer on {url} within {timeout:.0f} s")


def main() -> None:
    settings = Settings.from_env()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    env = _env()
    subprocess.run([str(ROOT / "bin" / "migrate")], cwd=ROOT, env=env, check=True)
    token = ensure_token(settings, env)
    url = f"http://{settings.host}:{settings.port}"
    procs = [
        subprocess.Popen([str(ROOT / "bin" / "api")], cwd=ROOT, env=env, start_new_session=True),
        subprocess.Popen([str(ROOT / "bin" / "worker")], cwd=ROOT, env=env, start_new_session=True),
    ]

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    _wait_healthy(url, procs)
    mode = "embedded (SQLite, SQLite broker)" if settings.is_embedded else "external database and broker"
    print(
        f"\nTrainyard is running ({mode}); data in {settings.var_dir}\n"
        f"  URL:   {url}\n"
        f"  token: {token}   (also in {settings.var_dir / 'dev-token'})\n"
        f"  try:   curl -H \"Authorization: Bearer $(cat {settings.var_dir / 'dev-token'})\" {url}/v1/datasets\n"
        f"Press Ctrl-C to stop.\n",
        flush=True,
    )
    while True:
        for p in procs:
            if p.poll() is not None:
                print(f"process {p.args} exited with {p.returncode}; stopping", file=sys.stderr)
                stop()
        time.sleep(0.5)


if __name__ == "__main__":
    main()
