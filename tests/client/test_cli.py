"""The `trainyard` command line against the live API and worker: output a person reads, output a
program parses, and exit codes (0 ok, 1 job failed or cancelled, 3 API error, 4 unreachable)."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from client import Trainyard
from tests.client.conftest import RunCli, iris_spec, write_spec
from tests.conftest import free_port, wait_until

# The live line: loss, the job's first metric (accuracy) with their validation copies, the learning rate
# and, while the job runs, the time it has left.
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)  loss (\d+\.\d{4})  val_loss (\d+\.\d{4})  accuracy (\d\.\d{4})  "
                        r"val_accuracy (\d\.\d{4})  lr (\d\.\d\de[-+]\d\d)(?:  eta ((?:\d+[dhms])+))?$")


def summary(text: str) -> dict[str, str]:
    """The key/value summary table as a dict (keys are separated from values by two or more spaces)."""
    pairs = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines()]
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def test_submit_wait_prints_every_epoch_then_a_summary_and_exits_0(
    submitted_with_wait: tuple[Result, str], done_job: dict[str, Any]
) -> None:
    result, job_id = submitted_with_wait
    assert result.exit_code == 0, result.output
    assert done_job["status"] == "succeeded"
    lines = [m for m in (EPOCH_LINE.match(line) for line in result.stdout.splitlines()) if m]
    assert [int(m.group(1)) for m in lines] == [1, 2, 3, 4]
    assert {m.group(2) for m in lines} == {"4"}
    assert [m.group(7) for m in lines] == ["1.00e-02"] * 4
    table = summary(result.stdout)
    assert table["job"] == job_id and table["status"] == "succeeded"
    best = done_job["best"]
    assert table["best"] == f"val_loss {best['value']:.4f} at epoch {best['epoch']}"
    assert table["stop reason"] == "completed"
    assert table["test accuracy"] == f"{done_job['test_metrics']['accuracy']:.4f}"


def test_watch_a_finished_job_prints_one_line_per_epoch_matching_the_metrics(
    run_cli: RunCli, ty: Trainyard, done_job: dict[str, Any]
) -> None:
    result = run_cli("watch", done_job["id"])
    assert result.exit_code == 0, result.output
    rows = ty.metrics(done_job["id"])
    # It has ended: no time left on any line.
    expected = [f"epoch {r['epoch']}/4  loss {r['loss']:.4f}  val_loss {r['val_loss']:.4f}  "
                f"accuracy {r['accuracy']:.4f}  val_accuracy {r['val_accuracy']:.4f}  "
                f"lr {r['learning_rate']:.2e}" for r in rows]
    assert [line for line in result.stdout.splitlines() if line.startswith("epoch ")] == expected
    assert summary(result.stdout)["status"] == "succeeded"


def _seconds(duration: str) -> int:
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", duration))


def test_the_live_line_shows_the_time_left_while_the_job_runs(
    run_cli: RunCli, ty: Trainyard, tmp_path: Path, worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from client import cli

    monkeypatch.setattr(cli._Eta, "REFRESH", 0.0)  # read the job at every epoch: each line's own estimate
    patience = 30
    # min_delta 1e9: nothing improves after epoch 1, so early stopping ends the 5000-epoch run after epoch 31.
    spec = iris_spec(name="cli-eta", training={"epochs": 5000, "batch_size": 8, "seed": 4},
                     callbacks={"early_stopping": {"monitor": "loss", "patience": patience, "min_delta": 1e9}})
    result = run_cli("submit", str(write_spec(tmp_path, spec)), "--wait", "--poll", "0.2")
    assert result.exit_code == 0, result.output
    job_id = result.stdout.split()[1]
    lines = [m for m in (EPOCH_LINE.match(line) for line in result.stdout.splitlines()) if m]
    assert [int(m.group(1)) for m in lines] == list(range(1, patience + 2))
    later = [(int(m.group(1)), _seconds(m.group(8))) for m in lines if m.group(8) and int(m.group(1)) >= 2]
    assert later, result.stdout
    # From epoch 2 on, early stopping bounds the estimate: the epochs patience leaves, never the 5000 asked for.
    slowest = max(r["seconds"] for r in ty.metrics(job_id))
    assert all(eta <= (patience + 1) * slowest + 2 for _, eta in later), (later, slowest)


def test_a_job_whose_loss_goes_nan_fails_on_the_server_and_exits_1(
    run_cli: RunCli, ty: Trainyard, tmp_path: Path, worker: Any
) -> None:
    spec = {
        "name": "explodes",
        "dataset": {"id": "builtin:diabetes", "normalize": "none"},
        "model": {"input_shape": [10], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                                   {"type": "dense", "units": 1}]},
        "loss": "mean_squared_error",
        # The highest rate the spec allows, on unscaled targets in the hundreds: the loss overflows at once.
        "optimizer": {"type": "sgd", "learning_rate": 10.0},
        "training": {"epochs": 3, "batch_size": 16, "seed": 0},
    }
    result = run_cli("submit", str(write_spec(tmp_path, spec)), "--wait", "--poll", "0.2")
    assert result.exit_code == 1, result.output
    job_id = result.stdout.split()[1]
    job = ty.get(job_id)
    assert job["status"] == "failed" and job["stop_reason"] == "nan_loss"
    assert job["error"]["code"] == "nan_loss"
    table = summary(result.stdout)
    assert table["status"] == "failed"
    assert table["error"].startswith("nan_loss: The loss became NaN")
    # `watch` on the ended job says the same thing with the same exit code.
    assert run_cli("watch", job_id).exit_code == 1
    # Diagnostics list the findings first, most severe first, as the API orders them.
    findings = ty.diagnostics(job_id)["findings"]
    assert [f["severity"] for f in findings] == sorted((f["severity"] for f in findings),
                                                        key=["error", "warning", "info"].index)
    shown = run_cli("diagnostics", job_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == f"findings ({len(findings)})"
    heads = [line.split()[:2] for line in lines if line.split()[:1] in (["ERROR"], ["WARNING"], ["INFO"])]
    assert heads == [[f["severity"].upper(), f["code"]] for f in findings]
    assert findings and heads[0][0] == "ERROR"  # the divergence itself leads
    assert "suggested change: {" in shown.stdout


def test_invalid_spec_exits_3_with_the_problem_and_each_field(run_cli: RunCli, tmp_path: Path) -> None:
    spec = iris_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 0},
                                                           {"type": "dense", "units": 3, "activation": "softmax"}]},
                     optimizer={"type": "adam", "learning_rate": -1})
    result = run_cli("submit", str(write_spec(tmp_path, spec)), "--wait")
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: Validation failed (422): The job spec is not valid")
    fields = {line.strip().split(":")[0] for line in lines[1:]}
    assert {"model.layers[0].units", "optimizer.learning_rate"} <= fields
    assert all(line.startswith("  ") for line in lines[1:])


def test_malformed_spec_file_is_a_usage_error(run_cli: RunCli, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    result = run_cli("submit", str(path))
    assert result.exit_code == 2 and "not valid JSON" in result.stderr


def test_bad_token_exits_3_with_401(run_cli: RunCli) -> None:
    result = run_cli("list", env={"TRAINYARD_TOKEN": "ty_not_a_real_token"})
    assert result.exit_code == 3
    assert result.stderr.startswith("error: Unauthorized (401): This token is not valid")
    # --token wins over the environment.
    assert run_cli("--token", "ty_nope", "list").exit_code == 3


def test_unreachable_api_exits_4(run_cli: RunCli) -> None:
    result = run_cli("--url", f"http://127.0.0.1:{free_port()}", "status", "job_x")
    assert result.exit_code == 4
    assert result.stderr.startswith("error: Cannot reach the Trainyard API")


def test_unknown_job_exits_3_with_not_found(run_cli: RunCli) -> None:
    result = run_cli("status", "job_" + "0" * 32)
    assert result.exit_code == 3 and result.stderr.startswith("error: Not found (404): ")


def test_list_status_and_metrics_tables_csv_and_json_agree(
    run_cli: RunCli, ty: Trainyard, done_job: dict[str, Any]
) -> None:
    job_id = done_job["id"]
    listed = run_cli("list", "--status", "succeeded")
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "EPOCH", "BEST", "CREATED"]
    ours = [r for r in rows if r.startswith(job_id)]
    assert len(ours) == 1 and ours[0].split()[1:4] == ["cli-iris", "succeeded", "4/4"]
    page = json.loads(run_cli("list", "--json", "--limit", "1").stdout)
    assert len(page["jobs"]) == 1
    assert run_cli("list", "--status", "bogus").exit_code == 2

    status = run_cli("status", job_id)
    assert status.exit_code == 0 and summary(status.stdout)["epochs"] == "4/4"
    assert json.loads(run_cli("status", job_id, "--json").stdout) == ty.get(job_id)

    rows_api = ty.metrics(job_id)
    table = run_cli("metrics", job_id)
    assert table.exit_code == 0
    head, *body = table.stdout.splitlines()
    assert head.split() == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"]
    assert [line.split()[0] for line in body] == ["1", "2", "3", "4"]
    assert body[2].split()[1] == f"{rows_api[2]['loss']:.4f}"

    parsed = list(csv.DictReader(io.StringIO(run_cli("metrics", job_id, "--csv").stdout)))
    assert [int(r["epoch"]) for r in parsed] == [1, 2, 3, 4]
    for got, want in zip(parsed, rows_api):
        assert {k: float(v) for k, v in got.items()} == pytest.approx({k: float(v) for k, v in want.items()})
    assert json.loads(run_cli("metrics", job_id, "--json").stdout) == rows_api
    assert run_cli("metrics", job_id, "--csv", "--json").exit_code == 2


def test_cancel_a_running_job_then_watch_exits_1(
    run_cli: RunCli, ty: Trainyard, tmp_path: Path, worker: Any
) -> None:
    spec = iris_spec(name="long", training={"epochs": 5000, "batch_size": 8, "seed": 2})
    submitted = run_cli("submit", str(write_spec(tmp_path, spec)), "--json")
    assert submitted.exit_code == 0
    job_id = json.loads(submitted.stdout)["id"]
    wait_until(lambda: ty.get(job_id)["progress"]["epoch"] >= 1, 60, 0.1, "the first epoch")
    result = run_cli("cancel", job_id)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"cancel requested for {job_id} (running)")
    watched = run_cli("watch", job_id, "--poll", "0.1")
    assert watched.exit_code == 1
    table = summary(watched.stdout)
    assert table["status"] == "cancelled" and table["stop reason"] == "cancelled"
    again = run_cli("cancel", job_id)
    assert again.exit_code == 3 and again.stderr.startswith("error: Conflict (409): ")


def test_diagnostics_of_an_unknown_job_exits_3(run_cli: RunCli) -> None:
    result = run_cli("diagnostics", "job_" + "f" * 32)
    assert result.exit_code == 3
    assert result.stderr.startswith("error: Not found (404): ")


def test_diagnostics_prints_findings_first(run_cli: RunCli, ty: Trainyard, done_job: dict[str, Any]) -> None:
    diag = ty.diagnostics(done_job["id"])
    assert {"variables", "epochs", "findings"} <= set(diag)
    result = run_cli("diagnostics", done_job["id"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"findings ({len(diag['findings'])})"
    for finding in diag["findings"]:
        assert finding["code"] in result.stdout
    if diag["epochs"]:
        assert f"variables at epoch {diag['epochs'][-1]['epoch']}" in result.stdout
    assert json.loads(run_cli("diagnostics", done_job["id"], "--json").stdout) == diag


def test_datasets_upload_npz_and_list(run_cli: RunCli, ty: Trainyard, tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 3)).astype("float32")
    path = tmp_path / "points.npz"
    np.savez(path, x_train=x[:40], y_train=(x[:40, 0] > 0).astype("int64"),
             x_test=x[40:], y_test=(x[40:, 0] > 0).astype("int64"))
    result = run_cli("datasets", "upload", str(path))
    assert result.exit_code == 0, result.output
    ds_id = result.stdout.splitlines()[0].split()[1]
    assert re.fullmatch(r"ds_[0-9a-f]{32}", ds_id)
    info = summary("\n".join(result.stdout.splitlines()[1:]))
    assert info["format"] == "npz" and info["splits"] == "train 40 / test 20" and info["input shape"] == "[3]"
    listed = run_cli("datasets", "list")
    assert any(line.startswith(ds_id) for line in listed.stdout.splitlines())
    assert ds_id in {d["id"] for d in json.loads(run_cli("datasets", "list", "--json").stdout)}
    ty.delete_dataset(ds_id)

    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=x)  # no y_train
    refused = run_cli("datasets", "upload", str(bad))
    assert refused.exit_code == 3 and "(422)" in refused.stderr


def test_a_job_stopped_by_diagnosis_prints_its_finding_once_and_exits_1(
    run_cli: RunCli, ty: Trainyard, tmp_path: Path, worker: Any
) -> None:
    spec = {
        "name": "frozen",
        "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
        "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                                   {"type": "dense", "units": 10, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        # Far too small a rate: lr_too_small after epoch 1, confirmed after epoch 2 (on_error stop, issue 17).
        "optimizer": {"type": "sgd", "learning_rate": 1e-10},
        "training": {"epochs": 20, "batch_size": 32, "seed": 0},
    }
    result = run_cli("submit", str(write_spec(tmp_path, spec)), "--wait", "--poll", "0.2")
    assert result.exit_code == 1, result.output
    job = ty.get(result.stdout.split()[1])
    assert (job["status"], job["stop_reason"], job["error"]["code"]) == ("failed", "diagnosis", "lr_too_small")
    lines = [line for line in result.stdout.splitlines() if line.startswith("finding ")]
    assert len([line for line in lines if " lr_too_small:" in line]) == 1, result.stdout  # once, as it arrived
    [line] = [line for line in lines if " lr_too_small:" in line]
    assert line.startswith("finding ERROR lr_too_small: ") and "optimizer.learning_rate=" in line
    assert "(update_ratio)" in line
    table = summary(result.stdout)
    assert table["stop reason"] == "diagnosis" and table["error"].startswith("lr_too_small: ")
    # `watch` on the ended job exits 1 too.
    assert run_cli("watch", job["id"]).exit_code == 1
