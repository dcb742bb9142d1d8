"""The bare baseline of bench/status_throughput.py: a Flask app with one JSON endpoint and nothing else
(no auth, no database), returning the body saved in BENCH_BARE_BODY (a real job resource, so both sides
serialise the same JSON). Served by gunicorn with bin/api's flags (see bench/stack.py)."""
from __future__ import annotations

import json
import os

from flask import Flask, jsonify

app = Flask("bare")
app.json.sort_keys = False
with open(os.environ["BENCH_BARE_BODY"], encoding="utf-8") as fh:
    BODY = json.load(fh)


@app.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify({"status": "ok"})


@app.get("/v1/jobs/<job_id>")
def get_job(job_id: str):  # type: ignore[no-untyped-def]
    return jsonify(BODY)
