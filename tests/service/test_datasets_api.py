"""Data-set uploads through the API against real Postgres: validation errors, caps, isolation."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from service import create_app


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _upload(client: Any, headers: dict[str, str], content: bytes, filename: str, **form: str) -> Any:
    return client.post("/v1/datasets", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(content), filename), **form})


def test_upload_get_list_delete(client: Any, auth: dict[str, str], other_auth: dict[str, str]) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3)).astype("float32")
    resp = _upload(client, auth, _npz(x_train=x, y_train=np.arange(50) % 2), "../../etc/passwd.npz")
    assert resp.status_code == 201, resp.get_json()
    ds = resp.get_json()
    assert ds["id"].startswith("ds_") and resp.headers["Location"] == f"/v1/datasets/{ds['id']}"
    assert ds["name"] == "passwd.npz"  # a label only: the server never uses it as a path
    assert ds["splits"] == {"train": 50, "val": None, "test": None}
    assert ds["task"] == "classification" and ds["n_classes"] == 2
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth).get_json()["sha256"] == ds["sha256"]
    listed = [d["id"] for d in client.get("/v1/datasets", headers=auth).get_json()["datasets"]]
    assert ds["id"] in listed and "builtin:digits" in listed
    # Isolation: another tenant sees neither the data set nor can it train on it.
    assert client.get(f"/v1/datasets/{ds['id']}", headers=other_auth).status_code == 404
    assert ds["id"] not in [d["id"] for d in client.get("/v1/datasets", headers=other_auth).get_json()["datasets"]]
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=other_auth).status_code == 404
    spec = {"dataset": {"id": ds["id"]}, "model": {"input_shape": [3], "layers": [{"type": "dense", "units": 2,
            "activation": "softmax"}]}, "loss": "sparse_categorical_crossentropy"}
    refused = client.post("/v1/jobs", json=spec, headers=other_auth)
    assert refused.status_code == 422
    assert "dataset.id" in {e["field"] for e in refused.get_json()["errors"]}
    assert client.delete(f"/v1/datasets/{ds['id']}", headers=auth).status_code == 204
    assert client.get(f"/v1/datasets/{ds['id']}", headers=auth).status_code == 404


def test_builtin_dataset_is_listed_with_shapes(client: Any, auth: dict[str, str]) -> None:
    body = client.get("/v1/datasets/builtin:iris", headers=auth).get_json()
    assert body["builtin"] is True and body["input_shape"] == [4] and body["n_classes"] == 3
    assert body["splits"] == {"train": 120, "val": None, "test": 30}
    assert body["links"]["self"] == "/v1/datasets/builtin:iris"
    assert client.delete("/v1/datasets/builtin:iris", headers=auth).status_code == 409


@pytest.mark.parametrize(
    ("content", "filename", "form", "field", "words"),
    [
        (b"not a zip", "x.npz", {}, "file", "zip"),
        (_npz(x_train=np.ones((3, 2))), "x.npz", {}, "file", "y_train"),
        (_npz(x_train=np.ones((3, 2)), y_train=np.ones(4)), "x.npz", {}, "file", "same"),
        (_npz(x_train=np.array([[np.nan, 1.0]]), y_train=np.ones(1)), "x.npz", {}, "file", "NaN"),
        (b"a,b\n1,2\n", "x.csv", {"target": "price"}, "target", "price"),
        (b"a,b\n1,oops\n", "x.csv", {"target": "a"}, "file", "oops"),
        (b"a,b\n1,2\n", "x.txt", {}, "file", ".npz or .csv"),
        (b"a,b\n1,2\n", "x.csv", {}, "target", "target"),
    ],
)
def test_bad_uploads_are_422_saying_what_is_wrong(
    client: Any, auth: dict[str, str], content: bytes, filename: str, form: dict[str, str], field: str, words: str
) -> None:
    resp = _upload(client, auth, content, filename, **form)
    assert resp.status_code == 422, resp.get_json()
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert any(e["field"].startswith(field) for e in body["errors"]), body
    assert words.lower() in (body["detail"] + " ".join(e["message"] for e in body["errors"])).lower()


def test_object_arrays_are_refused_without_unpickling(client: Any, auth: dict[str, str]) -> None:
    content = _npz(x_train=np.array([{"a": 1}, None], dtype=object), y_train=np.ones(2))
    resp = _upload(client, auth, content, "evil.npz")
    assert resp.status_code == 422
    assert "object" in resp.get_json()["detail"]


def test_missing_file_field_is_422(client: Any, auth: dict[str, str]) -> None:
    resp = client.post("/v1/datasets", headers=auth, content_type="multipart/form-data", data={"target": "x"})
    assert resp.status_code == 422
    assert resp.get_json()["errors"][0]["field"] == "file"


def test_upload_over_the_cap_is_413(settings: Any, make_token: Any) -> None:
    from dataclasses import replace

    small = create_app(replace(settings, max_upload_bytes=4096))
    headers = {"Authorization": f"Bearer {make_token('uploader')}"}
    x = np.zeros((1000, 4), dtype="float32")
    resp = _upload(small.test_client(), headers, _npz(x_train=x, y_train=np.zeros(1000)), "big.npz")
    assert resp.status_code == 413
    assert resp.mimetype == "application/problem+json"
