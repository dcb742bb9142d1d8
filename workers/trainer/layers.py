"""Model construction from the normalised spec: one explicit constructor per allow-listed layer type.

Nothing here deserialises configs (no from_config / model_from_json): a spec can only ever name layer
types listed in ``LAYER_BUILDERS`` with the fields each builder accepts.
"""

from __future__ import annotations

from typing import Any, Callable

import keras

_REGULARIZER_FIELDS = ("kernel_regularizer", "bias_regularizer", "embeddings_regularizer")


def _regularizer(value: dict | None) -> keras.regularizers.Regularizer | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"l1", "l2"}:
        raise ValueError(f"a regularizer is null or {{'l1': float, 'l2': float}}, got {value!r}")
    return keras.regularizers.L1L2(l1=float(value.get("l1") or 0.0), l2=float(value.get("l2") or 0.0))


def _tuple_or_int(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _kwargs(cfg: dict, allowed: tuple[str, ...]) -> dict:
    """The spec fields a builder passes on; unknown fields are an error, not silently ignored."""
    unknown = set(cfg) - set(allowed) - {"type"}
    if unknown:
        raise ValueError(f"layer {cfg.get('type')!r} does not take {sorted(unknown)}")
    kwargs = {key: cfg[key] for key in allowed if key in cfg}
    for key in _REGULARIZER_FIELDS:
        if key in kwargs:
            kwargs[key] = _regularizer(kwargs[key])
    for key in ("kernel_size", "strides", "pool_size", "dilation_rate"):
        if key in kwargs:
            kwargs[key] = _tuple_or_int(kwargs[key])
    return kwargs


_DENSE = ("units", "activation", "use_bias", "kernel_initializer", "bias_initializer",
          "kernel_regularizer", "bias_regularizer")
_CONV = ("filters", "kernel_size", "strides", "padding", "activation", "use_bias", "dilation_rate",
         "kernel_initializer", "bias_initializer", "kernel_regularizer", "bias_regularizer")
_POOL = ("pool_size", "strides", "padding")
_RNN = ("units", "activation", "return_sequences", "use_bias", "dropout", "recurrent_dropout",
        "kernel_initializer", "recurrent_initializer", "bias_initializer", "kernel_regularizer")


def _dense(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.Dense(name=name, **_kwargs(cfg, _DENSE))


def _dropout(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.Dropout(name=name, **_kwargs(cfg, ("rate",)))


def _flatten(cfg: dict, name: str | None) -> keras.layers.Layer:
    _kwargs(cfg, ())
    return keras.layers.Flatten(name=name)


def _reshape(cfg: dict, name: str | None) -> keras.layers.Layer:
    target_shape = _kwargs(cfg, ("target_shape",)).get("target_shape")
    if not isinstance(target_shape, (list, tuple)):
        raise ValueError(f"reshape.target_shape must be a list of ints, got {target_shape!r}")
    return keras.layers.Reshape(target_shape=tuple(target_shape), name=name)


def _activation(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.Activation(name=name, **_kwargs(cfg, ("activation",)))


def _batch_normalization(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.BatchNormalization(
        name=name, **_kwargs(cfg, ("momentum", "epsilon", "center", "scale"))
    )


def _layer_normalization(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.LayerNormalization(name=name, **_kwargs(cfg, ("epsilon", "center", "scale")))


def _conv1d(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.Conv1D(name=name, **_kwargs(cfg, _CONV))


def _conv2d(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.Conv2D(name=name, **_kwargs(cfg, _CONV))


def _max_pooling1d(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.MaxPooling1D(name=name, **_kwargs(cfg, _POOL))


def _max_pooling2d(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.MaxPooling2D(name=name, **_kwargs(cfg, _POOL))


def _average_pooling2d(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.AveragePooling2D(name=name, **_kwargs(cfg, _POOL))


def _global_average_pooling1d(cfg: dict, name: str | None) -> keras.layers.Layer:
    _kwargs(cfg, ())
    return keras.layers.GlobalAveragePooling1D(name=name)


def _global_average_pooling2d(cfg: dict, name: str | None) -> keras.layers.Layer:
    _kwargs(cfg, ())
    return keras.layers.GlobalAveragePooling2D(name=name)


def _embedding(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.Embedding(
        name=name,
        **_kwargs(cfg, ("input_dim", "output_dim", "embeddings_initializer", "embeddings_regularizer")),
    )


def _lstm(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.LSTM(name=name, **_kwargs(cfg, _RNN))


def _gru(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.GRU(name=name, **_kwargs(cfg, _RNN))


def _simple_rnn(cfg: dict, name: str | None) -> keras.layers.Layer:
    return keras.layers.SimpleRNN(name=name, **_kwargs(cfg, _RNN))


_RECURRENT: dict[str, Callable[[dict, str | None], keras.layers.Layer]] = {
    "lstm": _lstm,
    "gru": _gru,
    "simple_rnn": _simple_rnn,
}


def _bidirectional(cfg: dict, name: str | None) -> keras.layers.Layer:
    kwargs = _kwargs(cfg, ("layer", "merge_mode"))
    inner = kwargs.pop("layer")
    if not isinstance(inner, dict) or inner.get("type") not in _RECURRENT:
        raise ValueError(f"bidirectional.layer must be one of {sorted(_RECURRENT)}, got {inner!r}")
    # An explicit inner name keeps variable paths stable ("forward_lstm/lstm_cell/kernel") however many
    # models the worker process built before; Keras would otherwise number them ("forward_lstm_9").
    return keras.layers.Bidirectional(_RECURRENT[inner["type"]](inner, inner["type"]), name=name, **kwargs)


LAYER_BUILDERS: dict[str, Callable[[dict, str | None], keras.layers.Layer]] = {
    "dense": _dense,
    "dropout": _dropout,
    "flatten": _flatten,
    "reshape": _reshape,
    "activation": _activation,
    "batch_normalization": _batch_normalization,
    "layer_normalization": _layer_normalization,
    "conv1d": _conv1d,
    "conv2d": _conv2d,
    "max_pooling1d": _max_pooling1d,
    "max_pooling2d": _max_pooling2d,
    "average_pooling2d": _average_pooling2d,
    "global_average_pooling1d": _global_average_pooling1d,
    "global_average_pooling2d": _global_average_pooling2d,
    "embedding": _embedding,
    **_RECURRENT,
    "bidirectional": _bidirectional,
}


def build_layer(cfg: dict, name: str | None = None) -> keras.layers.Layer:
    layer_type = cfg.get("type")
    if layer_type not in LAYER_BUILDERS:
        raise ValueError(f"unknown layer type {layer_type!r}; allowed: {sorted(LAYER_BUILDERS)}")
    return LAYER_BUILDERS[layer_type](cfg, name)


def takes_integer_inputs(model_spec: dict) -> bool:
    layers = model_spec.get("layers") or []
    return bool(layers) and layers[0].get("type") == "embedding"


def build_model(spec: dict, *, float32_output: bool = False) -> keras.Model:
    """A functional ``keras.Model`` from ``spec["model"]`` (or a bare model section).

    Layers are named ``<type>_<position>`` (from 1) so names are stable across jobs in one worker
    process instead of depending on Keras' global name counters. ``float32_output`` appends a linear
    float32 activation, which mixed precision needs for a numerically safe loss.
    """
    model_spec = spec["model"] if "model" in spec else spec
    layers = model_spec.get("layers") or []
    if not layers:
        raise ValueError("model.layers must not be empty")
    dtype = "int32" if takes_integer_inputs(model_spec) else "float32"
    inputs = keras.Input(shape=tuple(model_spec["input_shape"]), dtype=dtype, name="inputs")
    x = inputs
    for position, cfg in enumerate(layers, start=1):
        x = build_layer(cfg, name=f"{cfg.get('type')}_{position}")(x)
    if float32_output:
        x = keras.layers.Activation("linear", dtype="float32", name="output_float32")(x)
    return keras.Model(inputs=inputs, outputs=x, name="model")


def summarize(model: keras.Model, model_spec: dict) -> list[dict]:
    """Per-layer rows for ``started()``: name, spec type, output shape (batch as None), params."""
    types = [cfg.get("type") for cfg in model_spec.get("layers") or []]
    rows = []
    body = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    for index, layer in enumerate(body):
        layer_type = types[index] if index < len(types) else type(layer).__name__.lower()
        rows.append({
            "name": layer.name,
            "type": layer_type,
            "output_shape": [None if d is None else int(d) for d in layer.output.shape],
            "params": int(layer.count_params()),
        })
    return rows
