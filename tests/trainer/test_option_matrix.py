"""Every option the job spec allows, trained through the real engine on tiny data.

The rows are generated from the schema's own lists (`trainyard.names`, `LAYER_SCHEMAS`,
`OPTIMIZER_SCHEMAS`, `SCHEDULE_SCHEMAS`, the callbacks' declared fields) and packed into a few fits: each
fit takes the next optimizer variant (each type unclipped with every field set, with clipnorm, with
clipvalue), schedule (each type in both units), loss (aliases too) and embeddings initializer in turn, and
a body of layers that carries the layer-level options: every activation; every initializer on kernels,
biases, recurrent kernels and embeddings; l1, l2 and both on every regularizer of every layer type; every
field of every layer type away from its default (lstm, gru and simple_rnn count as one family there: one
schema, one builder, the same fields). The callbacks each get a fit with every field set. Every fit's spec
goes through `validate_spec` (tests/trainer/specs.py); each must end well, with a finite loss and a best
checkpoint that `keras.models.load_model` loads.

`test_every_allow_listed_option_has_a_row` fails when the schema offers a name or a field that no fit
uses, so a new option cannot be added without training it here. The fits cost tracing time above all
(recurrent layers most), so layers are spread to need as few as the lists allow (18, as many as the
optimizer variants).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import pytest
from marshmallow import fields as mfields
from marshmallow import validate

from trainyard.spec import LOSSES, METRICS, SpecError
from trainyard.spec.layers import LAYER_SCHEMAS, LAYER_TYPES, RECURRENT_SCHEMAS
from trainyard.names import ACTIVATION_ALIASES, ACTIVATIONS, LOSS_ALIASES
from trainyard.spec.schema import (
    SCHEDULE_SCHEMAS,
    SCHEDULE_UNITS,
    CallbacksSchema,
    JobSpecSchema,
    OPTIMIZER_SCHEMAS,
)
from workers.trainer import InMemoryReporter, TrainData, train

from .specs import dataset_info, make_spec, raw_spec

ROWS = 32  # training samples per fit: two batches of 16
VOCABULARY = 8
SEQUENCE = 6

# --- fit-level options: one per fit, taken in turn ------------------------------------------------------

# A value away from the default for every optimizer field; each type's unclipped variant sets them all.
OPTIMIZER_VALUES = {"learning_rate": 0.02, "momentum": 0.5, "nesterov": True, "beta_1": 0.8, "beta_2": 0.99,
                    "epsilon": 1e-6, "amsgrad": True, "weight_decay": 0.01, "rho": 0.8, "centered": True,
                    "initial_accumulator_value": 0.2}
CLIPS = {"clipnorm": 1.0, "clipvalue": 0.5}


def optimizer_variants() -> list[dict]:
    """Each optimizer three times: unclipped with every field set, then with clipnorm, then clipvalue."""
    variants = []
    for kind, schema in OPTIMIZER_SCHEMAS.items():
        settable = [f for f in schema._declared_fields if f not in ("type", *CLIPS)]
        variants.append({"type": kind, **{f: OPTIMIZER_VALUES[f] for f in settable if f in OPTIMIZER_VALUES}})
        variants += [{"type": kind, "learning_rate": 0.01, clip: value} for clip, value in CLIPS.items()]
    return variants


# Every field of every schedule; both units of each.
SCHEDULE_VALUES = {
    "exponential_decay": {"decay_steps": 2, "decay_rate": 0.5, "staircase": True},
    "inverse_time_decay": {"decay_steps": 2, "decay_rate": 0.5, "staircase": True},
    "piecewise_constant": {"boundaries": [1], "values": [0.02, 0.01]},
    "cosine_decay": {"decay_steps": 2, "alpha": 0.1, "warmup_steps": 1, "warmup_target": 0.03},
    "polynomial_decay": {"decay_steps": 2, "end_learning_rate": 0.001, "power": 2.0, "cycle": True},
}


def schedule_variants() -> list[dict]:
    variants = [{"type": "constant"}]
    for kind in SCHEDULE_SCHEMAS:
        if kind != "constant":
            variants += [{"type": kind, "unit": unit, **SCHEDULE_VALUES.get(kind, {})} for unit in SCHEDULE_UNITS]
    return variants


LOSS_NAMES = LOSSES + [alias for alias in LOSS_ALIASES if alias not in LOSSES]


def _choices(schema: type, field: str) -> list[str]:
    """The names a Choice field of a schema allows (aliases included), read from its validator."""
    return [c for v in schema._declared_fields[field].validators if isinstance(v, validate.OneOf) for c in v.choices]


DENSE = LAYER_SCHEMAS["dense"]
EMBEDDING = LAYER_SCHEMAS["embedding"]
KERNEL_INITIALIZERS = _choices(DENSE, "kernel_initializer")
BIAS_INITIALIZERS = _choices(DENSE, "bias_initializer")
EMBEDDINGS_INITIALIZERS = _choices(EMBEDDING, "embeddings_initializer")
RECURRENT_INITIALIZERS = _choices(RECURRENT_SCHEMAS["lstm"], "recurrent_initializer")
ACTIVATION_NAMES = ACTIVATIONS + [alias for alias in ACTIVATION_ALIASES if alias not in ACTIVATIONS]
RECURRENT_TYPES = list(RECURRENT_SCHEMAS)
MERGE_MODES = _choices(LAYER_SCHEMAS["bidirectional"], "merge_mode")
PADDINGS = _choices(LAYER_SCHEMAS["conv1d"], "padding")
REGULARIZERS = [{"l1": 1e-4}, {"l2": 1e-4}, {"l1": 1e-4, "l2": 1e-4}]

# --- heads: what each loss needs of the targets and the output layer --------------------------------------

CLASSIFICATION_HEADS = {
    "sparse_categorical_crossentropy": ("classes", {"units": 3, "activation": "softmax"},
                                        ["accuracy", "sparse_categorical_accuracy"]),
    "categorical_crossentropy": ("one_hot", {"units": 3, "activation": "softmax"},
                                 ["accuracy", "categorical_accuracy", "auc", "precision", "recall"]),
    "kl_divergence": ("one_hot", {"units": 3, "activation": "softmax"}, ["accuracy"]),
    "binary_crossentropy": ("binary", {"units": 1, "activation": "sigmoid"},
                            ["accuracy", "binary_accuracy", "auc", "precision", "recall"]),
    "hinge": ("binary", {"units": 1, "activation": "tanh"}, ["binary_accuracy"]),
    "squared_hinge": ("binary", {"units": 1, "activation": "tanh"}, ["binary_accuracy"]),
}
REGRESSION_METRICS = ["mae", "mse", "rmse", "mape"]


def head(loss: str) -> tuple[str, dict, list[str]]:
    """(target kind, output layer, metrics) for `loss`."""
    if loss in CLASSIFICATION_HEADS:
        return CLASSIFICATION_HEADS[loss]
    if loss == "poisson":  # a rate: the output must stay positive
        return "values", {"units": 1, "activation": "softplus"}, REGRESSION_METRICS
    if LOSS_ALIASES.get(loss) == "mean_squared_error":
        # A regression loss on one-hot class targets: "accuracy" then means binary accuracy per output.
        return "one_hot", {"units": 3, "activation": "softmax"}, ["accuracy", "mse"]
    return "values", {"units": 1}, REGRESSION_METRICS


# --- bodies: the layers before the head ----------------------------------------------------------------


def recurrent_layer(c: int) -> dict:
    """Recurrent layer number `c` of the matrix: one of each type first, then simple_rnn (the cheapest to
    trace) for the rest of the recurrent initializers. The three types share one schema and one builder
    (their fields are the same), so the dropouts, costly to trace, are set on one layer of them."""
    kind = RECURRENT_TYPES[c] if c < len(RECURRENT_TYPES) else "simple_rnn"
    layer = {"type": kind, "units": 3, "return_sequences": True,
             "kernel_initializer": KERNEL_INITIALIZERS[(c + 3) % len(KERNEL_INITIALIZERS)],
             "recurrent_initializer": RECURRENT_INITIALIZERS[c % len(RECURRENT_INITIALIZERS)],
             "bias_initializer": BIAS_INITIALIZERS[(c + 5) % len(BIAS_INITIALIZERS)],
             "kernel_regularizer": REGULARIZERS[c % 3]}
    if c < len(RECURRENT_TYPES):
        layer.update(activation="softsign", use_bias=False)
    if kind == "simple_rnn" and c < len(RECURRENT_TYPES):
        layer.update(dropout=0.1, recurrent_dropout=0.1)
    return layer


# Recurrent layers cost most to trace (a second or more each): three per fit, the last one wrapped in a
# bidirectional layer, in as few fits as the recurrent initializers and the merge modes need.
RECURRENT_FITS = max(math.ceil(len(RECURRENT_INITIALIZERS) / 3), len(MERGE_MODES))


def token_body(i: int) -> list[dict]:
    """Integer sequences: an embedding (one per initializer), then recurrent layers in the first few fits,
    conv1d and 1-D pooling in the next few, a flatten in the rest (every layer costs tracing time)."""
    layers: list[dict] = [{"type": "embedding", "input_dim": VOCABULARY, "output_dim": 4,
                           "embeddings_initializer": EMBEDDINGS_INITIALIZERS[i % len(EMBEDDINGS_INITIALIZERS)],
                           "embeddings_regularizer": REGULARIZERS[i % 3]}]
    if i < RECURRENT_FITS:
        return layers + [recurrent_layer(i), recurrent_layer(RECURRENT_FITS + i),
                         {"type": "bidirectional", "merge_mode": MERGE_MODES[i % len(MERGE_MODES)],
                          "layer": recurrent_layer(2 * RECURRENT_FITS + i)},
                         {"type": "global_average_pooling1d"}]
    j = i - RECURRENT_FITS
    if j >= CONV1D_FITS:
        return layers + [{"type": "flatten"}]
    strided = j % 2 == 0
    return layers + [
        {"type": "conv1d", "filters": 4, "kernel_size": 2, "padding": PADDINGS[j % 2], "activation": "relu",
         "use_bias": j % 2 == 0, "strides": 2 if strided else 1, "dilation_rate": 1 if strided else 2,
         "kernel_initializer": KERNEL_INITIALIZERS[j % len(KERNEL_INITIALIZERS)],
         "bias_initializer": BIAS_INITIALIZERS[j % len(BIAS_INITIALIZERS)],
         "kernel_regularizer": REGULARIZERS[j % 3], "bias_regularizer": REGULARIZERS[(j + 1) % 3]},
        {"type": "max_pooling1d", "pool_size": 3, "strides": 1, "padding": PADDINGS[(j + 1) % 2]},
        {"type": "flatten"}]


CONV1D_FITS = 3  # each regularizer on conv1d's kernel and bias, both paddings, strided and dilated


def feature_body(i: int, activations: list[str]) -> list[dict]:
    """Feature vectors: a dense layer per activation, each with the next kernel and bias initializer and
    regularizer, and the normalisation, activation and dropout layers."""
    layers: list[dict] = [{"type": "batch_normalization", "momentum": 0.9, "epsilon": 0.01,
                           "center": i % 2 == 0, "scale": i % 2 == 1}]
    for n, activation in enumerate(activations):
        k = i * len(ACTIVATION_NAMES) + n
        layers.append({"type": "dense", "units": 3, "activation": activation, "use_bias": n % 5 != 4,
                       "kernel_initializer": KERNEL_INITIALIZERS[k % len(KERNEL_INITIALIZERS)],
                       "bias_initializer": BIAS_INITIALIZERS[k % len(BIAS_INITIALIZERS)],
                       "kernel_regularizer": REGULARIZERS[k % 3], "bias_regularizer": REGULARIZERS[(k + 1) % 3]})
        if n % 3 == 2:
            # Brings the values back near unit scale, whatever the activations before did to them.
            layers.append({"type": "layer_normalization", "epsilon": 0.01, "center": n % 2 == 0,
                           "scale": n % 2 == 1})
    layers += [{"type": "activation", "activation": activations[0]}, {"type": "dropout", "rate": 0.2}]
    return layers


def image_body(i: int) -> list[dict]:
    """8x8 images: two conv2d (dilated, strided), 2-D pooling, then global pooling or reshape + flatten."""
    conv = {"type": "conv2d", "filters": 3, "kernel_size": [3, 3], "padding": "same", "activation": "elu",
            "use_bias": i % 2 == 0}
    first = {**conv, "strides": [1, 1], "dilation_rate": [2, 2],
             "kernel_initializer": KERNEL_INITIALIZERS[(2 * i) % len(KERNEL_INITIALIZERS)],
             "bias_initializer": BIAS_INITIALIZERS[(2 * i) % len(BIAS_INITIALIZERS)],
             "kernel_regularizer": REGULARIZERS[i % 3], "bias_regularizer": REGULARIZERS[(i + 1) % 3]}
    second = {**conv, "kernel_size": 2, "strides": 2, "padding": PADDINGS[(i + 1) % 2],
              "kernel_regularizer": REGULARIZERS[(i + 2) % 3], "bias_regularizer": REGULARIZERS[i % 3]}
    layers = [first, {"type": "max_pooling2d", "pool_size": [3, 3], "strides": [2, 2], "padding": PADDINGS[i % 2]},
              {"type": "average_pooling2d", "pool_size": [2, 1], "strides": 1, "padding": PADDINGS[(i // 2) % 2]},
              second]
    if i % 2:
        return layers + [{"type": "global_average_pooling2d"}]
    return layers + [{"type": "reshape", "target_shape": [-1, 3]}, {"type": "flatten"}]


# --- the fits ------------------------------------------------------------------------------------------

CALLBACK_ROWS = {
    # Every field of each callback away from its default, each in one fit.
    "early_stopping": {"monitor": "val_loss", "patience": 1, "min_delta": 1e-4, "mode": "min",
                       "restore_best_weights": True, "start_from_epoch": 1},
    "checkpoint": {"monitor": "val_accuracy", "mode": "max"},
    "reduce_lr_on_plateau": {"monitor": "loss", "factor": 0.5, "patience": 0, "min_delta": 0.01, "cooldown": 1,
                             "min_lr": 1e-4, "mode": "min"},
}
# Options of the whole job, one fit each (in this order, from the first fit of a float body).
JOB_OPTIONS = [
    {"training": {"mixed_precision": True}, "diagnostics": {"on_error": "continue"}},
    {"training": {"jit_compile": True}, "diagnostics": {"enabled": False}},
    {"training": {"shuffle": False, "seed": None}, "diagnostics": {"preflight": False}},
    {"limits": {"max_runtime_seconds": 3600}, "resources": {"gpus": 0}},
]
NORMALIZE = _choices(JobSpecSchema._declared_fields["dataset"].nested, "normalize")


def fits() -> list[dict[str, Any]]:
    """The matrix: each fit's raw spec overrides, body kind and target kind, from the lists above."""
    optimizers, schedules = optimizer_variants(), schedule_variants()
    n_tokens = max(len(EMBEDDINGS_INITIALIZERS), len(RECURRENT_INITIALIZERS))
    # The activations in three dense stacks, each its own fit, and as many image fits between them.
    activation_parts = [ACTIVATION_NAMES[k::3] for k in range(3)]
    n_float = 2 * len(activation_parts)
    count = max(len(optimizers), len(LOSS_NAMES), n_tokens + n_float)
    out: list[dict[str, Any]] = []
    float_index = 0
    for i in range(count):
        loss = LOSS_NAMES[i % len(LOSS_NAMES)]
        targets, output, metrics = head(loss)
        if i < n_tokens:
            inputs, layers = "tokens", token_body(i)
        elif float_index % 2 == 0:
            inputs, layers = "features", feature_body(float_index // 2, activation_parts[(float_index // 2) % 3])
        else:
            inputs, layers = "images", image_body(float_index // 2)
        overrides: dict[str, Any] = {
            "model": {"layers": layers + [{"type": "dense", **output}]}, "loss": loss, "metrics": metrics,
            "optimizer": optimizers[i % len(optimizers)], "schedule": schedules[i % len(schedules)],
            "training": {"epochs": 2, "batch_size": 16, "seed": i},
            "dataset": {"validation_split": 0.0},  # validation (one more trace) where a callback needs it
        }
        if inputs != "tokens":
            overrides["dataset"]["normalize"] = NORMALIZE[float_index % len(NORMALIZE)]
            if float_index < len(JOB_OPTIONS):
                for key, value in JOB_OPTIONS[float_index].items():
                    overrides.setdefault(key, {}).update(value)
            float_index += 1
        out.append({"overrides": overrides, "inputs": inputs, "targets": targets, "given_splits": False})
    _place_callbacks_and_targets(out)
    return out


def _place_callbacks_and_targets(rows: list[dict[str, Any]]) -> None:
    """Callbacks (with a validation split where they monitor a val_ value), each on its own fit; one fit
    with its own validation and test split; target normalisation on a float-input regression fit."""
    def take(predicate: Any, callbacks: dict, split: float = 0.2) -> None:
        row = next(r for r in rows if predicate(r) and "callbacks" not in r["overrides"] and not r["given_splits"])
        row["overrides"]["callbacks"] = callbacks
        row["overrides"]["dataset"]["validation_split"] = split

    take(lambda r: r["overrides"]["schedule"]["type"] == "constant",
         {"reduce_lr_on_plateau": CALLBACK_ROWS["reduce_lr_on_plateau"]}, split=0.0)
    take(lambda r: True, {"early_stopping": CALLBACK_ROWS["early_stopping"]})
    take(lambda r: "accuracy" in r["overrides"]["metrics"], {"checkpoint": CALLBACK_ROWS["checkpoint"]})
    # Defaults too: an early stopping that leaves its monitor (val_loss) and mode to the contract.
    take(lambda r: True, {"early_stopping": {"patience": 1}})
    next(r for r in rows if "callbacks" not in r["overrides"])["given_splits"] = True
    regression = next(r for r in rows if r["inputs"] != "tokens" and r["targets"] == "values"
                      and r["overrides"]["loss"] != "poisson")
    regression["overrides"]["dataset"]["normalize_targets"] = "standardize"
    # Class weights on integer labels and on one-hot rows (Keras weighs those by their argmax).
    for loss in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        row = next(r for r in rows if r["overrides"]["loss"] == loss)
        row["overrides"]["training"]["class_weight"] = "balanced"


def data_for(row: dict[str, Any], seed: int) -> TrainData:
    rng = np.random.default_rng(seed)
    # Whole batches only (a last, smaller batch would be traced again): 32 rows train, 8 more validate or test.
    split = row["overrides"]["dataset"]["validation_split"]
    n = ROWS + (ROWS // 2 if row["given_splits"] else ROWS // 4 if split else 0)
    if row["inputs"] == "tokens":
        x = rng.integers(0, VOCABULARY, size=(n, SEQUENCE)).astype(np.int64)
        signal = (x[:, 0] + x[:, 1]) / VOCABULARY
    else:
        shape = (5,) if row["inputs"] == "features" else (8, 8, 1)
        x = (rng.normal(size=(n, *shape)) * 3 + 1).astype(np.float32)
        signal = x.reshape(n, -1)[:, 0] / 3
    classes = np.digitize(signal, np.quantile(signal, [1 / 3, 2 / 3]))
    y = {"classes": classes,
         "one_hot": np.eye(3, dtype=np.float32)[classes],
         "binary": (classes > 0).astype(np.int64),
         "values": (2.0 + np.abs(signal) + rng.uniform(0.1, 0.5, size=n)).astype(np.float32)}[row["targets"]]
    if row["given_splits"]:
        cut, test = ROWS, ROWS + ROWS // 4
        return TrainData(x[:cut], y[:cut], x[cut:test], y[cut:test], x[test:], y[test:])
    return TrainData(x, y)


FITS = fits()


def _id(index: int) -> str:
    o = FITS[index]["overrides"]
    clip = next((c for c in CLIPS if c in o["optimizer"]), "")
    return f"{index}-{FITS[index]['inputs']}-{o['loss']}-{o['optimizer']['type']}{clip and '+' + clip}"


@pytest.mark.parametrize("index", range(len(FITS)), ids=_id)
def test_fit_ends_well_with_a_finite_loss_and_a_loadable_checkpoint(index, tmp_path):
    row = FITS[index]
    data = data_for(row, index)
    spec = make_spec(data, **row["overrides"])
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason in ("completed", "early_stopping"), result
    assert reporter.epochs and all(math.isfinite(logs["loss"]) for _, logs in reporter.epochs), reporter.epochs
    model = keras.models.load_model(result.best_checkpoint)
    predicted = model.predict(data.x_train[:4], verbose=0)
    assert predicted.shape[0] == 4 and np.isfinite(predicted).all()
    if row["given_splits"]:
        assert result.test_metrics and all(math.isfinite(v) for v in result.test_metrics.values())


# --- coverage: every allow-listed name and field has a fit ------------------------------------------------


def _default(declared: mfields.Field) -> Any:
    value = declared.load_default
    return value() if callable(value) else value


def _where(layer_type: str) -> str:
    # lstm, gru and simple_rnn: one schema factory, one builder, the same fields; a wrapped one (in
    # bidirectional) is the same layer with the same fields as an unwrapped one.
    return "layer recurrent" if layer_type in RECURRENT_SCHEMAS else f"layer {layer_type}"


def _sections(spec: dict, raw: dict) -> Iterator[tuple[str, type, dict, dict]]:
    """(where, schema, normalised section, raw section) for every object in a spec that has a schema."""
    for layer, raw_layer in zip(spec["model"]["layers"], raw["model"]["layers"]):
        yield _where(layer["type"]), LAYER_SCHEMAS[layer["type"]], layer, raw_layer
        if layer["type"] == "bidirectional":
            inner = layer["layer"]["type"]
            yield _where(inner), RECURRENT_SCHEMAS[inner], layer["layer"], raw_layer["layer"]
    for name in ("optimizer", "schedule"):
        kind = spec[name]["type"]
        yield f"{name} {kind}", (OPTIMIZER_SCHEMAS if name == "optimizer" else SCHEDULE_SCHEMAS)[kind], \
            spec[name], raw.get(name) or {}
    for name, declared in CallbacksSchema._declared_fields.items():
        if spec["callbacks"][name] is not None:
            yield f"callback {name}", declared.nested, spec["callbacks"][name], \
                (raw.get("callbacks") or {}).get(name) or {}
    for name in JOB_SECTIONS:
        yield name, JobSpecSchema._declared_fields[name].nested, spec[name], raw.get(name) or {}


JOB_SECTIONS = ("dataset", "training", "limits", "diagnostics", "resources")


def _family(where: str) -> str:
    # The callbacks share one list of monitor modes; each layer type has its own paddings.
    return "callback" if where.startswith("callback ") else where


def _regularizer_kind(value: dict) -> str:
    return {(True, False): "l1", (False, True): "l2", (True, True): "l1+l2"}[(value["l1"] > 0, value["l2"] > 0)]


def coverage() -> dict[str, set]:
    """What the fits use: names as the client wrote them (aliases too), fields set away from their defaults."""
    seen: dict[str, set] = defaultdict(set)
    for index, row in enumerate(FITS):
        data = data_for(row, index)
        raw, _ = raw_spec(data, **row["overrides"])
        spec = make_spec(data, **row["overrides"])
        seen["loss"].add(raw["loss"])
        seen["metric"].update(raw["metrics"])
        seen["layer"].update(layer["type"] for layer in spec["model"]["layers"])
        clip = next((c for c in CLIPS if spec["optimizer"][c] is not None), None)
        seen["optimizer"].add((spec["optimizer"]["type"], clip))
        seen["schedule"].add((spec["schedule"]["type"], spec["schedule"].get("unit")))
        for where, schema, section, raw_section in _sections(spec, raw):
            # Set by the client, to something else than the default (a monitor mode "auto" the contract
            # resolved to "max" was not set).
            changed = {name for name, declared in schema._declared_fields.items()
                       if name not in ("type", "id") and name in raw_section and section[name] != _default(declared)}
            seen["field"].update((where, name) for name in changed)
            if where.startswith("callback ") and changed == set(schema._declared_fields):
                seen["callback with every field set"].add(where.removeprefix("callback "))
            for name, declared in schema._declared_fields.items():
                # What the client wrote, or the default it left to the contract.
                value = raw_section.get(name, _default(declared))
                if name.endswith("activation"):
                    seen["activation"].add(value)
                elif name.endswith("_initializer"):
                    seen["initializer"].add((name.removesuffix("_initializer"), value))
                elif name.endswith("_regularizer") and section[name]:
                    seen["regularizer"].add((where, name, _regularizer_kind(section[name])))
                elif isinstance(declared, mfields.String):
                    seen["choice"].add((_family(where), name, value))
    return seen


def required() -> dict[str, set]:
    """Everything the schema allows, from its own lists."""
    need: dict[str, set] = defaultdict(set)
    need["loss"] = set(LOSS_NAMES)
    need["metric"] = set(METRICS)
    need["activation"] = set(ACTIVATION_NAMES)
    need["layer"] = set(LAYER_TYPES)
    need["optimizer"] = {(kind, clip) for kind in OPTIMIZER_SCHEMAS for clip in (None, *CLIPS)}
    need["schedule"] = {("constant", None)} | {(kind, unit) for kind in SCHEDULE_SCHEMAS if kind != "constant"
                                              for unit in SCHEDULE_UNITS}
    need["callback with every field set"] = set(CallbacksSchema._declared_fields)
    schemas = {_where(t): s for t, s in LAYER_SCHEMAS.items()}
    schemas |= {f"optimizer {t}": s for t, s in OPTIMIZER_SCHEMAS.items()}
    schemas |= {f"schedule {t}": s for t, s in SCHEDULE_SCHEMAS.items()}
    schemas |= {f"callback {n}": d.nested for n, d in CallbacksSchema._declared_fields.items()}
    schemas |= {n: JobSpecSchema._declared_fields[n].nested for n in JOB_SECTIONS}
    for where, schema in schemas.items():
        for name, declared in schema._declared_fields.items():
            if name in ("type", "id"):
                continue
            need["field"].add((where, name))
            if name.endswith("activation"):
                continue  # any activation anywhere: the list is the same for every place
            if name.endswith("_initializer"):
                need["initializer"] |= {(name.removesuffix("_initializer"), c) for c in _choices(schema, name)}
            elif name.endswith("_regularizer"):
                need["regularizer"] |= {(where, name, kind) for kind in ("l1", "l2", "l1+l2")}
            elif isinstance(declared, mfields.String):
                need["choice"] |= {(_family(where), name, c) for c in _choices(schema, name)}
    return need


def test_every_allow_listed_option_has_a_row():
    seen, need = coverage(), required()
    missing = {kind: sorted(need[kind] - seen[kind], key=str) for kind in need if need[kind] - seen[kind]}
    assert not missing, f"allow-listed options no fit trains: {missing}"


def test_the_matrix_is_a_few_fits():
    # Options are packed: dozens of names and fields per fit, not one fit each.
    assert len(FITS) <= 20
    assert sum(len(v) for v in required().values()) > 10 * len(FITS)


@pytest.mark.parametrize("layer", [{"type": "dense", "units": 3, "activation": "softmax"},
                                   {"type": "conv1d", "filters": 3, "kernel_size": 1}])
def test_what_the_engine_cannot_build_is_refused_with_a_field_path(layer):
    # Keras' orthogonal initializer needs a matrix; a bias is a vector, so a layer with it never builds.
    info = dataset_info(input_shape=(4, 2) if layer["type"] == "conv1d" else (4,), n_classes=3)
    with pytest.raises(ValueError, match="two-dimensional"):
        keras.layers.Dense(3, bias_initializer="orthogonal").build((None, 4))
    with pytest.raises(SpecError) as refused:
        make_spec(info, model={"layers": [{**layer, "bias_initializer": "orthogonal"}, {"type": "flatten"},
                                          {"type": "dense", "units": 3, "activation": "softmax"}]})
    assert [e["field"] for e in refused.value.errors] == ["model.layers[0].bias_initializer"]
