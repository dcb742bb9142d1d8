"""A sample of the option matrix (tests/trainer/test_option_matrix.py) through the whole stack: each fit's
arrays uploaded as an .npz, its raw spec submitted to the API, trained by the session's worker process; each
ends succeeded with a best checkpoint that downloads and loads with plain Keras."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import keras
import numpy as np
import requests

from tests.service.test_training_e2e import wait_final
from tests.trainer.specs import raw_spec
from tests.trainer.test_option_matrix import FITS, data_for


def _first(predicate: Any) -> int:
    return next(i for i, row in enumerate(FITS) if predicate(row))


# One fit of each kind: recurrent layers with reduce-LR-on-plateau, the checkpoint callback with every field
# set, the data set's own validation and test splits, feature vectors, images.
SAMPLE = sorted({
    _first(lambda r: any(layer["type"] == "bidirectional" for layer in r["overrides"]["model"]["layers"])
           and "reduce_lr_on_plateau" in r["overrides"].get("callbacks", {})),
    _first(lambda r: "checkpoint" in r["overrides"].get("callbacks", {})),
    _first(lambda r: r["given_splits"]),
    _first(lambda r: r["inputs"] == "features"),
    _first(lambda r: r["inputs"] == "images"),
})


def _upload(api_url: str, auth: dict[str, str], index: int) -> str:
    data = data_for(FITS[index], index)
    arrays = {name: value for name, value in vars(data).items() if value is not None}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    resp = requests.post(f"{api_url}/v1/datasets", headers=auth, timeout=30,
                         files={"file": (f"matrix-{index}.npz", buf.getvalue())})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def test_a_sample_of_the_matrix_trains_through_the_api_and_the_worker(
        api_url: str, auth: dict[str, str], worker: Any, tmp_path: Path) -> None:
    assert len(SAMPLE) >= 4
    jobs = {}
    for index in SAMPLE:
        raw, _ = raw_spec(data_for(FITS[index], index), **FITS[index]["overrides"])
        raw["dataset"]["id"] = _upload(api_url, auth, index)
        resp = requests.post(f"{api_url}/v1/jobs", json=raw, headers=auth, timeout=10)
        assert resp.status_code == 201, (index, resp.text)
        jobs[index] = resp.json()["id"]
    for index, job_id in jobs.items():
        job = wait_final(api_url, auth, job_id, timeout=300)
        assert job["status"] == "succeeded" and job["stop_reason"] in ("completed", "early_stopping"), (index, job)
        assert job["error"] is None
        best = requests.get(f"{api_url}/v1/jobs/{job_id}/checkpoints/best", headers=auth, timeout=30)
        assert best.status_code == 200, (index, best.text)
        path = tmp_path / f"{index}.keras"
        path.write_bytes(best.content)
        model = keras.models.load_model(path)
        assert model.count_params() == job["model"]["params"], index

