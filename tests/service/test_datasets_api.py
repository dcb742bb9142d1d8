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


def _upload(client: Any, headers: dict[str, str], content: bytes, filename: str, *, raw: bool = False,
            **form: str) -> Any:
    """A multipart form with the field `file` (curl -F), or with `raw` the file as the body and the fields as
    query parameters (the client's way)."""
    if raw:
        return client.post("/v1/datasets", headers=headers, content_type="application/octet-stream", data=content,
                           query_string={"name": filename, **form})
    return client.post("/v1/datasets", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(content), filename), **form})


BOTH_FORMS = pytest.mark.parametrize("raw", [False, True], ids=["multipart", "body"])


@BOTH_FORMS
def test_upload_get_list_delete(client: Any, auth: dict[str, str], other_auth: dict[str, str], raw: bool) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3)).astype("float32")
    resp = _upload(client, auth, _npz(x_train=x, y_train=np.arange(50) % 2), "../../etc/passwd.npz", raw=raw)
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
@BOTH_FORMS
def test_bad_uploads_are_422_saying_what_is_wrong(
    client: Any, auth: dict[str, str], content: bytes, filename: str, form: dict[str, str], field: str, words: str,
    raw: bool,
) -> None:
    resp = _upload(client, auth, content, filename, raw=raw, **form)
    assert resp.status_code == 422, resp.get_json()
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    if raw and field == "target":
        field = "query.target"  # a query parameter when the body is the file
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


@BOTH_FORMS
def test_upload_over_the_cap_is_413(settings: Any, make_token: Any, raw: bool) -> None:
    from dataclasses import replace

    small = create_app(replace(settings, max_upload_bytes=4096))
    headers = {"Authorization": f"Bearer {make_token('uploader')}"}
    x = np.zeros((1000, 4), dtype="float32")
    resp = _upload(small.test_client(), headers, _npz(x_train=x, y_train=np.zeros(1000)), "big.npz", raw=raw)
    assert resp.status_code == 413
    assert resp.mimetype == "application/problem+json"


def test_body_upload_takes_its_format_from_the_media_type_or_the_query(client: Any, auth: dict[str, str]) -> None:
    csv = b"a,b,price\n1,2,3.5\n4,5,6.5\n7,8,9.5\n"
    as_csv = client.post("/v1/datasets", headers=auth, content_type="text/csv", data=csv,
                         query_string={"target": "price"})
    assert as_csv.status_code == 201, as_csv.get_json()
    body = as_csv.get_json()
    assert (body["format"], body["name"], body["splits"]["train"]) == ("csv", "upload", 3)
    x = np.ones((4, 2), dtype="float32")
    by_query = _upload(client, auth, _npz(x_train=x, y_train=np.zeros(4)), "data.bin", raw=True, format="npz")
    assert by_query.status_code == 201, by_query.get_json()
    assert (by_query.get_json()["format"], by_query.get_json()["name"]) == ("npz", "data.bin")


def test_body_upload_needs_its_length_and_all_of_it(client: Any, auth: dict[str, str]) -> None:
    content = _npz(x_train=np.ones((4, 2)), y_train=np.zeros(4))
    unsized = client.post("/v1/datasets?name=x.npz", headers={**auth, "Transfer-Encoding": "chunked"},
                          content_type="application/octet-stream", input_stream=io.BytesIO(content),
                          environ_overrides={"wsgi.input_terminated": True})
    assert unsized.status_code == 411 and unsized.mimetype == "application/problem+json"
    assert "Content-Length" in unsized.get_json()["detail"]
    short = client.post("/v1/datasets?name=x.npz", headers=auth, content_type="application/octet-stream",
                        input_stream=io.BytesIO(content), environ_overrides={"CONTENT_LENGTH": str(len(content) + 10)})
    assert short.status_code == 400 and short.mimetype == "application/problem+json"
    assert f"ended after {len(content)} of the {len(content) + 10} bytes" in short.get_json()["detail"]
    listed = client.get("/v1/datasets", headers=auth).get_json()["datasets"]
    assert not [d for d in listed if not d["builtin"] and d["name"] == "x.npz"]


def test_other_media_types_are_415(client: Any, auth: dict[str, str]) -> None:
    resp = client.post("/v1/datasets", headers=auth, json={"file": "x.npz"})
    assert resp.status_code == 415 and resp.mimetype == "application/problem+json"
    assert "application/octet-stream" in resp.get_json()["detail"]
