"""What one training step of a model costs a worker, estimated from the spec without TensorFlow.

The parameter count bounds a model's weights; these bound the rest of what a worker spends before it can
stop at a batch boundary (building the model, preflight, each step): the multiply-adds of a step, the
values a step keeps for its backward pass, and the recurrent timesteps that run one after another. Specs
that passed every other check made a worker build and step for many minutes and gigabytes: a 300 x 300
pooling window at stride 1, 100,000 filters over a 64 x 64 image (10 GB for a batch of 2), an LSTM over
100,000 steps, a 7000-unit layer with an orthogonal kernel (one QR decomposition of minutes, which no
cancel can interrupt). A window wider than its input is refused by the shape rules in layers.py. Each estimate follows the layer's
arithmetic (trainyard/spec/layers.py infers the shapes); tests/spec/test_cost.py holds the estimates
against those specs, and bench/spec_cost.py measures the most expensive specs still accepted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from trainyard.spec.errors import error
from trainyard.spec.layers import LayerShape

_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
# TensorFlow's CPU pooling (and its gradient) gets through about a fifth as many window values per second
# as a dense layer or convolution does multiply-adds (measured in a training step: ~1e9 against ~5e9).
POOLING_WEIGHT = 5
_ELEMENTWISE = frozenset({"dropout", "activation", "batch_normalization", "layer_normalization",
                          "global_average_pooling1d", "global_average_pooling2d"})


@dataclass(frozen=True)
class LayerCost:
    """One layer's share of a training step, per sample (the batch multiplies the first two), and what
    initialising its weights costs once."""

    flops: int  # multiply-adds of the forward pass (pooling windows weighted); backward costs about twice
    activations: int  # values computed and kept for the backward pass
    recurrent_steps: int  # timesteps run one after another (the same for any batch size)
    init_flops: int = 0  # orthogonal initializers' QR decompositions, one native op each


def orthogonal_flops(shape: tuple[int, ...]) -> int:
    """Keras' Orthogonal draws a (rows x cols) matrix, rows the product of all but the last axis, and takes
    its QR decomposition: about 2 m n^2 operations for m >= n (measured ~1-2e10 a second on a CPU core)."""
    rows, cols = math.prod(shape[:-1]), shape[-1]
    m, n = max(rows, cols), min(rows, cols)
    return 2 * m * n * n


def _init(layer: dict, weights: dict[str, tuple[int, ...]]) -> int:
    """The cost of the orthogonal initializers among `weights` (initializer field -> weight shape)."""
    return sum(orthogonal_flops(shape) for name, shape in weights.items() if layer.get(name) == "orthogonal")


def _recurrent(layer: dict, steps: int, features: int) -> LayerCost:
    units, gates = layer["units"], _GATES[layer["type"]]
    init = _init(layer, {"kernel_initializer": (features, gates * units),
                         "recurrent_initializer": (units, gates * units)})
    # Backpropagation through time keeps every timestep's gates and state.
    return LayerCost(steps * gates * units * (features + units), steps * units * (gates + 1), steps, init)


def layer_cost(layer: dict, shape: LayerShape) -> LayerCost:
    kind, inp, out = layer["type"], shape.input_shape, shape.output_shape
    size_in, size_out = math.prod(inp), math.prod(out)
    if kind == "dense":
        kernel = (inp[-1], layer["units"])
        return LayerCost(size_in * layer["units"], size_out, 0, _init(layer, {"kernel_initializer": kernel}))
    if kind in ("conv1d", "conv2d"):
        kernel = (*layer["kernel_size"], inp[-1], layer["filters"])
        # Every output position multiplies a whole kernel, padding included.
        return LayerCost(size_out * math.prod(layer["kernel_size"]) * inp[-1], size_out, 0,
                         _init(layer, {"kernel_initializer": kernel}))
    if kind in ("max_pooling1d", "max_pooling2d", "average_pooling2d"):
        # Windows never exceed the input (layers.py), so each output looks at the whole window.
        return LayerCost(POOLING_WEIGHT * size_out * math.prod(layer["pool_size"]), size_out, 0)
    if kind in ("lstm", "gru", "simple_rnn"):
        return _recurrent(layer, inp[0], inp[-1])
    if kind == "bidirectional":
        one = _recurrent(layer["layer"], inp[0], inp[-1])
        return LayerCost(2 * one.flops, 2 * one.activations, 2 * one.recurrent_steps, 2 * one.init_flops)
    if kind == "embedding":
        return LayerCost(size_out, size_out, 0,
                         _init(layer, {"embeddings_initializer": (layer["input_dim"], layer["output_dim"])}))
    if kind in _ELEMENTWISE:
        return LayerCost(max(size_in, size_out), size_out, 0)  # a global pooling reads its whole input
    return LayerCost(0, size_out, 0)  # flatten, reshape: a view of the same values


def check_cost(
    shapes: list[LayerShape],
    layers: list[dict],
    batch_size: int,
    *,
    max_step_flops: int,
    max_step_activations: int,
    max_recurrent_steps: int,
    max_init_flops: int,
) -> list[dict[str, str]]:
    """Errors for a model whose training step would cost more than the operator allows.

    An error names the layer that costs most when one sample alone is over the limit, and
    `training.batch_size` when the batch makes it so.
    """
    costs = [layer_cost(layer, shape) for layer, shape in zip(layers, shapes)]
    errors = []
    steps = 0
    for index, cost in enumerate(costs):
        steps += cost.recurrent_steps
        if steps > max_recurrent_steps:
            errors.append(error(
                f"model.layers[{index}]",
                f"The recurrent layers run {sum(c.recurrent_steps for c in costs):,} timesteps one after "
                f"another (sequence length x recurrent layers, twice for bidirectional); at most "
                f"{max_recurrent_steps:,} are allowed.",
            ))
            break
    init = sum(c.init_flops for c in costs)
    if init > max_init_flops:
        heaviest = max(range(len(costs)), key=lambda i: costs[i].init_flops)
        errors.append(error(
            f"model.layers[{heaviest}]",
            f"Initialising the model's orthogonal weights takes about {init:,} operations (a QR decomposition "
            f"of each matrix, which cannot be interrupted; model.layers[{heaviest}] alone "
            f"{costs[heaviest].init_flops:,}); at most {max_init_flops:,} are allowed: choose another "
            "kernel_initializer or recurrent_initializer there, or fewer units.",
        ))
    inputs = math.prod(shapes[0].input_shape) if shapes else 0
    for what, per_sample, limit, unit in (
        ("flops", sum(c.flops for c in costs), max_step_flops, "multiply-adds"),
        ("activations", inputs + sum(c.activations for c in costs), max_step_activations, "values to keep"),
    ):
        if per_sample * batch_size <= limit:
            continue
        heaviest = max(range(len(costs)), key=lambda i: getattr(costs[i], what))
        share = getattr(costs[heaviest], what)
        if per_sample > limit:
            field, fix = f"model.layers[{heaviest}]", f"shrink model.layers[{heaviest}] ({share:,} per sample)"
        else:
            field, fix = "training.batch_size", f"lower training.batch_size (at most {limit // per_sample:,})"
        errors.append(error(
            field,
            f"One training step of {batch_size:,} samples costs about {per_sample * batch_size:,} {unit} "
            f"({per_sample:,} per sample); at most {limit:,} are allowed: {fix}.",
        ))
    return errors
