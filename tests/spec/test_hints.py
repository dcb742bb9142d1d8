"""`trainyard.spec.hints`: which name is suggested, and the bounds on the work that finds it."""
from __future__ import annotations

from typing import Any

import pytest

from trainyard.spec import SpecError, validate_spec
from trainyard.spec.hints import MAX_HINT_CHARS, MAX_HINTS, closest, hint_budget
from tests.conftest import tiny_spec

LAYERS = ["dense", "batch_normalization", "max_pooling2d", "simple_rnn", "conv2d"]


@pytest.mark.parametrize("name, expected", [
    ("Dense", "dense"), ("BatchNormalization", "batch_normalization"), ("MaxPooling2D", "max_pooling2d"),
    ("SimpleRNN", "simple_rnn"), ("Conv2d", "conv2d"), ("denes", "dense"),
    ("MaxPool2d", "max_pooling2d"), ("BatchNorm1d", "batch_normalization"),  # from the alias table
    ("transformer", None), ("", None), (3, None), (None, None), ("d" * (MAX_HINT_CHARS + 1), None),
])
def test_closest(name: Any, expected: str | None) -> None:
    from trainyard.spec.hints import VALUE_ALIASES

    assert closest(name, LAYERS, VALUE_ALIASES) == expected


def messages(spec: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(SpecError) as caught:
        validate_spec(spec)
    return caught.value.errors


def test_a_long_name_gets_no_hint() -> None:
    spec = tiny_spec(**{"epochs" + "x" * MAX_HINT_CHARS: 1})
    spec["model"]["layers"][0]["type"] = "Dense" + " " * MAX_HINT_CHARS
    assert all("Did you mean" not in e["message"] for e in messages(spec))


def test_at_most_max_hints_messages_are_hinted_per_request() -> None:
    layers = [{"type": "Dense", "units": 3}] * (MAX_HINTS + 5)
    errors = messages(tiny_spec(model={"input_shape": [4], "layers": layers}))
    assert [e["field"] for e in errors] == [f"model.layers[{i}].type" for i in range(MAX_HINTS + 5)]  # as before
    hinted = [e for e in errors if "Did you mean" in e["message"]]
    assert hinted == errors[:MAX_HINTS]
    assert all(e["message"].startswith("Must be one of:") for e in errors[MAX_HINTS:])


def test_one_budget_covers_every_spec_validated_in_it() -> None:
    # A sweep validates many specs inside one budget (trainyard/sweeps/config.py).
    spec = tiny_spec(epoch=1)
    with hint_budget(3):
        hinted = ["Did you mean" in messages(spec)[0]["message"] for _ in range(5)]
    assert hinted == [True, True, True, False, False]
    assert "Did you mean" in messages(spec)[0]["message"]  # outside the block, each call has its own
