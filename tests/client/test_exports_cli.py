"""`trainyard download --format savedmodel|keras-serving|onnx`, `trainyard card` and `trainyard tensorboard`
against the live API and worker."""
from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import requests

from client import Trainyard
from tests.client.conftest import iris_spec


@pytest.fixture(scope="module")
def exported_job(ty: Trainyard, exporting_worker: Any) -> dict[str, Any]:
    """A 4-epoch iris job trained by a worker that makes every export format."""
    job = ty.submit(iris_spec())
    return ty.wait(job["id"], poll=0.2)


def test_download_savedmodel_archive(run_cli: Any, exported_job: dict[str, Any], api_url: str, token: str,
                                     tmp_path: Path) -> None:
    result = run_cli("download", exported_job["id"], "--format", "savedmodel", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = tmp_path / f"{exported_job['id']}.savedmodel.tar.gz"
    served = requests.head(f"{api_url}/v1/jobs/{exported_job['id']}/checkpoints/best?format=savedmodel",
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    assert served.headers["ETag"] == f'"{sha}"'
    assert result.stdout.strip() == f"saved {out} ({out.stat().st_size} bytes, sha256 {sha})"
    with tarfile.open(out) as tar:
        assert "savedmodel/saved_model.pb" in tar.getnames()

    # A partial archive left behind is resumed from where it stopped, and verified whole.
    part = tmp_path / "again.tar.gz.part"
    part.write_bytes(out.read_bytes()[:100])
    result = run_cli("download", exported_job["id"], "--format", "savedmodel", "-o", str(tmp_path / "again.tar.gz"))
    assert result.exit_code == 0 and "(resumed at byte 100)" in result.stdout, result.output
    assert (tmp_path / "again.tar.gz").read_bytes() == out.read_bytes()

    assert run_cli("download", exported_job["id"], "--format", "pmml").exit_code == 2


def test_download_onnx_and_print_the_card(run_cli: Any, exported_job: dict[str, Any], ty: Trainyard,
                                          tmp_path: Path) -> None:
    result = run_cli("download", exported_job["id"], "--format", "onnx", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    with tarfile.open(tmp_path / f"{exported_job['id']}.onnx.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["card.json", "model.onnx"]
        inside = json.loads(tar.extractfile("card.json").read())

    result = run_cli("card", exported_job["id"])
    assert result.exit_code == 0, result.output
    card = json.loads(result.stdout)
    assert card == ty.card(exported_job["id"]) and card["job"]["id"] == inside["job"]["id"] == exported_job["id"]
    assert [e["format"] for e in card["exports"]] == ["savedmodel", "keras-serving", "onnx"]
    assert run_cli("card", "job_" + "0" * 32).exit_code == 3


def test_tensorboard_writes_event_files_tensorboard_reads(run_cli: Any, ty: Trainyard, done_job: dict[str, Any],
                                                          tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli("tensorboard", done_job["id"], "--out", str(tmp_path / "logs"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "logs" / done_job["id"]
    assert result.stdout.strip() == (f"wrote {folder} (train, validation); view with: tensorboard --logdir "
                                     f"{tmp_path / 'logs'}")
    metrics = ty.metrics(done_job["id"])
    acc = EventAccumulator(str(folder / "validation"))
    acc.Reload()
    assert [(e.step, round(e.value, 5)) for e in acc.Scalars("epoch_loss")] == [
        (m["epoch"], round(m["val_loss"], 5)) for m in metrics]

    assert run_cli("tensorboard", "job_" + "0" * 32, "--out", str(tmp_path)).exit_code == 3


def test_the_download_progress_bar_is_labelled_with_the_file_it_writes(
        run_cli: Any, done_job: dict[str, Any], tmp_path: Path, monkeypatch: Any) -> None:
    from client import cli

    monkeypatch.setattr(cli, "_is_tty", lambda: True)  # the bar is drawn for a terminal only
    out = tmp_path / "best.keras"
    result = run_cli("download", done_job["id"], "--out", str(out))
    assert result.exit_code == 0, result.output
    # Not a real terminal here: click prints the bar's label on a line of its own.
    lines = result.stdout.splitlines()
    assert "best.keras" in lines, lines
    assert f"{done_job['id']}.keras" not in result.stdout
    assert lines[-1].startswith(f"saved {out} (")
