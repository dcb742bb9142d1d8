"""Normalised job specs for trainer tests, built directly (no dependency on service.spec).

Defaults follow docs/design.md; ``make_spec`` deep-merges overrides into a complete dict.
"""

from __future__ import annotations

import copy

LAYER_DEFAULTS = {
    "dense": {"activation": None, "use_bias": True, "kernel_initializer": "glorot_uniform",
              "bias_initializer": "zeros", "kernel_regularizer": None, "bias_regularizer": None},
    "dropout": {"rate": 0.5},
    "flatten": {},
    "reshape": {},
    "activation": {"activation": "linear"},
    "batch_normalization": {"momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True},
    "layer_normalization": {"epsilon": 0.001, "center": True, "scale": True},
    "conv1d": {"strides": 1, "padding": "valid", "activation": None, "use_bias": True,
               "dilation_rate": 1, "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
               "kernel_regularizer": None, "bias_regularizer": None},
    "max_pooling1d": {"pool_size": 2, "strides": None, "padding": "valid"},
    "max_pooling2d": {"pool_size": 2, "strides": None, "padding": "valid"},
    "average_pooling2d": {"pool_size": 2, "strides": None, "padding": "valid"},
    "global_average_pooling1d": {},
    "global_average_pooling2d": {},
    "embedding": {"embeddings_initializer": "uniform", "embeddings_regularizer": None},
    "lstm": {"activation": "tanh", "return_sequences": False, "use_bias": True, "dropout": 0.0,
             "recurrent_dropout": 0.0, "kernel_initializer": "glorot_uniform",
             "recurrent_initializer": "orthogonal", "bias_initializer": "zeros",
             "kernel_regularizer": None},
    "bidirectional": {"merge_mode": "concat"},
}
LAYER_DEFAULTS["conv2d"] = LAYER_DEFAULTS["conv1d"]
LAYER_DEFAULTS["gru"] = LAYER_DEFAULTS["lstm"]
LAYER_DEFAULTS["simple_rnn"] = LAYER_DEFAULTS["lstm"]

OPTIMIZER_DEFAULTS = {
    "sgd": {"learning_rate": 0.01, "momentum": 0.0, "nesterov": False},
    "adam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False},
    "adamw": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False,
              "weight_decay": 0.004},
    "nadam": {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07},
    "rmsprop": {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-07,
                "centered": False},
    "adagrad": {"learning_rate": 0.001, "initial_accumulator_value": 0.1, "epsilon": 1e-07},
}


def layer(type_: str, **fields) -> dict:
    cfg = {"type": type_, **copy.deepcopy(LAYER_DEFAULTS[type_]), **fields}
    if type_ == "bidirectional" and "layer" in fields:
        cfg["layer"] = layer(fields["layer"]["type"], **{k: v for k, v in fields["layer"].items()
                                                          if k != "type"})
    return cfg


def optimizer(type_: str, **fields) -> dict:
    return {"type": type_, **OPTIMIZER_DEFAULTS[type_], "clipnorm": None, "clipvalue": None, **fields}


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def make_spec(**overrides) -> dict:
    """A complete normalised spec: a small classifier on 4 features and 3 classes, unless overridden.

    Dict overrides merge one level at a time (``training={"epochs": 3}`` keeps the other training
    fields); ``model``, ``optimizer``, ``schedule`` and ``metrics`` are replaced whole.
    """
    spec = {
        "version": 1,
        "name": "test",
        "dataset": {"id": "test", "validation_split": 0.0, "normalize": "none",
                    "normalize_targets": "none"},
        "model": {"input_shape": [4], "layers": [layer("dense", units=8, activation="relu"),
                                                 layer("dense", units=3, activation="softmax")]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": optimizer("adam"),
        "schedule": {"type": "constant"},
        "callbacks": {"early_stopping": None, "checkpoint": {"monitor": "loss", "mode": "min"},
                      "reduce_lr_on_plateau": None},
        "training": {"epochs": 1, "batch_size": 16, "shuffle": True, "seed": 0,
                     "mixed_precision": False, "jit_compile": False},
        "limits": {"max_runtime_seconds": None},
        "diagnostics": {"enabled": True},
    }
    replace_whole = {"model", "optimizer", "schedule", "metrics"}
    for key, value in overrides.items():
        if key in replace_whole or not isinstance(value, dict) or not isinstance(spec.get(key), dict):
            spec[key] = copy.deepcopy(value)
        else:
            _merge(spec[key], copy.deepcopy(value))
    return spec
