"""Layer schemas and the pure-Python shape and parameter rules for every allow-listed layer.

Each rule mirrors what the Keras 3 layer computes in `compute_output_shape` and `build`, so the API can
reject a model that would not connect, or that is too big, without importing TensorFlow or allocating
a weight. tests/spec/test_shapes_vs_keras.py holds every rule against the real Keras layer.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from trainyard.spec import bounds
from trainyard.spec.errors import SpecError, error
from trainyard.spec.fields import (
    Bool, Choice, Float, Int, IntOrList, List, Object, SpecSchema, Tagged, type_field,
)
from trainyard.names import ACTIVATION_ALIASES, ACTIVATIONS, INITIALIZERS

# Caps that keep one field from describing an absurd model; the parameter limit catches the rest.
MAX_UNITS = 1_000_000
MAX_WINDOW = 10_000  # kernel, pool, stride and dilation sizes
MAX_VOCABULARY = 10_000_000
MAX_DIM = 1_000_000  # one axis of an input or reshape shape
MAX_RANK = 3  # per-sample rank the layers support: (height, width, channels)


def _activation(default: str) -> Choice:
    return Choice(ACTIVATIONS, aliases=ACTIVATION_ALIASES, none_as="linear", load_default=default)


def _initializer(default: str) -> Choice:
    return Choice(INITIALIZERS, load_default=default)


# A bias is a vector, and Keras' orthogonal initializer needs a matrix: it would raise when the worker
# builds the layer, so the spec refuses it here.
BIAS_INITIALIZERS: list[str] = [name for name in INITIALIZERS if name != "orthogonal"]


def _bias_initializer() -> Choice:
    return Choice(BIAS_INITIALIZERS, load_default="zeros")


class RegularizerSchema(SpecSchema):
    l1 = Float(load_default=0.0, validate=bounds.REGULARIZATION)
    l2 = Float(load_default=0.0, validate=bounds.REGULARIZATION)


def _regularizer() -> Object:
    return Object(RegularizerSchema, allow_none=True, load_default=None)


class DenseSchema(SpecSchema):
    type = type_field("dense")
    units = Int(required=True, validate=validate.Range(1, MAX_UNITS))
    activation = _activation("linear")
    use_bias = Bool(load_default=True)
    kernel_initializer = _initializer("glorot_uniform")
    bias_initializer = _bias_initializer()
    kernel_regularizer = _regularizer()
    bias_regularizer = _regularizer()


class DropoutSchema(SpecSchema):
    type = type_field("dropout")
    rate = Float(required=True, validate=bounds.DROPOUT)


class FlattenSchema(SpecSchema):
    type = type_field("flatten")


def _check_target_shape(shape: list[int]) -> None:
    if any(d != -1 and not 1 <= d <= MAX_DIM for d in shape):
        raise ValidationError(f"Each entry must be between 1 and {MAX_DIM}, or -1 (inferred).")
    if shape.count(-1) > 1:
        raise ValidationError("At most one entry may be -1.")


class ReshapeSchema(SpecSchema):
    type = type_field("reshape")
    target_shape = List(
        Int(validate=validate.Range(-1, MAX_DIM)), required=True, min_length=1, max_length=MAX_RANK,
        validate=_check_target_shape,
    )


class ActivationSchema(SpecSchema):
    type = type_field("activation")
    activation = Choice(ACTIVATIONS, aliases=ACTIVATION_ALIASES, none_as="linear", required=True)


class BatchNormalizationSchema(SpecSchema):
    type = type_field("batch_normalization")
    momentum = Float(load_default=0.99, validate=bounds.MOMENTUM)
    epsilon = Float(load_default=1e-3, validate=bounds.EPSILON)
    center = Bool(load_default=True)
    scale = Bool(load_default=True)


class LayerNormalizationSchema(SpecSchema):
    type = type_field("layer_normalization")
    epsilon = Float(load_default=1e-3, validate=bounds.EPSILON)
    center = Bool(load_default=True)
    scale = Bool(load_default=True)


_PADDINGS = ["valid", "same"]


def _conv_schema(name: str, rank: int) -> type[SpecSchema]:
    class ConvSchema(SpecSchema):
        type = type_field(name)
        filters = Int(required=True, validate=validate.Range(1, MAX_UNITS))
        kernel_size = IntOrList(rank, 1, MAX_WINDOW, required=True)
        # Defaults are made per load (a lambda): schema instances are reused, so a shared list could leak
        # one spec's later edit into another's.
        strides = IntOrList(rank, 1, MAX_WINDOW, load_default=lambda: [1] * rank)
        padding = Choice(_PADDINGS, load_default="valid")
        activation = _activation("linear")
        use_bias = Bool(load_default=True)
        dilation_rate = IntOrList(rank, 1, MAX_WINDOW, load_default=lambda: [1] * rank)
        kernel_initializer = _initializer("glorot_uniform")
        bias_initializer = _bias_initializer()
        kernel_regularizer = _regularizer()
        bias_regularizer = _regularizer()

        @validates_schema
        def _strides_or_dilation(self, data: dict, **kwargs: Any) -> None:
            # Keras 3 refuses this combination when the layer is constructed.
            if max(data.get("strides", [1])) > 1 and max(data.get("dilation_rate", [1])) > 1:
                raise ValidationError(
                    "strides > 1 cannot be combined with dilation_rate > 1.", "dilation_rate"
                )

    ConvSchema.__name__ = f"{name.title().replace('_', '')}Schema"
    return ConvSchema


def _pool_schema(name: str, rank: int) -> type[SpecSchema]:
    class PoolSchema(SpecSchema):
        type = type_field(name)
        pool_size = IntOrList(rank, 1, MAX_WINDOW, load_default=lambda: [2] * rank)
        strides = IntOrList(rank, 1, MAX_WINDOW, allow_none=True, load_default=None)
        padding = Choice(_PADDINGS, load_default="valid")

        @post_load
        def _default_strides(self, data: dict, **kwargs: Any) -> dict:
            # Keras' own default; stored explicitly so the trainer and the shape rules agree.
            if data["strides"] is None:
                data["strides"] = list(data["pool_size"])
            return data

    PoolSchema.__name__ = f"{name.title().replace('_', '')}Schema"
    return PoolSchema


def _type_only_schema(name: str) -> type[SpecSchema]:
    return type(f"{name.title().replace('_', '')}Schema", (SpecSchema,), {"type": type_field(name)})


class EmbeddingSchema(SpecSchema):
    type = type_field("embedding")
    input_dim = Int(required=True, validate=validate.Range(1, MAX_VOCABULARY))
    output_dim = Int(required=True, validate=validate.Range(1, MAX_UNITS))
    # Keras' default "uniform" is RandomUniform(-0.05, 0.05), i.e. our "random_uniform".
    embeddings_initializer = _initializer("random_uniform")
    embeddings_regularizer = _regularizer()


def _recurrent_schema(name: str) -> type[SpecSchema]:
    class RecurrentSchema(SpecSchema):
        type = type_field(name)
        units = Int(required=True, validate=validate.Range(1, MAX_UNITS))
        activation = _activation("tanh")
        return_sequences = Bool(load_default=False)
        use_bias = Bool(load_default=True)
        dropout = Float(load_default=0.0, validate=bounds.DROPOUT)
        recurrent_dropout = Float(load_default=0.0, validate=bounds.DROPOUT)
        kernel_initializer = _initializer("glorot_uniform")
        recurrent_initializer = _initializer("orthogonal")
        bias_initializer = _bias_initializer()
        kernel_regularizer = _regularizer()

    RecurrentSchema.__name__ = f"{name.title().replace('_', '')}Schema"
    return RecurrentSchema


RECURRENT_SCHEMAS: dict[str, type[SpecSchema]] = {
    "lstm": _recurrent_schema("lstm"),
    "gru": _recurrent_schema("gru"),
    "simple_rnn": _recurrent_schema("simple_rnn"),
}


class BidirectionalSchema(SpecSchema):
    type = type_field("bidirectional")
    layer = Tagged(RECURRENT_SCHEMAS, required=True)
    merge_mode = Choice(["concat", "sum", "mul", "ave"], load_default="concat")


LAYER_SCHEMAS: dict[str, type[SpecSchema]] = {
    "dense": DenseSchema,
    "dropout": DropoutSchema,
    "flatten": FlattenSchema,
    "reshape": ReshapeSchema,
    "activation": ActivationSchema,
    "batch_normalization": BatchNormalizationSchema,
    "layer_normalization": LayerNormalizationSchema,
    "conv1d": _conv_schema("conv1d", 1),
    "conv2d": _conv_schema("conv2d", 2),
    "max_pooling1d": _pool_schema("max_pooling1d", 1),
    "max_pooling2d": _pool_schema("max_pooling2d", 2),
    "average_pooling2d": _pool_schema("average_pooling2d", 2),
    "global_average_pooling1d": _type_only_schema("global_average_pooling1d"),
    "global_average_pooling2d": _type_only_schema("global_average_pooling2d"),
    "embedding": EmbeddingSchema,
    **RECURRENT_SCHEMAS,
    "bidirectional": BidirectionalSchema,
}

#: Every allow-listed layer type, in the order the docs list them.
LAYER_TYPES: list[str] = list(LAYER_SCHEMAS)


def layer_field(**kwargs: Any) -> Tagged:
    return Tagged(LAYER_SCHEMAS, **kwargs)


class ModelSchema(SpecSchema):
    input_shape = List(Int(validate=validate.Range(1, MAX_DIM)), required=True, min_length=1, max_length=MAX_RANK)
    # Capped by SpecLimits.max_layers (an operator setting) before the schema runs (validate.py).
    layers = fields.List(layer_field(), required=True, validate=validate.Length(min=1))


# ---------------------------------------------------------------------------------------------------
# Shape and parameter rules


Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerShape:
    """One layer of an inferred model: shapes are per sample (no batch axis)."""

    index: int
    type: str
    input_shape: Shape
    output_shape: Shape
    params: int  # everything Keras' count_params() counts, including BatchNorm's moving statistics
    trainable_params: int


class _Mismatch(Exception):
    """A layer cannot take its input; the message is shown to the client as is."""


def _fmt(shape: Shape) -> str:
    return str(tuple(shape))


def _need_rank(layer: dict, shape: Shape, rank: int, described: str) -> None:
    if len(shape) != rank:
        raise _Mismatch(f"{layer['type']} needs inputs of shape {described}; it gets {_fmt(shape)}")


def _windowed(
    layer: dict, spatial: Shape, window: list[int], strides: list[int], dilation: list[int]
) -> Shape:
    """Output spatial dims of a convolution or pooling, with Keras' formulas."""
    what = "kernel_size" if "kernel_size" in layer else "pool_size"
    if any(k > size for k, size in zip(window, spatial)):
        # With padding "same" Keras accepts it, and TensorFlow then computes every window over mostly
        # padding: a 10,000-wide pool over 300 positions took 37 s per step, a 5,000-wide kernel ran
        # out of memory. A window the size of the input already sees all of it.
        raise _Mismatch(
            f"{what} {window} is larger than the input's {tuple(spatial)} positions; at most the input's "
            "size is useful (a global pooling layer covers the whole input)"
        )
    out = []
    for size, k, s, d in zip(spatial, window, strides, dilation):
        if layer["padding"] == "same":
            out.append((size - 1) // s + 1)
        else:
            out.append((size - d * (k - 1) - 1) // s + 1)
    if any(o < 1 for o in out):
        raise _Mismatch(
            f"with padding 'valid', {what} {window} does not fit the input's {tuple(spatial)} "
            f"positions (output would be {tuple(out)}); use padding 'same' or a smaller {what}"
        )
    return tuple(out)


def _dense(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    units = layer["units"]
    params = shape[-1] * units + (units if layer["use_bias"] else 0)
    return shape[:-1] + (units,), params, params


def _same_shape(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    return shape, 0, 0


def _flatten(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    return (math.prod(shape),), 0, 0


def _reshape(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    target = list(layer["target_shape"])
    total = math.prod(shape)
    known = math.prod(d for d in target if d != -1)
    if -1 in target:
        if total % known:
            raise _Mismatch(
                f"reshape cannot turn {_fmt(shape)} ({total} values) into {tuple(target)}: "
                f"{total} is not a multiple of {known}"
            )
        target[target.index(-1)] = total // known
    elif known != total:
        raise _Mismatch(
            f"reshape target_shape {tuple(target)} holds {known} values; its input "
            f"{_fmt(shape)} holds {total}"
        )
    return tuple(target), 0, 0


def _batch_norm(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    channels = shape[-1]
    trainable = channels * (int(layer["center"]) + int(layer["scale"]))
    # moving_mean and moving_variance are weights too (non-trainable).
    return shape, trainable + 2 * channels, trainable


def _layer_norm(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    params = shape[-1] * (int(layer["center"]) + int(layer["scale"]))
    return shape, params, params


def _conv(rank: int) -> Callable[[dict, Shape], tuple[Shape, int, int]]:
    described = "(steps, channels)" if rank == 1 else "(height, width, channels)"

    def rule(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
        _need_rank(layer, shape, rank + 1, described)
        spatial = _windowed(
            layer, shape[:-1], layer["kernel_size"], layer["strides"], layer["dilation_rate"]
        )
        filters = layer["filters"]
        params = math.prod(layer["kernel_size"]) * shape[-1] * filters
        params += filters if layer["use_bias"] else 0
        return spatial + (filters,), params, params

    return rule


def _pool(rank: int) -> Callable[[dict, Shape], tuple[Shape, int, int]]:
    described = "(steps, features)" if rank == 1 else "(height, width, channels)"

    def rule(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
        _need_rank(layer, shape, rank + 1, described)
        spatial = _windowed(layer, shape[:-1], layer["pool_size"], layer["strides"], [1] * rank)
        return spatial + (shape[-1],), 0, 0

    return rule


def _global_pool(rank: int) -> Callable[[dict, Shape], tuple[Shape, int, int]]:
    described = "(steps, features)" if rank == 1 else "(height, width, channels)"

    def rule(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
        _need_rank(layer, shape, rank + 1, described)
        return (shape[-1],), 0, 0

    return rule


def _embedding(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    _need_rank(layer, shape, 1, "(sequence_length,) of integer indices")
    params = layer["input_dim"] * layer["output_dim"]
    return shape + (layer["output_dim"],), params, params


# Gates per recurrent cell: LSTM has 4 (input, forget, cell, output), GRU 3, SimpleRNN 1.
_GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}


def _recurrent(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    _need_rank(layer, shape, 2, "(steps, features)")
    units, gates = layer["units"], _GATES[layer["type"]]
    params = gates * units * (shape[-1] + units)
    if layer["use_bias"]:
        # Keras 3's GRU defaults to reset_after=True, which keeps separate input and recurrent biases.
        params += gates * units * (2 if layer["type"] == "gru" else 1)
    out = (shape[0], units) if layer["return_sequences"] else (units,)
    return out, params, params


def _bidirectional(layer: dict, shape: Shape) -> tuple[Shape, int, int]:
    inner = layer["layer"]
    if len(shape) != 2:
        raise _Mismatch(
            f"bidirectional {inner['type']} needs inputs of shape (steps, features); "
            f"it gets {_fmt(shape)}"
        )
    out, params, trainable = _recurrent(inner, shape)
    if layer["merge_mode"] == "concat":
        out = out[:-1] + (2 * out[-1],)
    return out, 2 * params, 2 * trainable


SHAPE_RULES: dict[str, Callable[[dict, Shape], tuple[Shape, int, int]]] = {
    "dense": _dense,
    "dropout": _same_shape,
    "flatten": _flatten,
    "reshape": _reshape,
    "activation": _same_shape,
    "batch_normalization": _batch_norm,
    "layer_normalization": _layer_norm,
    "conv1d": _conv(1),
    "conv2d": _conv(2),
    "max_pooling1d": _pool(1),
    "max_pooling2d": _pool(2),
    "average_pooling2d": _pool(2),
    "global_average_pooling1d": _global_pool(1),
    "global_average_pooling2d": _global_pool(2),
    "embedding": _embedding,
    "lstm": _recurrent,
    "gru": _recurrent,
    "simple_rnn": _recurrent,
    "bidirectional": _bidirectional,
}


def infer_shapes(model_spec: dict) -> list[LayerShape]:
    """Per-layer output shape and parameter count of a normalised `model` spec, without Keras.

    Raises `SpecError` (field `model.layers[i]`) at the first layer that cannot take its input.
    """
    shape: Shape = tuple(model_spec["input_shape"])
    result: list[LayerShape] = []
    for index, layer in enumerate(model_spec["layers"]):
        if layer["type"] == "embedding" and index > 0:
            # Only the model input can carry the integer indices an embedding looks up.
            raise SpecError([error(
                f"model.layers[{index}]",
                "embedding takes integer indices, so it must be the first layer",
            )])
        try:
            out, params, trainable = SHAPE_RULES[layer["type"]](layer, shape)
        except _Mismatch as exc:
            raise SpecError([error(f"model.layers[{index}]", str(exc))]) from None
        result.append(LayerShape(index, layer["type"], shape, out, params, trainable))
        shape = out
    return result


def count_params(model_spec: dict) -> int:
    """Total parameters (trainable and not) of a normalised `model` spec, as Keras would count them."""
    return sum(layer.params for layer in infer_shapes(model_spec))
