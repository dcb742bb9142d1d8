"""Scale: list and metrics latency with 10,000 jobs and 1,000,000 metric rows in Postgres, and submit
throughput, against the API under gunicorn via bin/api (production's settings).

Data (bulk-loaded with COPY): 10,000 jobs over 4 tenants (the measured tenant has 5,000), a realistic
mix of statuses (succeeded 70 %, failed 10 %, cancelled 5 %, queued 10 %, running 5 %) spread over 30
days, each with a real validated spec, two labels (`team`: one of 4 values, `exp`: one of 100) and a best
value once it has run; 1,000 of the measured tenant's finished jobs have 1,000 epochs of metrics each (loss,
val_loss, accuracy, val_accuracy, learning_rate, seconds).

Measured with one keep-alive HTTP client, one request at a time: the first page of the job list, deep
pages through `next_cursor` (also with `?status=`), label filters, sorts by best value and name searches
(first and deep pages), a 1,000-epoch job's metrics and a poll of its last epochs (`?after=`). Submit throughput: concurrent clients POSTing valid specs; no worker runs, the jobs
just queue. Targets (issue #8): list and metrics p99 <= 20 ms; submit >= 200 jobs/s.
Run: ``make bench-scale`` or ``.venv/bin/python bench/scale.py [--requests 200 --submitters 8]``.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
import requests  # noqa: E402
from stack import Stack  # noqa: E402

JOBS, TENANTS, MEASURED_JOBS = 10_000, 4, 5_000
METRIC_JOBS, EPOCHS = 1_000, 1_000
STATUS_MIX = [("succeeded", 0.70), ("failed", 0.10), ("cancelled", 0.05), ("queued", 0.10), ("running", 0.05)]
TARGET_P99_MS, TARGET_SUBMIT_PER_S = 20.0, 200.0

SPEC = {
    "name": "scale",
    "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
    "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                                              {"type": "dropout", "rate": 0.1},
                                              {"type": "dense", "units": 10, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.002},
    "callbacks": {"early_stopping": {"monitor": "val_loss", "patience": 5, "restore_best_weights": True}},
    "training": {"epochs": 25, "batch_size": 32, "seed": 0},
}


def _copy(conn: psycopg.Connection, table: str, columns: list[str], rows: list[tuple]) -> None:
    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def load(stack: Stack, rng: random.Random) -> dict[str, object]:
    """Tenants, 10,000 jobs and 1,000,000 metric rows, straight into Postgres with COPY."""
    from trainyard.spec import validate_spec

    spec = validate_spec(json.loads(json.dumps(SPEC)))
    tokens = {f"tenant{i}": stack.token(f"tenant{i}") for i in range(TENANTS)}
    tenant_ids = {name: stack.tenant_id(name) for name in tokens}
    now = datetime.now(timezone.utc)
    statuses = [s for s, _ in STATUS_MIX]
    weights = [w for _, w in STATUS_MIX]
    jobs, labels, measured = [], [], []
    for i in range(JOBS):
        tenant = "tenant0" if i < MEASURED_JOBS else f"tenant{1 + i % (TENANTS - 1)}"
        status = rng.choices(statuses, weights)[0]
        created = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        job_id = f"job_{uuid.UUID(int=rng.getrandbits(128)).hex}"
        finished = status in ("succeeded", "failed", "cancelled")
        epoch = EPOCHS if finished else (rng.randint(1, 24) if status == "running" else 0)
        name = f"scale-{i}"
        job_labels = {"team": ("vision", "nlp", "speech", "tabular")[i % 4], "exp": f"e{i % 100}"}
        row_spec = json.dumps({**spec, "name": name, "labels": job_labels})
        best = round(rng.uniform(0.05, 2.0), 6) if epoch else None
        labels += [(job_id, key, value, tenant_ids[tenant], created) for key, value in job_labels.items()]
        jobs.append((job_id, tenant_ids[tenant], name, status, row_spec, created,
                     created + timedelta(seconds=5) if status != "queued" else None,
                     created + timedelta(hours=1) if finished else None, epoch, EPOCHS,
                     1 if status != "queued" else 0, False, created, 3, 0,
                     # A failed job always says why (trainyard/job_errors.py; the database refuses one without).
                     "nan_loss" if status == "failed" else None,
                     "The loss became NaN." if status == "failed" else None,
                     json.dumps(job_labels), best, 1 if best is not None else None, "val_loss" if best else None))
        if tenant == "tenant0" and status == "succeeded":
            measured.append(job_id)
    with psycopg.connect(stack.pg_dsn()) as conn:
        _copy(conn, "jobs", ["id", "tenant_id", "name", "status", "spec", "created_at", "started_at",
                             "finished_at", "epoch", "epochs", "attempts", "cancel_requested", "enqueued_at",
                             "max_attempts", "interruptions", "error_code", "error_message", "labels",
                             "best_value", "best_epoch", "best_monitor"], jobs)
        _copy(conn, "job_labels", ["job_id", "key", "value", "tenant_id", "created_at"], labels)
        metric_jobs = measured[:METRIC_JOBS]
        # Generated in Postgres: a loss curve decaying per epoch, the way a worker's rows look.
        conn.execute(
            """INSERT INTO epoch_metrics (job_id, epoch, values, created_at)
               SELECT j, e, jsonb_build_object(
                   'loss', round((2.3 * power(0.997, e))::numeric, 6),
                   'val_loss', round((2.415 * power(0.997, e))::numeric, 6),
                   'accuracy', round((1 - 0.92 * power(0.997, e))::numeric, 6),
                   'val_accuracy', round((1 - 0.96 * power(0.997, e))::numeric, 6),
                   'learning_rate', 0.002, 'seconds', round((0.2 + random() * 0.2)::numeric, 4)), now()
               FROM unnest(%s::text[]) AS j, generate_series(1, %s) AS e""",
            (metric_jobs, EPOCHS),
        )
        conn.execute("ANALYZE")
    return {"tokens": tokens, "metric_job": metric_jobs[0], "jobs": len(jobs),
            "metric_rows": len(metric_jobs) * EPOCHS}


def timed(session: requests.Session, url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = session.get(url, headers=headers, timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:300]}")
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[max(0, int(len(samples) * 0.99) - 1)],
            "bytes": len(resp.content)}


def cursors(session: requests.Session, base: str, headers: dict[str, str], query: str, pages: int) -> list[str]:
    """Walk `pages` pages of the list and return every next_cursor seen."""
    out, cursor = [], None
    for _ in range(pages):
        url = f"{base}/v1/jobs?{query}" + (f"&cursor={cursor}" if cursor else "")
        cursor = session.get(url, headers=headers, timeout=30).json()["next_cursor"]
        if cursor is None:
            break
        out.append(cursor)
    return out


def submit_throughput(base: str, headers: dict[str, str], clients: int, seconds: float, cap: int) -> dict[str, float]:
    count, errors = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        s = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                if count[0] + errors[0] >= cap:
                    return
            resp = s.post(base + "/v1/jobs", json=SPEC, headers=headers, timeout=30)
            with lock:
                if resp.status_code == 201:
                    count[0] += 1
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {"jobs_per_s": count[0] / elapsed, "accepted": count[0], "errors": errors[0], "seconds": elapsed}


def explain(stack: Stack, tenant_id: str) -> list[tuple[str, str]]:
    """The plans Postgres picks for the list's deep page and the metrics poll (index use)."""
    queries = {
        "list deep page": ("SELECT id FROM jobs WHERE tenant_id = %s AND (created_at, id) < "
                           "(now() - interval '20 days', 'job_z') ORDER BY created_at DESC, id DESC LIMIT 21",
                           (tenant_id,)),
        "list ?status=failed deep page": ("SELECT id FROM jobs WHERE tenant_id = %s AND status = 'failed' AND "
                                          "(created_at, id) < (now() - interval '20 days', 'job_z') "
                                          "ORDER BY created_at DESC, id DESC LIMIT 21", (tenant_id,)),
        "metrics ?after=": ("SELECT epoch FROM epoch_metrics WHERE job_id = 'job_x' AND epoch > 990 "
                            "ORDER BY epoch", None),
        # service/api/representations.py's queue_positions: the partial index ix_jobs_queue, in queue order.
        "queue positions": ("SELECT id, position FROM (SELECT id, row_number() OVER (PARTITION BY resource_class "
                            "ORDER BY coalesce(enqueued_at, created_at), id) AS position FROM jobs "
                            "WHERE status = 'queued') AS q WHERE id = ANY(%s)", (["job_x", "job_y"],)),
    }
    out = []
    with psycopg.connect(stack.pg_dsn()) as conn:
        for name, (sql, params) in queries.items():
            plan = [r[0] for r in conn.execute("EXPLAIN " + sql, params).fetchall()]
            scan = next((p.strip() for p in plan if "Index" in p), plan[0].strip())
            cond = next((p.strip() for p in plan if "Index Cond" in p), "")
            out.append((name, f"{scan}; {cond}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per measured endpoint")
    parser.add_argument("--submitters", type=int, default=8, help="concurrent submitting clients")
    parser.add_argument("--submit-seconds", type=float, default=10.0)
    parser.add_argument("--set", action="append", default=[], metavar="TRAINYARD_X=VALUE")
    args = parser.parse_args()
    rng = random.Random(0)

    # The fair-use quota (TRAINYARD_MAX_ACTIVE_JOBS_PER_TENANT, 50 by default) and the submit rate limit
    # (TRAINYARD_RATE_LIMIT_SUBMIT, 600 per minute) would refuse the submit test with 429s: it measures
    # how fast the API can accept jobs, so both are lifted for this flood, and only here.
    env = {"TRAINYARD_MAX_ACTIVE_JOBS_PER_TENANT": "10000000", "TRAINYARD_RATE_LIMIT_SUBMIT": "off",
           **dict(item.split("=", 1) for item in args.set)}
    with Stack("scale", env=env) as stack:
        t0 = time.perf_counter()
        data = load(stack, rng)
        print(f"loaded {data['jobs']} jobs and {data['metric_rows']} metric rows in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        stack.start_api()
        base = stack.base_url
        headers = {"Authorization": f"Bearer {data['tokens']['tenant0']}"}
        s = requests.Session()
        deep = cursors(s, base, headers, "limit=20", 200)
        deep_failed = cursors(s, base, headers, "limit=20&status=failed", 20)
        deep_label = cursors(s, base, headers, "limit=20&label=team:vision", 50)
        deep_best = cursors(s, base, headers, "limit=20&sort=-best_value", 100)
        job = data["metric_job"]
        cases = {
            "list first page": f"{base}/v1/jobs",
            "list first page, limit=200": f"{base}/v1/jobs?limit=200",
            "list page 200 (cursor)": f"{base}/v1/jobs?limit=20&cursor={deep[-1]}",
            "list ?status=failed page 20": f"{base}/v1/jobs?limit=20&status=failed&cursor={deep_failed[-1]}",
            "list ?status=running": f"{base}/v1/jobs?status=running",
            "list ?label=team:vision": f"{base}/v1/jobs?label=team:vision",
            "list ?label=team:vision page 50": f"{base}/v1/jobs?limit=20&label=team:vision&cursor={deep_label[-1]}",
            "list ?label=exp:e7&label=team:tabular": f"{base}/v1/jobs?label=exp:e7&label=team:tabular",
            "list ?sort=-best_value": f"{base}/v1/jobs?sort=-best_value",
            "list ?sort=-best_value page 100": f"{base}/v1/jobs?limit=20&sort=-best_value&cursor={deep_best[-1]}",
            "list ?label=exp:e7&sort=-best_value": f"{base}/v1/jobs?label=exp:e7&sort=-best_value",
            "list ?name=scale-4321 (rare)": f"{base}/v1/jobs?name=scale-4321",
            "list ?name=scale-1 (common)": f"{base}/v1/jobs?name=scale-1",
            "metrics, 1,000 epochs": f"{base}/v1/jobs/{job}/metrics",
            "metrics ?after=990": f"{base}/v1/jobs/{job}/metrics?after=990",
        }
        for url in cases.values():  # warm-up: the token cache, pools, prepared statements
            timed(s, url, headers, 5)
        results = {}
        for name, url in cases.items():
            results[name] = timed(s, url, headers, args.requests)
            r = results[name]
            print(f"{name:40} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  ({r['bytes']} bytes)", flush=True)
        submit = submit_throughput(base, headers, args.submitters, args.submit_seconds, cap=5000)
        plans = explain(stack, stack.tenant_id("tenant0"))

    print()
    print(f"{'endpoint':42}{'p50 ms':>9}{'p99 ms':>9}  target p99 <= {TARGET_P99_MS:.0f} ms")
    for name, r in results.items():
        ok = "ok" if r["p99_ms"] <= TARGET_P99_MS else "MISSED"
        print(f"{name:42}{r['p50_ms']:9.2f}{r['p99_ms']:9.2f}  {ok}")
    ok = "ok" if submit["jobs_per_s"] >= TARGET_SUBMIT_PER_S else "MISSED"
    print(f"submit, {args.submitters} clients: {submit['jobs_per_s']:.0f} jobs/s ({submit['accepted']} accepted, "
          f"{submit['errors']} errors)  target >= {TARGET_SUBMIT_PER_S:.0f}  {ok}")
    for name, plan in plans:
        print(f"plan, {name}: {plan}")
    print(json.dumps({
        "benchmark": "scale", "jobs": data["jobs"], "metric_rows": data["metric_rows"],
        "latency_ms": {name: {"p50": round(r["p50_ms"], 2), "p99": round(r["p99_ms"], 2)} for name, r in results.items()},
        "submit_jobs_per_s": round(submit["jobs_per_s"], 1), "submit_errors": submit["errors"],
        "p99_ok": all(r["p99_ms"] <= TARGET_P99_MS for r in results.values()),
        "submit_ok": submit["jobs_per_s"] >= TARGET_SUBMIT_PER_S,
    }))


if __name__ == "__main__":
    main()
