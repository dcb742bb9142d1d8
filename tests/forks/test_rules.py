"""The fork rules (trainyard/forks.py) on plain values: the merge patch, the findings applied, the field
paths of errors, what a fork from weights may change. The API and the worker: tests/service/test_forks_e2e.py."""
from __future__ import annotations

from typing import Any

import pytest

from trainyard.db.models import Finding, Job
from trainyard.forks import ForkRequest, child_spec, findings_patch, merge_patch, parse_request
from trainyard.spec import SpecError, SpecLimits, validate_spec

PARENT_SPEC = validate_spec({
    "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
    "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
                                             {"type": "dense", "units": 10, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
    "optimizer": {"type": "sgd", "learning_rate": 1e-10},
    "training": {"epochs": 20, "batch_size": 32, "seed": 0},
})


def _parent() -> Job:
    return Job(id="job_" + "0" * 32, spec={**PARENT_SPEC, "webhook": {"url": "https://example.com/h", "events": []}})


def _finding(code: str, change: dict[str, Any] | None, layer: str = "") -> Finding:
    return Finding(code=code, layer=layer, severity="error", message="m", evidence={}, suggested_change=change)


RATE_FINDING = _finding("lr_too_small", {"optimizer": {"learning_rate": 0.02}})


def _errors(exc: pytest.ExceptionInfo[SpecError]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in exc.value.errors}


@pytest.mark.parametrize(("target", "patch", "result"), [
    # RFC 7386, appendix A.
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_applied_findings_then_the_patch_make_the_childs_spec() -> None:
    request = parse_request({"apply_findings": ["lr_too_small:-"], "patch": {"training": {"epochs": 5}}})
    changes = findings_patch(request, {"lr_too_small:-": RATE_FINDING})
    spec, patch = child_spec(_parent(), request, changes, datasets=None, limits=SpecLimits())
    assert patch == {"optimizer": {"learning_rate": 0.02}, "training": {"epochs": 5}}
    assert spec["optimizer"]["learning_rate"] == 0.02 and spec["training"]["epochs"] == 5
    assert "webhook" not in spec  # not inherited
    assert {k: v for k, v in spec.items() if k not in ("optimizer", "training")} == \
        {k: v for k, v in PARENT_SPEC.items() if k not in ("optimizer", "training")}


def test_what_the_caller_patches_wins_over_a_suggestion() -> None:
    request = parse_request({"apply_findings": ["lr_too_small:-"], "patch": {"optimizer": {"learning_rate": 0.05}}})
    changes = findings_patch(request, {"lr_too_small:-": RATE_FINDING})
    spec, _ = child_spec(_parent(), request, changes, datasets=None, limits=SpecLimits())
    assert spec["optimizer"]["learning_rate"] == 0.05


def test_errors_name_the_part_of_the_request_that_set_the_field() -> None:
    findings = {"unscaled_inputs:-": _finding("unscaled_inputs", {"dataset": {"normalize": "sideways"}})}
    request = parse_request({"apply_findings": ["unscaled_inputs:-"],
                             "patch": {"optimizer": {"learning_rate": 100}, "loss": "mse"}})
    with pytest.raises(SpecError) as exc:
        child_spec(_parent(), request, findings_patch(request, findings), datasets=None, limits=SpecLimits())
    errors = _errors(exc)
    assert "patch.optimizer.learning_rate" in errors
    assert errors["apply_findings[0]"].startswith("dataset.normalize:")


def test_unknown_ids_findings_without_a_change_and_disagreeing_findings_are_refused() -> None:
    findings = {"plateau:-": _finding("plateau", None),
                "lr_too_small:-": _finding("lr_too_small", {"optimizer": {"learning_rate": 0.02}}),
                "diverged:-": _finding("diverged", {"optimizer": {"learning_rate": 0.001, "clipnorm": 1.0}})}
    request = parse_request({"apply_findings": ["nope:-", "plateau:-", "lr_too_small:-", "diverged:-"]})
    with pytest.raises(SpecError) as exc:
        findings_patch(request, findings)
    errors = _errors(exc)
    assert "no finding 'nope:-'" in errors["apply_findings[0]"] and "lr_too_small:-" in errors["apply_findings[0]"]
    assert "suggests no spec change" in errors["apply_findings[1]"]
    conflict = errors["apply_findings[3]"]
    assert "optimizer.learning_rate" in conflict and "apply_findings[2]" in conflict


def test_a_fork_from_weights_keeps_the_model() -> None:
    layers = [dict(layer) for layer in PARENT_SPEC["model"]["layers"]]
    layers[0]["units"] = 64
    request = parse_request({"from": "best", "patch": {"model": {"layers": layers}}})
    with pytest.raises(SpecError) as exc:
        child_spec(_parent(), request, [], datasets=None, limits=SpecLimits())
    assert "keeps the parent's model" in _errors(exc)["patch.model"]
    # From scratch the same patch is a new model, and fine.
    spec, _ = child_spec(_parent(), ForkRequest(patch=request.patch), [], datasets=None, limits=SpecLimits())
    assert spec["model"]["layers"][0]["units"] == 64


DEEP: Any = 1
for _ in range(20):
    DEEP = [DEEP]


@pytest.mark.parametrize(("body", "field"), [
    ([], ""), ({"pach": {}}, "pach"), ({"patch": []}, "patch"),
    ({"apply_findings": "lr_too_small:-"}, "apply_findings"),
    ({"apply_findings": [3]}, "apply_findings[0]"), ({"from": "worst"}, "from"), ({"from": {"epoch": 0}}, "from"),
    ({"from": {"epoch": True}}, "from"), ({"from": {"epoch": 2, "x": 1}}, "from"),
    ({"patch": {"a": DEEP}}, "patch"),
])
def test_malformed_requests_name_their_field(body: Any, field: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_request(body)
    assert field in _errors(exc)


def test_from_accepts_the_documented_values() -> None:
    assert parse_request({}).source == "scratch"
    assert parse_request({"from": "last"}).source == "last"
    request = parse_request({"from": {"epoch": 3}})
    assert (request.source, request.epoch) == ("epoch", 3)
