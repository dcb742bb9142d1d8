"""Where the machine's CPU goes during `make bench-scale`'s submit flood: the same load and the same flood
(8 clients of one tenant, 10 s), with every process's CPU time read from /proc before and after, grouped
(Postgres backends of the benchmark's database, the API's gunicorn workers, the clients, Redis, the rest),
in CPU-seconds and milliseconds per accepted submit. Where Postgres has pg_stat_statements loaded
(`shared_preload_libraries`), also its statements during the flood by time per submit. Run:
``.venv/bin/python bench/submit_cpu.py``."""
from __future__ import annotations

import collections
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
import scale
from stack import Stack

HZ = os.sysconf("SC_CLK_TCK")
# What bench/scale.py lifts for its flood (the fair-use quota and the submit rate limit).
ENV = {"TRAINYARD_MAX_ACTIVE_JOBS_PER_TENANT": "10000000", "TRAINYARD_RATE_LIMIT_SUBMIT": "off"}


def cpu_ticks() -> dict[int, tuple[int, str]]:
    """Every process's user + system CPU ticks and its command line."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(pid)] = (int(fields[11]) + int(fields[12]), cmd[:80])
    return out


def group(pid: int, cmd: str, db_name: str) -> str:
    if cmd.startswith("postgres"):
        return "postgres, the benchmark's database" if db_name in cmd else "postgres, the rest"
    if "gunicorn" in cmd:
        return "the API (gunicorn workers)"
    if "redis" in cmd:
        return "redis"
    return "the 8 clients (this process)" if pid == os.getpid() else cmd[:50]


def main() -> None:
    with Stack("submitcpu", env=ENV) as stack:
        data = scale.load(stack, random.Random(0))
        stack.start_api()
        headers = {"Authorization": f"Bearer {data['tokens']['tenant0']}"}
        scale.submit_throughput(stack.base_url, headers, 8, 2, 10**9)  # warm-up
        statements = statement_stats(stack.pg_dsn(), reset=True)
        before, began = cpu_ticks(), time.time()
        res = scale.submit_throughput(stack.base_url, headers, 8, 10, 10**9)
        after, wall = cpu_ticks(), time.time() - began
        if statements is not None:
            statements = statement_stats(stack.pg_dsn(), reset=False)
        spent: collections.Counter[str] = collections.Counter()
        for pid, (ticks, cmd) in after.items():
            seconds = (ticks - before.get(pid, (0, ""))[0]) / HZ
            if seconds > 0:
                spent[group(pid, cmd, stack.db_name)] += seconds
    print(f"{res['accepted']} accepted in {res['seconds']:.1f} s ({res['jobs_per_s']:.0f} jobs/s, {res['errors']} "
          f"errors); {os.cpu_count()} cores x {wall:.1f} s = {os.cpu_count() * wall:.1f} CPU-s")
    for name, seconds in spent.most_common(8):
        print(f"{seconds:7.2f} CPU-s {seconds / res['accepted'] * 1000:6.2f} ms per submit  {name}")
    if statements is None:
        print("(pg_stat_statements is not loaded: no per-statement figures)")
        return
    print("Postgres statements during the flood (pg_stat_statements), ms per submit: execution + planning, calls")
    for text, exec_ms, plan_ms, calls in statements[:12]:
        print(f"{exec_ms / res['accepted']:6.3f} + {plan_ms / res['accepted']:6.3f} ms {calls:7d}  {text[:110]}")


def statement_stats(dsn: str, *, reset: bool) -> list[tuple[str, float, float, int]] | None:
    """The benchmark database's statements from pg_stat_statements, by total time; None where the extension
    is not loaded. `reset` zeroes them first."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            if reset:
                conn.execute("SELECT pg_stat_statements_reset()")
                return []
            rows = conn.execute(
                "SELECT regexp_replace(query, '\\s+', ' ', 'g'), total_exec_time, total_plan_time, calls "
                "FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "ORDER BY total_exec_time + total_plan_time DESC").fetchall()
            return [(q, float(e), float(p), int(c)) for q, e, p, c in rows]
    except psycopg.Error:
        return None


if __name__ == "__main__":
    main()
