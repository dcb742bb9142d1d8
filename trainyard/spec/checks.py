"""Cross-field checks on a spec that passed the schema, and the defaults that depend on them.

Each check returns a list of `{"field", "message"}` errors rather than raising, so one response can
tell the client everything that is wrong with a spec at once.
"""
from __future__ import annotations

import math

from trainyard.spec.catalog import BUILTIN_DATASETS, BUILTIN_ID_RE, DatasetInfo, DatasetLookup
from trainyard.spec.cost import check_cost
from trainyard.spec.errors import SpecError, error
from trainyard.spec.hints import did_you_mean
from trainyard.spec.layers import LayerShape, infer_shapes
from trainyard.resources import ANY, gpus_of, resource_class
from trainyard.spec.limits import SpecLimits
from trainyard.names import (
    CLASSIFICATION_LOSSES,
    CLASSIFICATION_METRICS,
    monitor_mode,
)

Errors = list[dict[str, str]]

#: Validation split given to data sets without a validation part when the spec leaves it out.
DEFAULT_VALIDATION_SPLIT = 0.2
_CALLBACKS_WITH_MONITOR = ("checkpoint", "early_stopping", "reduce_lr_on_plateau")
_SPARSE_METRICS = ("accuracy", "sparse_categorical_accuracy")


def resolve_dataset(dataset_id: str, datasets: DatasetLookup | None) -> DatasetInfo | None:
    if BUILTIN_ID_RE.match(dataset_id):
        return BUILTIN_DATASETS.get(dataset_id)
    return datasets(dataset_id) if datasets is not None else None


def unknown_dataset(dataset_id: str) -> dict[str, str]:
    if BUILTIN_ID_RE.match(dataset_id):
        allowed = ", ".join(BUILTIN_DATASETS)
        hint = did_you_mean(dataset_id, BUILTIN_DATASETS)
        return error("dataset.id", f"Unknown built-in data set {dataset_id}; allowed: {allowed}.{hint}")
    return error("dataset.id", f"No data set {dataset_id} is available to this account.")


def has_validation_data(spec: dict, info: DatasetInfo | None) -> bool:
    return bool(info and info.has_validation) or spec["dataset"]["validation_split"] > 0


def steps_per_epoch(spec: dict, info: DatasetInfo) -> int:
    """Batches per epoch, as the trainer will run them (the last batch may be partial)."""
    samples = info.train_samples
    if not info.has_validation:
        samples = samples * (1 - spec["dataset"]["validation_split"])
    return max(1, math.ceil(samples / spec["training"]["batch_size"]))


def final_activation(layers: list[dict]) -> tuple[int | None, str]:
    """Index and name of the activation that produces the model's outputs ("linear" if none)."""
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if layer["type"] == "bidirectional":
            return index, layer["layer"]["activation"]
        if "activation" in layer:
            return index, layer["activation"]
    return None, "linear"


# --- individual checks -----------------------------------------------------------------------------


def resolve_validation_split(spec: dict, info: DatasetInfo | None) -> Errors:
    dataset = spec["dataset"]
    split = dataset["validation_split"]
    if info is not None and info.has_validation:
        if split:
            return [error(
                "dataset.validation_split",
                f"{info.id} has its own validation part; leave validation_split out or set it to 0.",
            )]
        dataset["validation_split"] = 0.0
        return []
    if split is None:
        split = dataset["validation_split"] = DEFAULT_VALIDATION_SPLIT
    if info is not None and split > 0:
        held_out = info.train_samples * split
        if held_out < 1 or info.train_samples - held_out < 1:
            return [error(
                "dataset.validation_split",
                f"{info.id} has {info.train_samples} training samples; a split of {split} leaves "
                "an empty training or validation set.",
            )]
    return []


def check_dataset_options(spec: dict, info: DatasetInfo) -> Errors:
    errors: Errors = []
    if tuple(spec["model"]["input_shape"]) != tuple(info.input_shape):
        errors.append(error(
            "model.input_shape",
            f"Must equal the input shape of {info.id}, {list(info.input_shape)}; "
            f"got {spec['model']['input_shape']}.",
        ))
    if spec["dataset"]["normalize_targets"] != "none" and info.task != "regression":
        errors.append(error(
            "dataset.normalize_targets",
            f"Only regression data sets can normalise targets; {info.id} holds class labels.",
        ))
    return errors


def check_limits(spec: dict, limits: SpecLimits) -> Errors:
    errors: Errors = []
    training = spec["training"]
    if training["epochs"] > limits.max_epochs:
        errors.append(error("training.epochs", f"Must be at most {limits.max_epochs}."))
    if training["batch_size"] > limits.max_batch_size:
        errors.append(error("training.batch_size", f"Must be at most {limits.max_batch_size}."))
    runtime = spec["limits"]["max_runtime_seconds"]
    if runtime is not None and runtime > limits.max_runtime_seconds:
        errors.append(error(
            "limits.max_runtime_seconds", f"Must be at most {limits.max_runtime_seconds}."
        ))
    return errors


def check_resources(spec: dict, limits: SpecLimits) -> Errors:
    gpus = spec["resources"]["gpus"]
    cls = resource_class(gpus)
    if cls == ANY or cls in limits.resource_classes:
        return []
    served = ", ".join(f"{gpus_of(c)} ({c})" for c in limits.resource_classes)
    return [error("resources.gpus", f"No worker here serves {gpus} GPU(s) ({cls}); the configured classes "
                                    f"take gpus: {served}, or leave resources out to run anywhere.")]


def check_model(spec: dict, limits: SpecLimits) -> tuple[list[LayerShape] | None, Errors]:
    try:
        shapes = infer_shapes(spec["model"])
    except SpecError as exc:
        return None, exc.errors
    params = sum(s.params for s in shapes)
    if params > limits.max_params:
        return shapes, [error(
            "model", f"The model has {params:,} parameters; at most {limits.max_params:,} are allowed."
        )]
    return shapes, check_cost(
        shapes, spec["model"]["layers"], spec["training"]["batch_size"],
        max_step_flops=limits.max_step_flops, max_step_activations=limits.max_step_activations,
        max_recurrent_steps=limits.max_recurrent_steps, max_init_flops=limits.max_init_flops,
    )


def check_loss(spec: dict, info: DatasetInfo | None, shapes: list[LayerShape]) -> Errors:
    """Loss against the final activation, the output shape and the data set's targets."""
    loss = spec["loss"]
    index, activation = final_activation(spec["model"]["layers"])
    where = f"model.layers[{index}]" if index is not None else "the model"
    output = shapes[-1].output_shape
    errs: Errors = []

    def fail(message: str) -> Errors:
        errs.append(error("loss", message))
        return errs

    if info is not None and info.task == "regression" and loss in CLASSIFICATION_LOSSES:
        return fail(
            f"{loss} needs class labels, but {info.id} is a regression data set; use a regression "
            "loss such as mean_squared_error."
        )
    if loss in ("sparse_categorical_crossentropy", "categorical_crossentropy") and activation != "softmax":
        fail(
            f"{loss} needs a final softmax activation; {where} applies {activation}."
            + (" For one sigmoid output use binary_crossentropy." if activation == "sigmoid" else "")
        )
    if loss == "binary_crossentropy" and activation != "sigmoid":
        fail(
            f"binary_crossentropy needs a final sigmoid activation; {where} applies {activation}."
            + (" For softmax over classes use sparse_categorical_crossentropy."
               if activation == "softmax" else "")
        )

    scalar_targets = info is None or info.target_shape in ((), (1,))
    n_classes = info.n_classes if info is not None and info.task == "classification" else None

    if loss == "sparse_categorical_crossentropy":
        if not scalar_targets:
            return fail(
                f"sparse_categorical_crossentropy needs integer class labels; {info.id} has targets "
                f"of shape {info.target_shape}: use categorical_crossentropy."
            )
        if n_classes is not None and output != (n_classes,):
            fail(
                f"sparse_categorical_crossentropy on {info.id} needs a final output of shape "
                f"({n_classes},), one unit per class; the model outputs {output}."
            )
    elif loss == "categorical_crossentropy":
        if info is not None and scalar_targets:
            return fail(
                f"categorical_crossentropy needs one-hot targets; {info.id} has integer class "
                "labels: use sparse_categorical_crossentropy."
            )
        if info is not None and output != tuple(info.target_shape):
            fail(
                f"The model outputs {output}; {info.id}'s targets have shape {info.target_shape}."
            )
    elif loss in ("binary_crossentropy", "hinge", "squared_hinge"):
        if scalar_targets:
            if n_classes is not None and n_classes != 2:
                return fail(
                    f"{loss} needs 2 classes; {info.id} has {n_classes}: use "
                    "sparse_categorical_crossentropy with a final softmax."
                )
            if output != (1,):
                fail(f"{loss} needs a final output of 1 unit; the model outputs {output}.")
        elif output != tuple(info.target_shape):
            fail(f"The model outputs {output}; {info.id}'s targets have shape {info.target_shape}.")
    elif info is not None:
        want = (1,) if scalar_targets else tuple(info.target_shape)
        if output != want:
            fail(
                f"{loss} compares outputs with targets one to one; {info.id}'s targets need an "
                f"output of shape {want}, the model outputs {output}."
            )
    return errs


def check_class_weight(spec: dict, shapes: list[LayerShape] | None) -> Errors:
    """`training.class_weight` weighs each row by its one class: class labels, one class per row."""
    if not spec["training"]["class_weight"]:
        return []
    loss = spec["loss"]
    if loss not in CLASSIFICATION_LOSSES:
        return [error("training.class_weight",
                      f"class_weight weighs rows by their class, but {loss} does not take class labels; "
                      "leave it out (it needs sparse_categorical_crossentropy, categorical_crossentropy, "
                      "binary_crossentropy, hinge or squared_hinge).")]
    output = shapes[-1].output_shape if shapes else None
    # Sparse labels are one class a row, one-hot rows too (Keras takes their argmax); a sigmoid per
    # output unit is one label per unit.
    if loss in ("binary_crossentropy", "hinge", "squared_hinge") and output is not None and tuple(output) != (1,):
        return [error("training.class_weight",
                      f"class_weight needs one class per row; with {loss} on {tuple(output)} outputs each row "
                      "has several labels. Leave it out.")]
    return []


def check_metrics(spec: dict, info: DatasetInfo | None) -> Errors:
    errors: Errors = []
    loss = spec["loss"]
    for i, name in enumerate(spec["metrics"]):
        field = f"metrics[{i}]"
        if info is not None and info.task == "regression" and name in CLASSIFICATION_METRICS:
            errors.append(error(
                field,
                f"{name} scores class predictions, but {info.id} is a regression data set; "
                "allowed: mae, mse, rmse, mape.",
            ))
        elif loss == "sparse_categorical_crossentropy" and name not in _SPARSE_METRICS:
            errors.append(error(
                field,
                f"With sparse_categorical_crossentropy the targets are class indices, not shaped "
                f"like the outputs, so {name} cannot score them; allowed: accuracy, "
                "sparse_categorical_accuracy.",
            ))
        elif name == "sparse_categorical_accuracy" and loss != "sparse_categorical_crossentropy":
            errors.append(error(
                field,
                "sparse_categorical_accuracy needs integer class targets, i.e. the "
                "sparse_categorical_crossentropy loss; use accuracy.",
            ))
    return errors


def resolve_monitors(spec: dict, has_val: bool) -> Errors:
    """Default every monitor, check the job will log it, and resolve mode "auto"."""
    metrics = spec["metrics"]
    logged = ["loss", *metrics]
    if has_val:
        logged += [f"val_{key}" for key in logged]
    errors: Errors = []
    for name in _CALLBACKS_WITH_MONITOR:
        callback = spec["callbacks"][name]
        if callback is None:
            continue
        if callback["monitor"] is None:
            callback["monitor"] = "val_loss" if has_val else "loss"
        monitor = callback["monitor"]
        if monitor not in logged:
            base = monitor[4:] if monitor.startswith("val_") else monitor
            if monitor.startswith("val_") and not has_val:
                why = "the job has no validation data (set dataset.validation_split above 0)"
            elif base != "loss" and base not in metrics:
                why = f"{base} is not in metrics"
            else:
                why = "it is not a logged key"
            errors.append(error(
                f"callbacks.{name}.monitor",
                f"This job never logs {monitor}: {why}.{did_you_mean(monitor, logged)} Allowed: {', '.join(logged)}.",
            ))
        if callback["mode"] == "auto":
            callback["mode"] = monitor_mode(monitor)
    return errors


def check_schedule(spec: dict, info: DatasetInfo | None) -> Errors:
    errors: Errors = []
    schedule = spec["schedule"]
    if spec["callbacks"]["reduce_lr_on_plateau"] is not None and schedule["type"] != "constant":
        errors.append(error(
            "callbacks.reduce_lr_on_plateau",
            f"reduce_lr_on_plateau only works with the constant schedule; schedule is "
            f"{schedule['type']}.",
        ))
    if schedule["type"] == "cosine_decay" and schedule["warmup_steps"] > 0:
        epochs = spec["training"]["epochs"]
        if schedule["unit"] == "epoch":
            run, unit = epochs, "epochs"
        elif info is not None:
            run, unit = epochs * steps_per_epoch(spec, info), "steps"
        else:
            return errors  # steps per epoch unknown
        if schedule["warmup_steps"] > run:
            errors.append(error(
                "schedule.warmup_steps",
                f"The warm-up ({schedule['warmup_steps']} {unit}) is longer than the run "
                f"({run} {unit}).",
            ))
    return errors


def run_checks(spec: dict, info: DatasetInfo | None, limits: SpecLimits) -> Errors:
    """All cross-field checks; fills the defaults that depend on them into `spec` in place."""
    errors = resolve_validation_split(spec, info)
    if info is not None:
        errors += check_dataset_options(spec, info)
    errors += check_limits(spec, limits)
    errors += check_resources(spec, limits)
    shapes, model_errors = check_model(spec, limits)
    errors += model_errors
    if shapes is not None:
        errors += check_loss(spec, info, shapes)
    errors += check_class_weight(spec, shapes)
    errors += check_metrics(spec, info)
    errors += resolve_monitors(spec, has_validation_data(spec, info))
    errors += check_schedule(spec, info)
    return errors
