"""The Python client against the live API and worker: typed errors, `wait` with a per-epoch callback,
the verified and resumable checkpoint download, and the installed `trainyard` executable."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client import (
    Conflict,
    ConnectionFailed,
    JobFailed,
    NotFound,
    Trainyard,
    TrainyardError,
    Unauthorized,
    ValidationError,
)
from client.cli import main
from tests.client.conftest import iris_spec
from tests.conftest import ROOT, free_port, subprocess_env


def test_errors_are_typed_and_carry_the_problem_document(ty: Trainyard, api_url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ty.submit(iris_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 0}]}))
    err = caught.value
    assert err.status == 422 and err.title == "Validation failed"
    assert err.type == "https://trainyard.dev/problems/validation_failed"
    assert "model.layers[0].units" in {e["field"] for e in err.errors}
    assert err.detail.startswith("The job spec is not valid")

    with pytest.raises(NotFound) as missing:
        ty.get("job_" + "0" * 32)
    assert missing.value.status == 404 and missing.value.errors == []
    with pytest.raises(Unauthorized):
        Trainyard(api_url, "ty_wrong").list_jobs()
    with pytest.raises(ConnectionFailed) as down:
        Trainyard(f"http://127.0.0.1:{free_port()}", "t").get("job_x")
    assert isinstance(down.value, TrainyardError) and down.value.status is None


def test_wait_calls_on_epoch_once_per_epoch_in_order(ty: Trainyard, worker: Any) -> None:
    job = ty.submit(iris_spec(name="wait-callback", training={"epochs": 3, "batch_size": 16, "seed": 3}))
    seen: list[dict[str, Any]] = []
    final = ty.wait(job["id"], on_epoch=seen.append, poll=0.05, timeout=60)
    assert final["status"] == "succeeded"
    assert [row["epoch"] for row in seen] == [1, 2, 3]
    assert seen == ty.metrics(job["id"])
    with pytest.raises(Conflict):
        ty.cancel(job["id"])
    assert any(j["id"] == job["id"] for j in ty.iter_jobs(status="succeeded", page_size=1))


def test_wait_raises_job_failed_when_asked(ty: Trainyard, worker: Any) -> None:
    job = ty.submit(iris_spec(name="cancel-me", training={"epochs": 5000, "batch_size": 8, "seed": 4}))
    ty.cancel(job["id"])
    with pytest.raises(JobFailed) as caught:
        ty.wait(job["id"], poll=0.1, timeout=60, raise_on_failure=True)
    assert caught.value.job["status"] == "cancelled"


@pytest.fixture(scope="module")
def best(ty: Trainyard, done_job: dict[str, Any]) -> dict[str, Any]:
    [checkpoint] = [c for c in ty.checkpoints(done_job["id"]) if c["is_best"]]
    return checkpoint


def test_download_writes_a_verified_checkpoint_that_keras_loads(
    run_cli: Any, done_job: dict[str, Any], best: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "model.keras"
    result = run_cli("download", done_job["id"], "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"saved {out} ({best['size']} bytes, sha256 {best['sha256']})"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == best["sha256"]
    assert not out.with_name("model.keras.part").exists()

    import keras
    import numpy as np

    model = keras.models.load_model(out)
    assert model.predict(np.zeros((2, 4), "float32"), verbose=0).shape == (2, 3)

    # A folder as --out gets <job id>.keras inside it.
    assert run_cli("download", done_job["id"], "-o", str(tmp_path)).exit_code == 0
    assert (tmp_path / f"{done_job['id']}.keras").read_bytes() == out.read_bytes()


def test_download_resumes_a_partial_file_with_range(
    ty: Trainyard, done_job: dict[str, Any], best: dict[str, Any], tmp_path: Path
) -> None:
    whole = ty.request("GET", f"/v1/jobs/{done_job['id']}/checkpoints/best").content
    out = tmp_path / "best.keras"
    out.with_name("best.keras.part").write_bytes(whole[:1000])
    progress: list[tuple[int, int]] = []
    result = ty.download_best(done_job["id"], out, on_progress=lambda d, t: progress.append((d, t)))
    assert result.resumed_from == 1000 and not result.restarted
    assert out.read_bytes() == whole and result.sha256 == best["sha256"] and result.size == len(whole)
    assert progress[0] == (1000, len(whole)) and progress[-1] == (len(whole), len(whole))


def test_download_starts_over_when_the_partial_file_is_corrupt(
    run_cli: Any, done_job: dict[str, Any], best: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "best.keras"
    part = out.with_name("best.keras.part")
    part.write_bytes(b"\0" * 1000)  # the right length for a prefix, the wrong bytes
    result = run_cli("download", done_job["id"], "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "did not match and was downloaded again" in result.stdout
    assert hashlib.sha256(out.read_bytes()).hexdigest() == best["sha256"] and not part.exists()

    part.write_bytes(b"\0" * (best["size"] + 10))  # longer than the file: the server answers 416
    result = run_cli("download", done_job["id"], "--out", str(out))
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == best["sha256"]


def test_download_of_a_job_without_checkpoint_exits_3(run_cli: Any, tmp_path: Path) -> None:
    result = run_cli("download", "job_" + "1" * 32, "--out", str(tmp_path / "x.keras"))
    assert result.exit_code == 3 and "(404)" in result.stderr
    assert not (tmp_path / "x.keras").exists()


def test_upload_dataset_returns_its_description(ty: Trainyard, tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "tiny.npz"
    x = np.arange(40, dtype="float32").reshape(20, 2)
    np.savez(path, x_train=x, y_train=np.arange(20) % 2)
    ds = ty.upload_dataset(path)
    assert ds["splits"] == {"train": 20, "val": None, "test": None}
    assert ds["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ty.dataset(ds["id"])["id"] == ds["id"]
    ty.delete_dataset(ds["id"])
    with pytest.raises(NotFound):
        ty.dataset(ds["id"])


def _installed(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "trainyard"
    return subprocess.run([str(exe), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_installed_executable_reads_url_and_token_from_the_environment(
    api_url: str, token: str, done_job: dict[str, Any], tmp_path: Path
) -> None:
    env = subprocess_env({"TRAINYARD_URL": api_url, "TRAINYARD_TOKEN": token})
    watched = _installed(["watch", done_job["id"]], env, tmp_path)
    assert watched.returncode == 0, watched.stderr
    assert [line.split()[1] for line in watched.stdout.splitlines() if line.startswith("epoch ")] == \
        ["1/4", "2/4", "3/4", "4/4"]

    # With no token anywhere else, ./var/dev-token (what `make run` writes) is used.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-token").write_text(token + "\n")
    no_token = subprocess_env({"TRAINYARD_URL": api_url})
    status = _installed(["status", done_job["id"], "--json"], no_token, tmp_path)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "succeeded"
    (tmp_path / "elsewhere").mkdir()
    unauthorised = _installed(["status", done_job["id"]], no_token, tmp_path / "elsewhere")
    assert unauthorised.returncode == 3 and "(401)" in unauthorised.stderr

    refused = _installed(["list"], subprocess_env({"TRAINYARD_URL": f"http://127.0.0.1:{free_port()}"}), tmp_path)
    assert refused.returncode == 4 and refused.stderr.startswith("error: Cannot reach")


def test_client_package_needs_only_requests_and_click() -> None:
    code = "import client, client.cli, sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env({}), capture_output=True,
                         text=True, timeout=60, check=True)
    roots = {m.split(".")[0] for m in out.stdout.split()}
    assert {"requests", "click"} <= roots
    assert not roots & {"flask", "service", "workers", "keras", "tensorflow", "numpy", "sqlalchemy", "celery"}
    assert main.name == "main"
