"""An unknown field or value in a job or sweep spec is answered with the closest allowed name (issue 19):
in `errors[].message` and in `detail`, with the field paths unchanged."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import tiny_spec

LAYER_TYPES = "Must be one of: dense, dropout, flatten"


def _dense_type(spec: dict[str, Any]) -> None:
    spec["model"]["layers"][0]["type"] = "Dense"


def _top_level_epochs(spec: dict[str, Any]) -> None:
    spec["epochs"] = 5


def _optimizer_lr(spec: dict[str, Any]) -> None:
    spec["optimizer"] = {"type": "adam", "lr": 0.01}


def _string_optimizer(spec: dict[str, Any]) -> None:
    spec["optimizer"] = "adam"


def _top_level_batch_size(spec: dict[str, Any]) -> None:
    spec["batch_size"] = 8


def _top_level_learning_rate(spec: dict[str, Any]) -> None:
    spec["learning_rate"] = 0.01


def _optimizer_type_case(spec: dict[str, Any]) -> None:
    spec["optimizer"] = {"type": "Adam"}


def _pytorch_layer(spec: dict[str, Any]) -> None:
    spec["model"]["layers"][0]["type"] = "Linear"


CASES: list[tuple[Callable[[dict[str, Any]], None], str, str, str]] = [
    # mutation, field, what the message says today (kept), the hint it now carries
    (_dense_type, "model.layers[0].type", LAYER_TYPES, 'Did you mean "dense"?'),
    (_pytorch_layer, "model.layers[0].type", LAYER_TYPES, 'Did you mean "dense"?'),
    (_top_level_epochs, "epochs", "Unknown field.", "Did you mean training.epochs?"),
    (_top_level_batch_size, "batch_size", "Unknown field.", "Did you mean training.batch_size?"),
    (_top_level_learning_rate, "learning_rate", "Unknown field.", "Did you mean optimizer.learning_rate?"),
    (_optimizer_lr, "optimizer.lr", "Unknown field.", "Did you mean optimizer.learning_rate?"),
    (_string_optimizer, "optimizer", "Must be an object.", 'Did you mean {"type": "adam"}?'),
    (_optimizer_type_case, "optimizer.type", "Must be one of: sgd, adam", 'Did you mean "adam"?'),
]


@pytest.mark.parametrize("mutate, field, message, hint", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_a_job_spec_error_names_the_closest_allowed_name(
    client: Any, auth: dict[str, str], mutate: Callable[[dict[str, Any]], None], field: str, message: str, hint: str,
) -> None:
    spec = tiny_spec()
    mutate(spec)
    resp = client.post("/v1/jobs", json=spec, headers=auth)
    assert resp.status_code == 422, resp.get_json()
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert [e["field"] for e in body["errors"]] == [field]
    assert message in body["errors"][0]["message"] and hint in body["errors"][0]["message"], body["errors"]
    assert hint in body["detail"], body["detail"]


def test_a_field_of_several_sections_names_each(client: Any, auth: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", json=tiny_spec(patience=3), headers=auth)
    assert resp.get_json()["errors"] == [{
        "field": "patience",
        "message": "Unknown field. Did you mean callbacks.early_stopping.patience or "
                   "callbacks.reduce_lr_on_plateau.patience?",
    }]


def test_a_name_close_to_nothing_keeps_the_plain_message(client: Any, auth: dict[str, str]) -> None:
    spec = tiny_spec(colour="blue")
    spec["model"]["layers"][0]["type"] = "transformer_block"
    errors = client.post("/v1/jobs", json=spec, headers=auth).get_json()["errors"]
    assert {e["field"]: e["message"] for e in errors}["colour"] == "Unknown field."
    layer = {e["field"]: e["message"] for e in errors}["model.layers[0].type"]
    assert layer.startswith("Must be one of:") and "Did you mean" not in layer


def test_a_sweep_base_gets_the_same_hints(client: Any, auth: dict[str, str]) -> None:
    base = tiny_spec(epochs=5)
    base["model"]["layers"][0]["type"] = "Dense"
    body = {"name": "hints", "base": base, "search": {"optimizer.learning_rate": {"type": "choice", "values": [0.1]}},
            "objective": {"metric": "val_loss"}, "trials": 2}
    resp = client.post("/v1/sweeps", json=body, headers=auth)
    assert resp.status_code == 422, resp.get_json()
    messages = {e["field"]: e["message"] for e in resp.get_json()["errors"]}
    assert messages["trials"] == "Unknown field. Did you mean max_trials?"
    assert messages["base.epochs"] == "Unknown field. Did you mean training.epochs?"
    assert messages["base.model.layers[0].type"].startswith('Did you mean "dense"? Must be one of:')


def test_a_monitor_and_a_built_in_data_set_name_the_closest_too(client: Any, auth: dict[str, str]) -> None:
    spec = tiny_spec(dataset={"id": "builtin:iris", "validation_split": 0.2},
                     callbacks={"early_stopping": {"monitor": "val_acc"}})
    errors = client.post("/v1/jobs", json=spec, headers=auth).get_json()["errors"]
    assert errors == [{"field": "callbacks.early_stopping.monitor", "message": (
        'This job never logs val_acc: acc is not in metrics. Did you mean "val_accuracy"? '
        "Allowed: loss, accuracy, val_loss, val_accuracy.")}]
    errors = client.post("/v1/jobs", json=tiny_spec(dataset={"id": "builtin:irsi"}), headers=auth).get_json()["errors"]
    assert [e["field"] for e in errors] == ["dataset.id"]
    assert errors[0]["message"].startswith("Unknown built-in data set builtin:irsi; allowed: ")
    assert errors[0]["message"].endswith('. Did you mean "builtin:iris"?')


def test_a_sweep_search_parameter_names_the_closest_type_and_field(client: Any, auth: dict[str, str]) -> None:
    body = {"name": "hints", "base": tiny_spec(dataset={"id": "builtin:iris", "validation_split": 0.2}),
            "objective": {"metric": "val_loss"}, "max_trials": 4,
            "search": {"optimizer.learning_rate": {"type": "log-uniform", "low": 1e-4, "high": 1e-1},
                       "training.batch_size": {"type": "choice", "choices": [8, 16]}}}
    resp = client.post("/v1/sweeps", json=body, headers=auth)
    assert resp.status_code == 422, resp.get_json()
    messages = {e["field"]: e["message"] for e in resp.get_json()["errors"]}
    assert messages["search.optimizer.learning_rate.type"].endswith('. Did you mean "log_uniform"?')
    assert messages["search.training.batch_size.choices"] == \
        "Unknown field. Did you mean search.training.batch_size.values?"
