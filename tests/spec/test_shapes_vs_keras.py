"""The pure-Python shape and parameter rules in trainyard.spec.layers against real Keras 3 layers.

Every allow-listed layer type is built with its explicit Keras constructor (never deserialization),
called on a symbolic input, and compared with `infer_shapes`: output shape and `count_params()`.
"""
from __future__ import annotations

import keras
import pytest

from trainyard.spec import (
    ACTIVATIONS,
    INITIALIZERS,
    LAYER_TYPES,
    LOSSES,
    METRICS,
    SpecError,
    infer_shapes,
    metric_keras_class,
)
from trainyard.spec.layers import ModelSchema


def _normalise(input_shape: list[int], layer: dict) -> dict:
    return ModelSchema().load({"input_shape": input_shape, "layers": [layer]})


def _recurrent(layer: dict) -> keras.layers.Layer:
    cls = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple_rnn": keras.layers.SimpleRNN}
    return cls[layer["type"]](
        units=layer["units"],
        activation=layer["activation"],
        return_sequences=layer["return_sequences"],
        use_bias=layer["use_bias"],
        dropout=layer["dropout"],
        recurrent_dropout=layer["recurrent_dropout"],
        kernel_initializer=layer["kernel_initializer"],
        recurrent_initializer=layer["recurrent_initializer"],
        bias_initializer=layer["bias_initializer"],
    )


def _conv(layer: dict) -> keras.layers.Layer:
    cls = keras.layers.Conv1D if layer["type"] == "conv1d" else keras.layers.Conv2D
    return cls(
        filters=layer["filters"],
        kernel_size=tuple(layer["kernel_size"]),
        strides=tuple(layer["strides"]),
        padding=layer["padding"],
        activation=layer["activation"],
        use_bias=layer["use_bias"],
        dilation_rate=tuple(layer["dilation_rate"]),
    )


def _pool(layer: dict) -> keras.layers.Layer:
    cls = {
        "max_pooling1d": keras.layers.MaxPooling1D,
        "max_pooling2d": keras.layers.MaxPooling2D,
        "average_pooling2d": keras.layers.AveragePooling2D,
    }[layer["type"]]
    return cls(
        pool_size=tuple(layer["pool_size"]), strides=tuple(layer["strides"]), padding=layer["padding"]
    )


def to_keras(layer: dict) -> keras.layers.Layer:
    """The explicit constructor for each allow-listed layer type, as the trainer will use them."""
    kind = layer["type"]
    if kind == "dense":
        return keras.layers.Dense(
            units=layer["units"], activation=layer["activation"], use_bias=layer["use_bias"]
        )
    if kind == "dropout":
        return keras.layers.Dropout(rate=layer["rate"])
    if kind == "flatten":
        return keras.layers.Flatten()
    if kind == "reshape":
        return keras.layers.Reshape(target_shape=tuple(layer["target_shape"]))
    if kind == "activation":
        return keras.layers.Activation(layer["activation"])
    if kind == "batch_normalization":
        return keras.layers.BatchNormalization(
            momentum=layer["momentum"], epsilon=layer["epsilon"],
            center=layer["center"], scale=layer["scale"],
        )
    if kind == "layer_normalization":
        return keras.layers.LayerNormalization(
            epsilon=layer["epsilon"], center=layer["center"], scale=layer["scale"]
        )
    if kind in ("conv1d", "conv2d"):
        return _conv(layer)
    if kind in ("max_pooling1d", "max_pooling2d", "average_pooling2d"):
        return _pool(layer)
    if kind == "global_average_pooling1d":
        return keras.layers.GlobalAveragePooling1D()
    if kind == "global_average_pooling2d":
        return keras.layers.GlobalAveragePooling2D()
    if kind == "embedding":
        return keras.layers.Embedding(input_dim=layer["input_dim"], output_dim=layer["output_dim"])
    if kind in ("lstm", "gru", "simple_rnn"):
        return _recurrent(layer)
    if kind == "bidirectional":
        return keras.layers.Bidirectional(_recurrent(layer["layer"]), merge_mode=layer["merge_mode"])
    raise AssertionError(f"no Keras constructor for {kind}")


CASES: list[tuple[list[int], dict]] = [
    ([8], {"type": "dense", "units": 4}),
    ([8], {"type": "dense", "units": 3, "use_bias": False, "activation": "softmax"}),
    ([5, 7], {"type": "dense", "units": 6}),
    ([4, 3, 2], {"type": "dense", "units": 2}),
    ([8], {"type": "dropout", "rate": 0.5}),
    ([4, 5, 3], {"type": "flatten"}),
    ([6], {"type": "flatten"}),
    ([12], {"type": "reshape", "target_shape": [3, 4]}),
    ([12], {"type": "reshape", "target_shape": [-1, 2]}),
    ([2, 3, 4], {"type": "reshape", "target_shape": [24]}),
    ([2, 3, 4], {"type": "reshape", "target_shape": [4, -1, 2]}),
    ([8], {"type": "activation", "activation": "gelu"}),
    ([8], {"type": "batch_normalization"}),
    ([5, 6], {"type": "batch_normalization", "center": False}),
    ([5, 6], {"type": "batch_normalization", "scale": False}),
    ([4, 4, 3], {"type": "batch_normalization", "center": False, "scale": False}),
    ([8], {"type": "layer_normalization"}),
    ([5, 6], {"type": "layer_normalization", "center": False}),
    ([5, 6], {"type": "layer_normalization", "scale": False}),
    ([5, 6], {"type": "layer_normalization", "center": False, "scale": False}),
    ([20, 3], {"type": "conv1d", "filters": 4, "kernel_size": 3}),
    ([20, 3], {"type": "conv1d", "filters": 4, "kernel_size": [5], "strides": 3}),
    ([21, 3], {"type": "conv1d", "filters": 2, "kernel_size": 4, "strides": 2, "padding": "same"}),
    ([20, 3], {"type": "conv1d", "filters": 4, "kernel_size": 3, "dilation_rate": 3}),
    ([20, 3], {"type": "conv1d", "filters": 4, "kernel_size": 3, "padding": "same",
               "dilation_rate": 2, "use_bias": False}),
    ([12, 10, 3], {"type": "conv2d", "filters": 8, "kernel_size": 3}),
    ([12, 10, 3], {"type": "conv2d", "filters": 8, "kernel_size": [3, 5], "strides": [2, 1],
                   "padding": "same"}),
    ([13, 11, 2], {"type": "conv2d", "filters": 5, "kernel_size": 2, "strides": 3}),
    ([13, 11, 2], {"type": "conv2d", "filters": 5, "kernel_size": 3, "strides": [2, 3],
                   "padding": "same", "use_bias": False}),
    ([16, 16, 1], {"type": "conv2d", "filters": 3, "kernel_size": [3, 2], "dilation_rate": [2, 3]}),
    ([20, 3], {"type": "max_pooling1d"}),
    ([10, 3], {"type": "max_pooling1d", "pool_size": 3}),
    ([10, 3], {"type": "max_pooling1d", "pool_size": 3, "strides": 2}),
    ([11, 3], {"type": "max_pooling1d", "pool_size": 4, "strides": 3, "padding": "same"}),
    ([9, 7, 2], {"type": "max_pooling2d"}),
    ([9, 7, 2], {"type": "max_pooling2d", "pool_size": [3, 2], "strides": [1, 2]}),
    ([9, 7, 2], {"type": "max_pooling2d", "pool_size": 2, "padding": "same"}),
    ([9, 7, 2], {"type": "average_pooling2d"}),
    ([9, 7, 2], {"type": "average_pooling2d", "pool_size": 3, "strides": 2, "padding": "same"}),
    ([10, 4], {"type": "global_average_pooling1d"}),
    ([5, 6, 3], {"type": "global_average_pooling2d"}),
    ([12], {"type": "embedding", "input_dim": 50, "output_dim": 8}),
]
for _kind in ("lstm", "gru", "simple_rnn"):
    CASES += [
        ([10, 6], {"type": _kind, "units": 5}),
        ([10, 6], {"type": _kind, "units": 5, "return_sequences": True}),
        ([7, 3], {"type": _kind, "units": 4, "use_bias": False, "activation": "relu"}),
    ]
    for _merge in ("concat", "sum", "mul", "ave"):
        CASES.append(([9, 4], {"type": "bidirectional", "merge_mode": _merge,
                               "layer": {"type": _kind, "units": 3}}))
    CASES.append(([9, 4], {"type": "bidirectional",
                           "layer": {"type": _kind, "units": 3, "return_sequences": True}}))
    CASES.append(([9, 4], {"type": "bidirectional", "merge_mode": "sum",
                           "layer": {"type": _kind, "units": 2, "return_sequences": True,
                                     "use_bias": False}}))


def _case_id(case: tuple[list[int], dict]) -> str:
    shape, layer = case
    return f"{layer['type']}-{shape}-{sorted((k, str(v)) for k, v in layer.items() if k != 'type')}"


def test_cases_cover_every_layer_type():
    assert {layer["type"] for _, layer in CASES} == set(LAYER_TYPES)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_shape_and_params_match_keras(case):
    input_shape, raw_layer = case
    model = _normalise(input_shape, raw_layer)
    (inferred,) = infer_shapes(model)

    layer = to_keras(model["layers"][0])
    dtype = "int32" if raw_layer["type"] == "embedding" else "float32"
    output = layer(keras.Input(shape=tuple(input_shape), dtype=dtype))

    assert inferred.output_shape == tuple(output.shape[1:])
    assert inferred.params == layer.count_params()
    trainable = sum(int(w.numpy().size) for w in layer.trainable_weights)
    assert inferred.trainable_params == trainable


def test_whole_model_matches_keras():
    # A chain exercises how one layer's inferred output feeds the next rule.
    model = ModelSchema().load({
        "input_shape": [28, 28, 1],
        "layers": [
            {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "relu"},
            {"type": "batch_normalization"},
            {"type": "max_pooling2d"},
            {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same", "strides": 2},
            {"type": "reshape", "target_shape": [-1, 16]},
            {"type": "bidirectional", "layer": {"type": "gru", "units": 8, "return_sequences": True}},
            {"type": "conv1d", "filters": 4, "kernel_size": 2},
            {"type": "global_average_pooling1d"},
            {"type": "layer_normalization"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ],
    })
    keras_model = keras.Sequential(
        [keras.Input(shape=(28, 28, 1))] + [to_keras(layer) for layer in model["layers"]]
    )
    inferred = infer_shapes(model)
    assert [s.output_shape for s in inferred] == [
        tuple(layer.output.shape[1:]) for layer in keras_model.layers
    ]
    assert [s.params for s in inferred] == [layer.count_params() for layer in keras_model.layers]
    assert sum(s.params for s in inferred) == keras_model.count_params()


@pytest.mark.parametrize(
    "input_shape, raw_layer",
    [
        ([4, 3], {"type": "conv1d", "filters": 2, "kernel_size": 5}),
        ([6, 6, 1], {"type": "conv2d", "filters": 2, "kernel_size": 3, "dilation_rate": 3}),
        ([3, 3, 1], {"type": "max_pooling2d", "pool_size": 4}),
        ([2, 3], {"type": "max_pooling1d", "pool_size": 3}),
    ],
)
def test_valid_padding_that_keras_refuses_is_refused(input_shape, raw_layer):
    model = _normalise(input_shape, raw_layer)
    with pytest.raises(SpecError) as exc:
        infer_shapes(model)
    assert exc.value.errors[0]["field"] == "model.layers[0]"
    with pytest.raises(ValueError):
        to_keras(model["layers"][0])(keras.Input(shape=tuple(input_shape)))


def test_allow_listed_names_resolve_in_keras():
    for name in ACTIVATIONS:
        assert callable(keras.activations.get(name)), name
    for name in INITIALIZERS:
        assert keras.initializers.get(name) is not None, name
    for name in LOSSES:
        assert callable(keras.losses.get(name)), name
    for loss in ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy"):
        for name in METRICS:
            cls = getattr(keras.metrics, metric_keras_class(name, loss))
            # The log key is the spec's name because the trainer passes name= to every metric.
            assert cls(name=name).name == name
