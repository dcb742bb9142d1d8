"""Specs drawn from the schema's own declarations are refused with field paths, or train to a final state.

The invariant behind "accepted means trainable": for every spec `validate_spec` accepts, the real engine
(`workers.trainer.train`, on data of the spec's shape) builds the model, steps it for one epoch of a few
batches and ends in a stop reason other than `error`, without raising. An exception from the engine is a
bug: in validation if the spec should have been refused, in the engine otherwise.

`make test` runs a fixed number of examples, deterministically (the same ones on every run);
TRAINYARD_PROPERTY_EXAMPLES=500 runs more (still deterministic), and TRAINYARD_PROPERTY_SEED=<n> draws
other examples from that seed.
"""
from __future__ import annotations

import json
import os
import tempfile

import keras
from hypothesis import HealthCheck, event, given, note, seed, settings

from trainyard.db import dumps_json
from trainyard.spec import SpecError, SpecLimits, validate_spec
from trainyard.spec.errors import MAX_ERRORS
from trainyard.spec.schema import JobSpecSchema
from tests.property.strategies import Case, cases
from workers.trainer import InMemoryReporter, train
from trainyard.stop_reasons import StopReason

EXAMPLES = int(os.environ.get("TRAINYARD_PROPERTY_EXAMPLES", "60"))
SEED = os.environ.get("TRAINYARD_PROPERTY_SEED")
# Tight operator limits keep every accepted spec to a second or two of training; the default limits are
# held against real models in tests/spec/test_cost.py.
LIMITS = SpecLimits(max_layers=8, max_params=20_000, max_epochs=1, max_step_flops=20_000_000,
                    max_step_activations=1_000_000, max_recurrent_steps=64)
TOP_LEVEL = set(JobSpecSchema().fields)


def _random(test):  # noqa: ANN001, ANN202
    return seed(int(SEED))(test) if SEED else test


@_random
@settings(max_examples=EXAMPLES, derandomize=SEED is None, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                 HealthCheck.large_base_example])
@given(case=cases())
def test_a_drawn_spec_is_refused_with_field_paths_or_trains_to_a_final_state(case: Case) -> None:
    note(repr(case))
    try:
        spec = validate_spec(case.raw, datasets=case.lookup, limits=LIMITS)
    except SpecError as exc:
        event(f"refused at {exc.errors[0]['field'] or 'the spec'}")
        assert 1 <= len(exc.errors) <= MAX_ERRORS + 1
        for e in exc.errors:
            root = e["field"].split(".")[0].split("[")[0]
            assert (root in TOP_LEVEL or root == "") and e["message"], e
        return
    # What the worker reads back from the database, and what a sweep's trials rely on: normalising twice
    # changes nothing.
    assert json.loads(dumps_json(spec)) == spec
    assert validate_spec(spec, datasets=case.lookup, limits=LIMITS) == spec
    reporter = InMemoryReporter()
    with tempfile.TemporaryDirectory() as workdir:
        result = train(spec, case.data, reporter, workdir)
    keras.backend.clear_session()
    event(f"trained: {result.stop_reason}")
    assert StopReason.parse(result.stop_reason) is not None and result.stop_reason != "error", result
    assert reporter.result is result
