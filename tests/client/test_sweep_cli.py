"""`trainyard sweep submit|watch|show|extend|resume|cancel` against the live API and worker."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from client import Trainyard
from tests.client.conftest import RunCli, iris_spec, write_spec


def test_sweep_submit_wait_show_extend_and_cancel(run_cli: RunCli, ty: Trainyard, worker: Any, tmp_path: Path) -> None:
    body = {"base": iris_spec(diagnostics={"enabled": False, "preflight": False}), "seed": 4, "max_trials": 2,
            "search": {"optimizer.learning_rate": {"type": "log_uniform", "low": 0.001, "high": 0.1}},
            "objective": {"metric": "val_loss"}, "algorithm": {"type": "qmc"}}
    result = run_cli("sweep", "submit", str(write_spec(tmp_path, body)), "--wait", "--poll", "0.3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    sweep_id = lines[0].split()[1]
    assert lines[0] == f"submitted {sweep_id}" and sweep_id.startswith("swp_")
    sweep = ty.sweep(sweep_id)
    assert sweep["status"] == "completed" and sweep["algorithm"]["type"] == "qmc"
    for trial in sweep["trials"]:  # a line as each trial ends, with its value
        assert any(line.startswith(f"trial {trial['trial']} succeeded (completed)") for line in lines), result.output
    assert f"sweep           {sweep_id} (completed)" in result.stdout or f"{sweep_id} (completed)" in result.stdout
    assert f"best: trial {sweep['best']['trial']} ({sweep['best_job_id']})" in result.stdout

    shown = run_cli("sweep", "show", sweep_id, "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["id"] == sweep_id
    table = run_cli("sweep", "show", sweep_id)
    assert "optimizer.learning_rate" in table.stdout and "RANK" in table.stdout

    extended = run_cli("sweep", "extend", sweep_id, "3")
    assert extended.exit_code == 0 and extended.stdout.strip() == f"{sweep_id} running: 3 trials"
    watched = run_cli("sweep", "watch", sweep_id, "--poll", "0.3")
    assert watched.exit_code == 0, watched.output
    assert any(line.startswith("trial 2 succeeded") for line in watched.stdout.splitlines())
    refused = run_cli("sweep", "extend", sweep_id, "2")
    assert refused.exit_code == 3 and "max_trials" in refused.output
    assert run_cli("sweep", "resume", sweep_id).exit_code == 3  # only a cancelled sweep resumes
    assert run_cli("sweep", "cancel", sweep_id).exit_code == 3  # it already ended
