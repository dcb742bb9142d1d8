"""The cost of a training step, estimated from the spec (trainyard/spec/cost.py), bounds what a worker builds.

Every refused spec here passed validation before and then held a worker for minutes or gigabytes
(measured: a 300 x 300 pooling window at stride 1 took 37 s a step, 100,000 filters over 64 x 64 took
10 GB for a batch of 2, an LSTM over 100,000 steps ran past 400 s before its first epoch ended, 2,000
piecewise boundaries took 75 s to build). bench/spec_cost.py --build times the costliest specs still
accepted.
"""
from __future__ import annotations

import pytest

from trainyard.spec import DatasetInfo, SpecError, SpecLimits, infer_shapes, validate_spec
from trainyard.spec.cost import POOLING_WEIGHT, layer_cost

UPLOAD = "ds_" + "e" * 32


def spec_for(input_shape: list[int], layers: list[dict], batch_size: int = 1, **overrides: object) -> tuple[dict, DatasetInfo]:
    info = DatasetInfo(UPLOAD, tuple(input_shape), "classification", 2, False, False, (), 1000)
    raw = {"dataset": {"id": UPLOAD}, "model": {"input_shape": input_shape,
                                                 "layers": layers + [{"type": "dense", "units": 2,
                                                                      "activation": "softmax"}]},
           "loss": "sparse_categorical_crossentropy", "training": {"batch_size": batch_size}, **overrides}
    return raw, info


def validate(raw: dict, info: DatasetInfo, limits: SpecLimits | None = None) -> dict:
    return validate_spec(raw, datasets=lambda i: info if i == info.id else None, limits=limits)


def errors(raw: dict, info: DatasetInfo, limits: SpecLimits | None = None) -> list[dict[str, str]]:
    with pytest.raises(SpecError) as exc:
        validate(raw, info, limits)
    return exc.value.errors


GAP2 = {"type": "global_average_pooling2d"}


def test_wide_activations_are_refused_at_the_layer_that_makes_them() -> None:
    # 100,000 filters over 64 x 64: 409,600,000 values per sample, and only 200,002 parameters.
    raw, info = spec_for([64, 64, 1], [{"type": "conv2d", "filters": 100_000, "kernel_size": 1}, GAP2], 2)
    [found] = errors(raw, info)
    assert found["field"] == "model.layers[0]"
    assert "819,408,196 values to keep (409,704,098 per sample); at most 100,000,000" in found["message"]


def test_a_batch_too_big_for_an_affordable_model_names_the_batch_size() -> None:
    raw, info = spec_for([4], [{"type": "dense", "units": 1_000_000, "activation": "relu"}], 1000)
    [found] = errors(raw, info)
    assert found["field"] == "training.batch_size"
    assert found["message"].endswith("lower training.batch_size (at most 99).")


def test_long_recurrences_are_refused_at_the_layer_past_the_limit() -> None:
    raw, info = spec_for([100_000, 1], [{"type": "lstm", "units": 1}])
    [found] = errors(raw, info)
    assert found["field"] == "model.layers[0]" and "100,000 timesteps" in found["message"]
    # Stacked and bidirectional layers add up: 2 x 700 + 700 = 2,100 > 2,048.
    stacked = [{"type": "bidirectional", "layer": {"type": "gru", "units": 4, "return_sequences": True}},
               {"type": "simple_rnn", "units": 4}]
    raw, info = spec_for([700, 3], stacked)
    [found] = errors(raw, info)
    assert found["field"] == "model.layers[1]" and "2,100 timesteps" in found["message"]
    raw, info = spec_for([1024, 3], stacked[:1] + [{"type": "flatten"}])
    validate(raw, info)  # 2,048: at the limit


@pytest.mark.parametrize("layer", [
    {"type": "conv2d", "filters": 1, "kernel_size": 5000, "padding": "same"},
    {"type": "max_pooling2d", "pool_size": 10_000, "strides": 1, "padding": "same"},
    {"type": "average_pooling2d", "pool_size": [2, 101], "padding": "same"},
])
def test_a_window_larger_than_its_input_is_refused(layer: dict) -> None:
    raw, info = spec_for([100, 100, 1], [layer, GAP2])
    [found] = errors(raw, info)
    assert found["field"] == "model.layers[0]" and "larger than the input's (100, 100) positions" in found["message"]


def test_pooling_windows_count_by_their_size_and_weight() -> None:
    # 300 x 300 at stride 1 compares 8.1e9 values per sample: 37 s a step on a 2-core CPU.
    raw, info = spec_for([300, 300, 1], [{"type": "max_pooling2d", "pool_size": 300, "strides": 1,
                                           "padding": "same"}, GAP2])
    [found] = errors(raw, info)
    assert found["field"] == "model.layers[0]"
    assert f"{POOLING_WEIGHT * 300 ** 4:,} per sample" in found["message"]


def test_the_estimates_follow_each_layer_s_arithmetic() -> None:
    layers = [  # normalised by hand: the fields the estimates read
        {"type": "conv2d", "filters": 64, "kernel_size": [3, 3], "strides": [1, 1], "dilation_rate": [1, 1],
         "padding": "same", "use_bias": True},
        {"type": "max_pooling2d", "pool_size": [2, 2], "strides": [2, 2], "padding": "valid"},
        {"type": "dense", "units": 10, "use_bias": True},
        {"type": "global_average_pooling2d"},
    ]
    shapes = infer_shapes({"input_shape": [64, 64, 32], "layers": layers})
    costs = [layer_cost(layer, shape) for layer, shape in zip(layers, shapes)]
    assert costs[0].flops == 64 * 64 * 64 * 9 * 32 and costs[0].activations == 64 * 64 * 64
    assert costs[1].flops == POOLING_WEIGHT * 32 * 32 * 64 * 4 and costs[1].activations == 32 * 32 * 64
    assert costs[2].flops == 32 * 32 * 64 * 10 and costs[2].activations == 32 * 32 * 10
    assert costs[3].flops == 32 * 32 * 10 and costs[3].activations == 10
    assert all(c.recurrent_steps == 0 for c in costs)
    lstm = layer_cost({"type": "lstm", "units": 16}, infer_shapes({"input_shape": [50, 8], "layers": [
        {"type": "lstm", "units": 16, "return_sequences": False, "use_bias": True}]})[0])
    assert (lstm.flops, lstm.activations, lstm.recurrent_steps) == (50 * 4 * 16 * (8 + 16), 50 * 16 * 5, 50)


def test_operators_set_the_limits() -> None:
    raw, info = spec_for([64, 64, 1], [{"type": "conv2d", "filters": 100_000, "kernel_size": 1}, GAP2], 2)
    validate(raw, info, SpecLimits(max_step_activations=10**9, max_step_flops=10**12))
    raw, info = spec_for([4], [{"type": "dense", "units": 8}], 32)
    assert errors(raw, info, SpecLimits(max_step_flops=100))[0]["field"] == "training.batch_size"


@pytest.mark.parametrize("input_shape, layers, batch_size", [
    # An MNIST convnet at batch 128, a CIFAR-sized one at batch 32, a 500-token review classifier.
    ([28, 28, 1], [{"type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu"},
                   {"type": "conv2d", "filters": 64, "kernel_size": 3, "activation": "relu"},
                   {"type": "max_pooling2d"}, {"type": "dropout", "rate": 0.25}, {"type": "flatten"},
                   {"type": "dense", "units": 128, "activation": "relu"}], 128),
    ([32, 32, 3], [{"type": "conv2d", "filters": 64, "kernel_size": 3, "padding": "same", "activation": "relu"},
                   {"type": "conv2d", "filters": 64, "kernel_size": 3, "padding": "same", "activation": "relu"},
                   {"type": "max_pooling2d"},
                   {"type": "conv2d", "filters": 128, "kernel_size": 3, "padding": "same", "activation": "relu"},
                   {"type": "conv2d", "filters": 128, "kernel_size": 3, "padding": "same", "activation": "relu"},
                   {"type": "max_pooling2d"}, {"type": "flatten"},
                   {"type": "dense", "units": 256, "activation": "relu"}], 32),
    ([500], [{"type": "embedding", "input_dim": 20_000, "output_dim": 64},
             {"type": "bidirectional", "layer": {"type": "lstm", "units": 64, "return_sequences": True}},
             {"type": "bidirectional", "layer": {"type": "lstm", "units": 32}}], 64),
])
def test_real_models_fit_the_default_limits(input_shape: list[int], layers: list[dict], batch_size: int) -> None:
    raw, info = spec_for(input_shape, layers, batch_size)
    validate(raw, info)


def test_orthogonal_initialisation_is_counted_and_capped() -> None:
    # One QR decomposition of a 7000 x 7000 matrix ran for minutes in a single native op, past any cancel.
    raw, info = spec_for([64], [{"type": "dense", "units": 7000, "activation": "relu"},
                                {"type": "dense", "units": 7000, "kernel_initializer": "orthogonal"}])
    [found] = errors(raw, info)
    assert found["field"] == "model.layers[1]"
    assert f"about {2 * 7000 ** 3:,} operations" in found["message"]
    # Recurrent kernels are orthogonal by default: an LSTM of 2,000 units (8 x 2000^3) still fits.
    raw, info = spec_for([10, 8], [{"type": "lstm", "units": 2000}])
    validate(raw, info)
    assert layer_cost({"type": "lstm", "units": 2000, "kernel_initializer": "glorot_uniform",
                       "recurrent_initializer": "orthogonal"},
                      infer_shapes({"input_shape": [10, 8], "layers": [
                          {"type": "lstm", "units": 2000, "return_sequences": False, "use_bias": True}]})[0]
                      ).init_flops == 2 * 8000 * 2000 ** 2
    raw, info = spec_for([10, 8], [{"type": "bidirectional", "layer": {"type": "lstm", "units": 2400}}])
    assert errors(raw, info)[0]["field"] == "model.layers[0]"
    validate(raw, info, SpecLimits(max_init_flops=10**12))
