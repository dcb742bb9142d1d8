"""How the command line prints a learning-rate range test and the rate "auto" chose."""
from client import render


def _sweep(points: int) -> dict:
    curve = [{"learning_rate": 1e-7 * 1.2 ** i, "loss": 2.3 - 0.01 * i} for i in range(points)]
    return {"rule": "valley", "suggested_learning_rate": 0.00486, "min_loss_learning_rate": 0.351,
            "start_learning_rate": 1e-7, "end_learning_rate": 10.0, "steps": points, "steps_planned": 100,
            "ended": "diverged", "seconds": 1.2345, "curve": curve, "learning_rate_chosen": 0.00486}


def test_the_range_test_shows_its_suggestion_and_a_dozen_points_ending_with_the_last():
    sweep = _sweep(89)
    text = render.range_test_text(sweep)
    head, *table = text.splitlines()
    assert "suggests 4.86e-03 (optimizer.learning_rate auto trains at it)" in head
    assert "lowest loss at 3.51e-01" in head and "89 of 100 steps (diverged), 1.23 s" in head
    rows = table[2:] if set(table[1]) <= {"-", " "} else table[1:]
    assert 10 <= len(rows) <= 13
    assert rows[0].split()[0] == "1.00e-07" and rows[-1].split()[1] == f"{sweep['curve'][-1]['loss']:.4f}"


def test_the_job_summary_names_the_chosen_rate_only_when_auto_chose_one():
    job = {"id": "job_" + "0" * 32, "status": "succeeded", "progress": {"epoch": 3, "epochs": 3}}
    assert "learning rate" not in render.job_summary({**job, "optimizer": {"learning_rate_chosen": None}})
    assert "4.86e-03 (auto" in render.job_summary({**job, "optimizer": {"learning_rate_chosen": 0.00486}})
