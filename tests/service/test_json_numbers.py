"""Numbers in JSON columns read back from real Postgres exactly as they were written: a float stays a float.

JSONB stores numbers as `numeric` and writes 1e+20 back as 100000000000000000000, which Python reads as
an int; trainyard.db.dumps_json writes such floats in full with a fraction, which JSONB keeps.
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from trainyard.db import dumps_json
from trainyard.db.models import EpochMetrics
from tests.conftest import tiny_spec

FLOATS = [1e20, 1e16, 1.7976931348623157e308, -3.4028234663852886e38, 1.5e300, 5e-324, 1e-10, 0.1, 1.0, -0.0]


@pytest.mark.parametrize("value", FLOATS + [10**20, "1e+20 stays a string", {"k": [1e21, 3]}])
def test_dumps_json_keeps_every_value_and_its_type(value: Any) -> None:
    back = json.loads(dumps_json(value))
    assert back == value and type(back) is type(value)


def test_postgres_reads_back_every_float_as_a_float(app: Any) -> None:
    db = app.extensions["trainyard"].db
    assert db.engine.dialect.name == "postgresql"
    with db.read_connection() as conn:
        for value in FLOATS:
            back = conn.execute(text("SELECT CAST(:doc AS jsonb)"), {"doc": dumps_json({"v": value})}).scalar_one()
            assert type(back["v"]) is float and back["v"] == value, (value, back)
        # What json.dumps alone would have stored:
        plain = conn.execute(text("SELECT CAST(:doc AS jsonb)"), {"doc": json.dumps({"v": 1e20})}).scalar_one()
        assert type(plain["v"]) is int


def test_a_spec_and_its_metrics_read_back_with_their_floats(client: Any, auth: dict[str, str], app: Any) -> None:
    raw = tiny_spec(optimizer={"type": "adam", "learning_rate": 1, "epsilon": 1e-12, "clipnorm": 1e6},
                    callbacks={"early_stopping": {"min_delta": 1e9, "patience": 1}})
    created = client.post("/v1/jobs", json=raw, headers=auth)
    assert created.status_code == 201, created.get_json()
    job_id = created.get_json()["id"]
    # A diverging regression's loss, written through the model as the worker writes it.
    with app.extensions["trainyard"].db.session() as s:
        s.add(EpochMetrics(job_id=job_id, epoch=1, values={"loss": 1e20, "val_loss": 3.4e38, "learning_rate": 1.0}))

    spec = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["spec"]
    assert spec["optimizer"]["learning_rate"] == 1.0 and type(spec["optimizer"]["learning_rate"]) is float
    assert type(spec["optimizer"]["clipnorm"]) is float and type(spec["optimizer"]["epsilon"]) is float
    assert spec["callbacks"]["early_stopping"]["min_delta"] == 1e9
    assert type(spec["callbacks"]["early_stopping"]["min_delta"]) is float
    row = client.get(f"/v1/jobs/{job_id}/metrics", headers=auth).get_json()["epochs"][0]
    assert row["loss"] == 1e20 and type(row["loss"]) is float
    assert row["val_loss"] == 3.4e38 and type(row["val_loss"]) is float
    assert type(row["learning_rate"]) is float
