"""Hypothesis strategies for job specs, drawn from the schema's own declarations.

Every field comes from walking the schema classes (`LAYER_SCHEMAS`, `OPTIMIZER_SCHEMAS`,
`SCHEDULE_SCHEMAS`, the callback and training schemas): its type, its allow-list (`OneOf`), its range
(`Range`, drawn at and next to both bounds, at tiny and huge magnitudes, and a little past them), its
list length and whether it may be null or left out. Nothing here restates a bound or a name; a field
added to the schema is drawn without a change here.

What the schema cannot say is how layers fit together, so the model is drawn layer by layer against
the shape rules themselves (`infer_shapes`), and its last layer and the data's targets are chosen to
suit the drawn loss most of the time: otherwise nearly every draw would be refused for a shape or a
loss mismatch and the engine would rarely run.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

from trainyard.spec import DatasetInfo, SpecError, infer_shapes
from trainyard.spec.fields import Bool, Choice, Float, FloatOrWord, Int, IntOrList, List, Object, Str, Tagged
from trainyard.spec.labels import KEY_RE, MAX_KEY_CHARS, MAX_LABELS, MAX_VALUE_CHARS, Labels
from trainyard.spec.layers import LAYER_SCHEMAS, layer_field
from trainyard.names import LOSS_ALIASES, LOSSES, METRICS
from trainyard.spec.schema import (
    OPTIMIZER_SCHEMAS,
    SCHEDULE_SCHEMAS,
    CallbacksSchema,
    DatasetSchema,
    DiagnosticsSchema,
    LimitsSchema,
    ResourcesSchema,
    TrainingSchema,
)
from workers.trainer import TrainData

DATASET_ID = "ds_" + "f" * 32
#: Sizes that shape a model (and its cost) are drawn small, with the schema's extremes now and then:
#: an accepted spec must train in a second or two.
STRUCTURAL = ("units", "filters", "output_dim", "input_dim")
CLASSIFICATION_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "kl_divergence",
                         "binary_crossentropy", "hinge", "squared_hinge")


# --- one field ---------------------------------------------------------------------------------------


def _range(field: fields.Field) -> validate.Range | None:
    return next((v for v in field.validators if isinstance(v, validate.Range)), None)


def _choices(field: fields.Field) -> list[str]:
    return list(next(v for v in field.validators if isinstance(v, validate.OneOf)).choices)


def extreme_floats(bound: validate.Range | None, outside: bool = False) -> st.SearchStrategy[float]:
    """Floats at and next to each bound, tiny and huge magnitudes inside, and with `outside` just past them."""
    low = -3.4e38 if bound is None or bound.min is None else float(bound.min)
    high = 3.4e38 if bound is None or bound.max is None else float(bound.max)
    inside = [low, high, math.nextafter(low, math.inf), math.nextafter(high, -math.inf), (low + high) / 2,
              low + (high - low) * 1e-9, high - (high - low) * 1e-9, 5e-324, 1e-300, 1.17549435e-38, 1e-7,
              1.0, 0.99999999999, 1e30]
    inside = [x for x in inside if low <= x <= high
              and (bound is None or bound.min_inclusive or x != low)
              and (bound is None or bound.max_inclusive or x != high)]
    past = [math.nextafter(high, math.inf), high * 1.5 + 1, math.nextafter(low, -math.inf), -1.0, 1e300, 10**400]
    past = [x for x in past if not low <= x <= high]
    strategies = [st.sampled_from(inside), st.sampled_from(inside),
                  st.floats(low, high, allow_nan=False, allow_infinity=False,
                            exclude_min=bound is not None and not bound.min_inclusive,
                            exclude_max=bound is not None and not bound.max_inclusive)]
    if outside and past:
        strategies.append(st.sampled_from(past))
    return st.one_of(strategies)


def extreme_ints(low: int, high: int, *, small: int | None = None, outside: bool = False) -> st.SearchStrategy[int]:
    """Ints at the bounds, next to them, and in between; `small` keeps most draws below it; with `outside`,
    just past the bounds too."""
    edges = st.sampled_from(sorted({low, high, min(low + 1, high), max(high - 1, low)}))
    strategies = [edges, st.integers(low, high)]
    if small is not None:
        strategies += [st.integers(low, max(low, min(high, small)))] * 3
    if outside:
        strategies.append(st.sampled_from([low - 1, high + 1, 10**400]))
    return st.one_of(strategies)


def label_maps(context: dict[str, Any], *, most: int = MAX_LABELS) -> st.SearchStrategy[dict[str, Any]]:
    """Labels: keys drawn from the key pattern itself, values up to the length cap, maps from empty to the
    cap; with `outside`, a map one past the cap, or a key or value that breaks a rule."""
    keys = st.from_regex(KEY_RE, fullmatch=True).filter(lambda k: len(k) <= MAX_KEY_CHARS)
    values = st.one_of(st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=8),
                       st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=MAX_VALUE_CHARS,
                               max_size=MAX_VALUE_CHARS))
    maps = st.one_of(st.dictionaries(keys, values, max_size=4),
                     st.dictionaries(keys, values, min_size=most, max_size=most))
    if not context["outside"]:
        return maps
    bad = st.one_of(st.dictionaries(keys, values, min_size=most + 1, max_size=most + 1),
                    st.builds(lambda m, k, v: {**m, k: v}, maps,
                              st.sampled_from(["Upper", "-edge", "edge.", "sp ace", "a" * (MAX_KEY_CHARS + 1), ""]),
                              values),
                    st.builds(lambda m, k, v: {**m, k: v}, maps, keys,
                              st.sampled_from(["x" * (MAX_VALUE_CHARS + 1), "line\nbreak", 5, None, ["v"]])))
    return st.one_of(maps, bad)


def field_value(name: str, field: fields.Field, context: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value for one declared field; `context` says what the rest of the spec makes small or logged."""
    if isinstance(field, Labels):
        return label_maps(context)
    if isinstance(field, Tagged):
        return tagged(field.schemas, context)
    if isinstance(field, Object):
        return obj(type(field.schema), context)
    if isinstance(field, IntOrList):
        one = extreme_ints(field.low, field.high, small=3, outside=context["outside"])
        return st.one_of(one, st.lists(one, min_size=field.rank, max_size=field.rank))
    if isinstance(field, List):
        inner = field_value(name, field.inner, context)
        most = min(field.max_length, 4)
        return st.one_of(st.lists(inner, min_size=field.min_length, max_size=most),
                         st.lists(inner, min_size=field.max_length, max_size=field.max_length))
    if isinstance(field, Choice):
        return st.sampled_from(_choices(field))
    if isinstance(field, Str):  # callbacks' monitors: a key the job logs, or one it does not
        return st.sampled_from(context["monitors"])
    if isinstance(field, Bool):
        return st.booleans()
    if isinstance(field, Int):
        bound = _range(field)
        low = bound.min if bound is not None and bound.min is not None else 0
        high = bound.max if bound is not None and bound.max is not None else context["int_max"].get(name, 10**6)
        return extreme_ints(low, high, small=8 if name in STRUCTURAL else None, outside=context["outside"])
    if isinstance(field, FloatOrWord):  # optimizer.learning_rate: a number, or "auto" (the range test)
        return st.one_of(st.sampled_from(field.words), extreme_floats(_range(field), outside=context["outside"]))
    if isinstance(field, Float):
        return extreme_floats(_range(field), outside=context["outside"])
    raise TypeError(f"no strategy for {name}: {type(field).__name__}")


# --- objects -------------------------------------------------------------------------------------------


@st.composite
def obj(draw: st.DrawFn, schema_class: type[Schema], context: dict[str, Any], kind: str | None = None) -> dict:
    """An object of `schema_class`: required fields always, the others now and then, null where allowed."""
    out: dict[str, Any] = {} if kind is None else {"type": kind}
    for name, field in schema_class().fields.items():
        if name == "type" or (not field.required and not draw(st.booleans())):
            continue
        if field.allow_none and draw(st.integers(0, 4)) == 0:
            out[name] = None
            continue
        out[name] = draw(field_value(name, field, context))
    return out


@st.composite
def tagged(draw: st.DrawFn, schemas: dict[str, type[Schema]], context: dict[str, Any]) -> dict:
    kind = draw(st.sampled_from(sorted(schemas)))
    value = draw(obj(schemas[kind], context, kind))
    if kind == "piecewise_constant" and isinstance(value.get("boundaries"), list):
        # Strictly increasing, with one more value, as its own check wants (the list's items stay drawn).
        value["boundaries"] = sorted({b for b in value["boundaries"] if isinstance(b, int)}) or [1]
        values = value.get("values") or [0.01]
        value["values"] = (values * (len(value["boundaries"]) + 1))[: len(value["boundaries"]) + 1]
    return value


# --- a whole case --------------------------------------------------------------------------------------


@dataclass
class Case:
    raw: dict[str, Any]
    info: DatasetInfo
    data: TrainData

    def lookup(self, dataset_id: str) -> DatasetInfo | None:
        return self.info if dataset_id == self.info.id else None

    def __repr__(self) -> str:  # what a failing example shows: the spec to send and the data's shapes
        return (f"Case(raw={json.dumps(self.raw)}, x={self.data.x_train.dtype}{self.data.x_train.shape}, "
                f"y={self.data.y_train.dtype}{self.data.y_train.shape}, info={self.info})")


def _normalised(layer: dict) -> dict | None:
    try:
        return layer_field().deserialize(layer)
    except ValidationError:
        return None


def _fits(layers: list[dict], input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if not layers:
        return input_shape
    normalised = [_normalised(layer) for layer in layers]
    if any(layer is None for layer in normalised):
        return None
    try:
        return infer_shapes({"input_shape": list(input_shape), "layers": normalised})[-1].output_shape
    except SpecError:
        return None


@st.composite
def model_layers(draw: st.DrawFn, input_shape: tuple[int, ...], context: dict[str, Any]) -> list[dict]:
    """A stack of drawn layers that mostly connects: each is redrawn a few times until it fits."""
    layers: list[dict] = []
    for _ in range(draw(st.integers(0, 4))):
        candidate = None
        for _attempt in range(6):
            candidate = draw(tagged(LAYER_SCHEMAS, context))
            if _fits(layers + [candidate], input_shape) is not None:
                break
        layers.append(candidate)
    return layers


def _head(loss: str, n_classes: int, target: tuple[int, ...]) -> tuple[int, str]:
    if loss in ("sparse_categorical_crossentropy", "categorical_crossentropy", "kl_divergence"):
        return n_classes, "softmax"
    if loss == "binary_crossentropy":
        return 1, "sigmoid"
    if loss in ("hinge", "squared_hinge"):
        return 1, "tanh"
    return math.prod(target) or 1, "linear"


@st.composite
def cases(draw: st.DrawFn, max_samples: int = 24) -> Case:
    loss = draw(st.sampled_from(LOSSES + list(LOSS_ALIASES)))
    canonical = LOSS_ALIASES.get(loss, loss)
    rank = draw(st.integers(1, 3))
    input_shape = tuple(draw(st.integers(1, 6)) for _ in range(rank))
    n = draw(st.integers(8, max_samples))
    if canonical in CLASSIFICATION_LOSSES:
        n_classes = 2 if canonical in ("binary_crossentropy", "hinge", "squared_hinge") else draw(st.integers(2, 4))
        one_hot = canonical in ("categorical_crossentropy", "kl_divergence")
        task, target = "classification", ((n_classes,) if one_hot else ())
    elif draw(st.integers(0, 4)) == 4:  # a regression loss on class labels, one-hot or not
        n_classes, one_hot = draw(st.integers(2, 4)), draw(st.booleans())
        task, target = "classification", ((n_classes,) if one_hot else ())
    else:
        n_classes, one_hot, task = None, False, "regression"
        target = draw(st.sampled_from([(), (1,), (2,)]))

    # Most metrics suit the loss; the rest are whatever the allow-list holds.
    suitable = {"sparse_categorical_crossentropy": ["accuracy", "sparse_categorical_accuracy"]}.get(
        canonical, [m for m in METRICS if m != "sparse_categorical_accuracy"]
        if task == "classification" else ["mae", "mse", "rmse", "mape"])
    metrics = draw(st.lists(st.sampled_from(suitable if draw(st.integers(0, 4)) < 4 else METRICS), max_size=3,
                            unique=True))
    logged = ["loss", *metrics]
    context: dict[str, Any] = {
        # One case in five has values just past their bounds, to be refused; the others stay inside.
        "outside": draw(st.integers(0, 4)) == 4,
        "monitors": logged + [f"val_{key}" for key in logged] + ["val_auc", "lr"],
        # One epoch of a few batches: upper bounds the operator sets (SpecLimits) are drawn this small.
        "int_max": {"epochs": 1, "batch_size": n, "max_runtime_seconds": 3600},
    }

    layers = draw(model_layers(input_shape, context))
    shape = _fits(layers, input_shape)
    # Hypothesis favours the smallest draw (0) when it explores and shrinks, so 0 is the usual path.
    if shape is not None and len(shape) > 1 and draw(st.integers(0, 9)) < 9:
        layers.append({"type": "flatten"})
    units, activation = _head(canonical, n_classes or 2, target)
    head = draw(obj(LAYER_SCHEMAS["dense"], context, "dense"))
    head["units"] = units
    if draw(st.integers(0, 9)) < 9:  # mostly the activation the loss wants
        head["activation"] = activation
    layers.append(head)
    integer_inputs = bool(layers) and layers[0].get("type") == "embedding" and rank == 1

    raw: dict[str, Any] = {
        "dataset": {"id": DATASET_ID, **draw(obj(DatasetSchema, context))},
        "model": {"input_shape": list(input_shape), "layers": layers},
        "loss": loss,
        "metrics": metrics,
    }
    raw["dataset"]["id"] = DATASET_ID
    if task == "classification" and draw(st.integers(0, 4)) < 4:
        raw["dataset"].pop("normalize_targets", None)
    for key, schema_class, one_in in (("callbacks", CallbacksSchema, 2), ("training", TrainingSchema, 2),
                                      ("limits", LimitsSchema, 4), ("diagnostics", DiagnosticsSchema, 2),
                                      # Only the cpu class is served here: most gpus values are refused.
                                      ("resources", ResourcesSchema, 8)):
        if draw(st.integers(1, one_in)) == one_in:
            raw[key] = draw(obj(schema_class, context))
    if draw(st.integers(0, 3)) == 0:  # metadata the engine never reads: accepted or refused, never trained on
        raw["labels"] = draw(label_maps(context))
    raw.setdefault("training", {})["epochs"] = 1
    # Class weights need class labels: mostly left out of regression cases, and drawn into a quarter of the
    # classification ones (the training section alone would draw them into one in ten, often refused).
    if task != "classification" and draw(st.integers(0, 4)) < 4:
        raw["training"].pop("class_weight", None)
    elif task == "classification" and draw(st.integers(0, 3)) == 0:
        raw["training"]["class_weight"] = draw(field_value("class_weight", TrainingSchema().fields["class_weight"],
                                                           context))
    if draw(st.booleans()):
        raw["optimizer"] = draw(tagged(OPTIMIZER_SCHEMAS, context))
    if draw(st.booleans()):
        raw["schedule"] = draw(tagged(SCHEDULE_SCHEMAS, context))
    if isinstance(raw.get("callbacks"), dict) and raw["callbacks"].get("reduce_lr_on_plateau") and draw(st.booleans()):
        raw["schedule"] = {"type": "constant"}  # the only schedule it works with

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if integer_inputs:
        vocabulary = max(1, min(int(layers[0].get("input_dim") or 1), 8))
        x = rng.integers(0, vocabulary, size=(n, *input_shape))
    else:
        x = rng.normal(size=(n, *input_shape)).astype(np.float32) * draw(st.sampled_from([1.0, 1e-6, 1e6]))
    if task == "classification":
        labels = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, size=n - n_classes)])
        y = np.eye(n_classes, dtype=np.float32)[labels] if one_hot else labels
    else:
        y = rng.normal(size=(n, *target)).astype(np.float32) * draw(st.sampled_from([1.0, 1e4]))
    has_test = draw(st.booleans())
    data = TrainData(x, y, x_test=x[:4] if has_test else None, y_test=y[:4] if has_test else None)
    info = DatasetInfo(DATASET_ID, input_shape, task, n_classes, False, has_test, target, n, 4 if has_test else 0)
    return Case(raw, info, data)
