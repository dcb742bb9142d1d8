"""Tenant isolation and untrusted names: tokens stored as hashes and compared in constant time, artifact
keys built from server ids only, hostile ids and file names never reaching a path."""
from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from service import create_app
from trainyard.db import Database
from trainyard.db.models import ApiToken
from trainyard.store import FsspecStore, backup_key, checkpoint_key, dataset_key


def test_tokens_are_stored_only_as_sha256_and_compared_in_constant_time(
        app: Any, make_token: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import auth

    token = make_token("hash-check")
    with app.extensions["trainyard"].db.session() as s:
        rows = s.execute(select(ApiToken)).scalars().all()
        stored = [(r.token_hash, r.prefix) for r in rows]
    assert (hashlib.sha256(token.encode()).hexdigest(), token[:10]) in stored
    assert not any(token in h or (len(p) > 10) for h, p in stored)  # never the secret, only a short prefix
    compared: list[tuple[str, str]] = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    with app.extensions["trainyard"].db.session() as s:
        assert auth.authenticate(s, token) is not None
        assert auth.authenticate(s, token + "x") is None
    assert compared == [(hashlib.sha256(token.encode()).hexdigest(),) * 2]


@pytest.mark.parametrize("bad", ["../../etc/passwd", "job_" + "0" * 31 + "/", "", "job_X" + "0" * 31,
                                 "/abs", "ds_" + "a" * 32 + "/../x"])
def test_artifact_keys_are_built_from_server_ids_only(bad: str) -> None:
    for make in (lambda: checkpoint_key(bad, 1), lambda: backup_key(bad, 1), lambda: dataset_key(bad)):
        with pytest.raises(ValueError):
            make()
    assert checkpoint_key("job_" + "a" * 32, 7) == f"jobs/job_{'a' * 32}/checkpoints/epoch-0007.keras"


def test_folder_store_never_leaves_its_root(settings: Any, tmp_path: Path) -> None:
    db = Database(settings.database_url)
    store = FsspecStore(db, f"file://{tmp_path}/artifacts")
    for key in ("../outside", "a/../../outside", "/etc/passwd", "a//b", "a\\..\\b", "./x"):
        with pytest.raises(ValueError):
            store.put(key, io.BytesIO(b"x"))
    db.dispose()
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("path", [
    "/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/..%2F..%2Fetc%2Fpasswd/checkpoints/best",
    "/v1/jobs/job_%2E%2E/metrics", "/v1/jobs/%00/diagnostics", "/v1/datasets/..%2F..%2Fetc%2Fpasswd",
    "/v1/datasets/ds_../../x", "/v1/datasets/builtin:..%2Firis", "/v1/jobs/job_0/checkpoints/..%2F..%2Fx",
    "/v1/sweeps/%00", "/v1/sweeps/swp_..%2F..",
])
def test_hostile_ids_in_urls_answer_404(client: Any, auth: dict[str, str], path: str) -> None:
    resp = client.get(path, headers=auth)
    assert resp.status_code == 404, (path, resp.status_code)
    assert resp.mimetype == "application/problem+json"


def test_upload_file_name_never_becomes_a_path(settings: Any, make_token: Any, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    client = create_app(replace(settings, artifact_url=f"file://{root}")).test_client()
    headers = {"Authorization": f"Bearer {make_token('names')}"}
    buf = io.BytesIO()
    np.savez(buf, x_train=np.ones((4, 2), dtype="float32"), y_train=np.array([0, 1, 0, 1]))
    resp = client.post("/v1/datasets", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(buf.getvalue()), "../../../../tmp/evil/../x.npz")})
    assert resp.status_code == 201, resp.get_json()
    ds = resp.get_json()
    assert ds["name"] == "x.npz"
    stored = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert stored == [f"datasets/{ds['id']}"]
    assert not any(p.name == "x.npz" for p in tmp_path.rglob("*"))


def test_zip_bomb_upload_is_refused_without_inflating(settings: Any, make_token: Any) -> None:
    import time

    client = create_app(replace(settings, max_dataset_bytes=1_000_000)).test_client()
    headers = {"Authorization": f"Bearer {make_token('bomber')}"}
    buf = io.BytesIO()
    # 44 MB of zeros in about 50 kB: refused from the zip's central directory.
    np.savez_compressed(buf, x_train=np.zeros((500_000, 10)), y_train=np.zeros(500_000))
    assert len(buf.getvalue()) < 100_000
    start = time.perf_counter()
    resp = client.post("/v1/datasets", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(buf.getvalue()), "bomb.npz")})
    assert resp.status_code == 422
    assert "more than the limit" in resp.get_json()["detail"]
    assert time.perf_counter() - start < 2


def test_object_and_pickled_arrays_never_unpickle(client: Any, auth: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> Any:
            return (Path.touch, (marker,))

    buf = io.BytesIO()
    np.savez(buf, x_train=np.array([Evil(), Evil()], dtype=object), y_train=np.zeros(2))
    resp = client.post("/v1/datasets", headers=auth, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(buf.getvalue()), "evil.npz")})
    assert resp.status_code == 422 and "object" in resp.get_json()["detail"]
    assert not marker.exists()


def test_nul_and_control_characters_in_names_are_not_server_errors(client: Any, auth: dict[str, str]) -> None:
    buf = io.BytesIO()
    np.savez(buf, x_train=np.ones((4, 2), dtype="float32"), y_train=np.array([0, 1, 0, 1]))
    resp = client.post("/v1/datasets", headers=auth, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(buf.getvalue()), "a\x00b\x1b[31m.npz")})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["name"] == "ab[31m.npz"
    resp = client.post("/v1/datasets", headers=auth, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv"), "target": "a\x00"})
    assert resp.status_code == 422 and resp.get_json()["errors"][0]["field"] == "target"
    assert client.get("/v1/jobs?cursor=" + "WyIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsICJcdTAwMDAiXQ", headers=auth).status_code == 422
