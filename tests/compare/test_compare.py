"""The comparison rules of trainyard/compare.py on plain values: field paths, what counts as different, the
first divergent epoch and the largest differences."""
from __future__ import annotations

from trainyard import compare

RUN = {1: {"loss": 1.0, "val_loss": 1.5, "accuracy": 0.5, "learning_rate": 0.01, "seconds": 0.2},
       2: {"loss": 0.5, "val_loss": 0.9, "accuracy": 0.7, "learning_rate": 0.01, "seconds": 0.3}}


def test_leaves_are_field_paths_with_list_indexes() -> None:
    spec = {"optimizer": {"type": "adam", "learning_rate": 0.01},
            "model": {"layers": [{"type": "dense", "units": 8}, {"type": "dropout", "rate": 0.1}]},
            "labels": {}, "metrics": []}
    assert compare.leaves(spec) == {
        "optimizer.type": "adam", "optimizer.learning_rate": 0.01, "model.layers[0].type": "dense",
        "model.layers[0].units": 8, "model.layers[1].type": "dropout", "model.layers[1].rate": 0.1,
        "labels": {}, "metrics": []}


def test_document_diff_lists_each_differing_path_with_every_value() -> None:
    a = {"optimizer": {"learning_rate": 0.01, "type": "adam"}, "training": {"seed": 1, "epochs": 3}}
    b = {"optimizer": {"learning_rate": 0.001, "type": "adam"}, "training": {"seed": 1, "epochs": 3.0}}
    c = {"optimizer": {"learning_rate": 0.01, "type": "adam"}, "training": {"seed": 1, "epochs": 3, "shuffle": True}}
    assert compare.document_diff([a, b, c]) == {"optimizer.learning_rate": [0.01, 0.001, 0.01],
                                               "training.shuffle": [None, None, True]}
    assert compare.document_diff([a, a]) == {}
    # True is not 1, and a null document (an environment not recorded yet) lacks every field.
    assert compare.document_diff([{"x": True}, {"x": 1}]) == {"x": [True, 1]}
    assert compare.document_diff([{"device": {"kind": "cpu"}}, None]) == {"device.kind": ["cpu", None]}


def test_diff_paths_are_in_natural_order() -> None:
    a = {"model": {"layers": [{"units": i} for i in range(12)]}}
    b = {"model": {"layers": [{"units": i + 1} for i in range(12)]}}
    assert list(compare.document_diff([a, b]))[:3] == ["model.layers[0].units", "model.layers[1].units",
                                                       "model.layers[2].units"]
    assert list(compare.document_diff([a, b]))[-1] == "model.layers[11].units"


def test_identical_runs_differ_only_in_wall_time() -> None:
    again = {epoch: {**row, "seconds": row["seconds"] * 3} for epoch, row in RUN.items()}
    assert compare.first_divergent_epoch(RUN, again) is None
    result = compare.reproduction(RUN, again, {"keras": "3.1"}, {"keras": "3.1"})
    assert result == {"identical": True, "first_divergent_epoch": None,
                      "max_abs_diff": {"accuracy": 0.0, "learning_rate": 0.0, "loss": 0.0, "val_loss": 0.0},
                      "environment_diff": {}}


def test_the_first_divergent_epoch_and_the_largest_differences() -> None:
    other = {1: dict(RUN[1]), 2: {**RUN[2], "loss": 0.5 + 1e-7, "accuracy": 0.6}}
    result = compare.reproduction(RUN, other, {"keras": "3.1", "device": {"kind": "cpu"}},
                                  {"keras": "3.2", "device": {"kind": "cpu"}})
    assert result["identical"] is False and result["first_divergent_epoch"] == 2
    assert abs(result["max_abs_diff"]["loss"] - 1e-7) < 1e-12
    assert abs(result["max_abs_diff"]["accuracy"] - 0.1) < 1e-12
    assert result["max_abs_diff"]["val_loss"] == 0.0
    assert result["environment_diff"] == {"keras": ["3.1", "3.2"]}


def test_a_run_that_stopped_early_diverges_at_its_first_missing_epoch() -> None:
    assert compare.first_divergent_epoch(RUN, {1: RUN[1]}) == 2
    assert compare.first_divergent_epoch({}, RUN) == 1
    assert compare.first_divergent_epoch({}, {}) is None


def test_null_matches_only_null_and_a_missing_metric_diverges() -> None:
    with_nan = {1: {**RUN[1], "loss": None}}
    assert compare.first_divergent_epoch(with_nan, {1: {**RUN[1], "loss": None}}) is None
    assert compare.first_divergent_epoch(with_nan, {1: RUN[1]}) == 1
    assert compare.max_abs_diff(with_nan, {1: RUN[1]}).get("loss") is None  # no finite pair to measure
    assert compare.first_divergent_epoch({1: RUN[1]}, {1: {k: v for k, v in RUN[1].items() if k != "accuracy"}}) == 1


def test_side_by_side_rows_and_metric_order() -> None:
    names, rows = compare.side_by_side([RUN, {1: {"loss": 2.0, "mae": 0.1, "learning_rate": 0.1}}])
    assert names == ["loss", "val_loss", "accuracy", "mae", "learning_rate"]
    assert rows[0] == {"epoch": 1, "values": {"loss": [1.0, 2.0], "val_loss": [1.5, None], "accuracy": [0.5, None],
                                              "mae": [None, 0.1], "learning_rate": [0.01, 0.1]}}
    assert rows[1]["values"]["loss"] == [0.5, None]


def test_pairs_only_for_the_same_non_null_seed() -> None:
    pairs = compare.pair_divergence(["a", "b", "c", "d"], [1, 1, 2, None], [RUN, RUN, RUN, RUN])
    assert pairs == [{"ids": ["a", "b"], "seed": 1, "identical": True, "first_divergent_epoch": None,
                      "max_abs_diff": {"accuracy": 0.0, "learning_rate": 0.0, "loss": 0.0, "val_loss": 0.0}}]
    assert compare.pair_divergence(["a", "b"], [None, None], [RUN, RUN]) == []
