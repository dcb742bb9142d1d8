"""Diagnosis rules: measured numbers in, findings (evidence + advice + a spec change) out.

Pure Python and NumPy, no Keras: every rule is a function of plain dicts, so it can be tested with
hand-made numbers. A finding is a dict::

    {"id", "code", "severity": "info" | "warning" | "error", "message", "evidence": {...},
     "layer": str | None, "epoch": int | None, "suggested_change": dict | None,
     "suggested_change_basis": str | None}

``id`` is ``"<code>:<layer or ->"``: one finding per job, code and layer (what the reporter upserts on),
so it is unique in a job and the same in every epoch. ``suggested_change`` is a partial job spec to merge
into the submitted one (``model.layers`` is a whole list, as the spec replaces it whole);
``suggested_change_basis`` names the evidence it comes from (``BASES``). ``reconcile`` makes the job's
findings one coherent recommendation. An epoch record, as the measuring callback builds it::

    {"epoch": 1, "learning_rate": 0.01, "loss": 0.7, "val_loss": 0.8 | None,
     "variables": [{"layer", "name", "grad_norm", "weight_norm", "update_norm", "update_ratio",
                    "zero_grad_fraction"}]}
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from trainyard.names import CLASSIFICATION_LOSSES, REGRESSION_LOSSES, canonical_loss

SEVERITIES = ("info", "warning", "error")
CODES = (
    "lr_too_small", "weights_not_changing", "diverged", "exploding_gradients", "vanishing_gradients",
    "zero_gradients", "unscaled_inputs", "unscaled_targets", "loss_activation_mismatch", "plateau",
    "overfitting", "data_leakage", "constant_feature", "non_finite_feature", "class_imbalance",
    "label_out_of_range",
)

# Largest per-epoch update-to-weight ratio (over all variables) below which the weights count as not
# moving. Healthy runs move some variable by 1e-4..1e-1 of its norm per epoch.
NOT_CHANGING_RATIO = 1e-5
# ... and a per-element (RMS) change below this is no change in float32 either: it keeps variables that
# start at zero (biases), whose ratio is 1 after any step, from counting as moving.
NOT_CHANGING_RMS = 1e-7
# A learning rate below this is too small for any optimizer the spec offers.
SMALL_LEARNING_RATE = 1e-5
DEFAULT_LEARNING_RATES = {"sgd": 0.01, "adagrad": 0.01}  # the rest: 0.001
# Loss growth (latest / lowest so far) that counts as divergence.
DIVERGENCE_FACTOR = 100.0
EXPLODING_GRAD_NORM = 1e3
# First-layer RMS gradient / last-layer RMS gradient below which gradients vanish towards the input.
VANISHING_RATIO = 1e-3
VANISHING_MIN_LAYERS = 3
# Mean or spread of a feature (or target) beyond this means the data is not scaled.
UNSCALED_LIMIT = 10.0
PLATEAU_EPOCHS = 10
PLATEAU_MIN_RELATIVE_IMPROVEMENT = 1e-3
OVERFITTING_EPOCHS = 3
OVERFITTING_RISE = 0.10

_SATURATING = ("sigmoid", "tanh", "hard_sigmoid", "softsign")

# Error-severity findings that can stop a job (diagnostics.on_error "stop"): their codes are job error
# codes too (trainyard/job_errors.py; tests/trainer/test_diagnostics_act.py holds them in it).
# zero_gradients is an error only in preflight, which ends the job with no_gradients.
STOPPING_CODES = ("lr_too_small", "diverged", "loss_activation_mismatch", "non_finite_feature")
# What a suggested change is based on.
BASES = ("update_ratio", "divergence", "gradient_norm", "data_scale", "loss_activation", "gradient_flow",
         "progress", "validation_loss", "optimizer_default", "class_counts", "target_range")
# A suggested learning rate aims at this update-to-weight ratio per step for the fastest-moving kernel
# (the usual rule of thumb: about 1e-3 in a healthy run).
TARGET_UPDATE_RATIO = 1e-3
# An epoch's measured update ratio below this is float32 rounding, not movement: the rate is then
# estimated from the gradient instead.
MEASURABLE_UPDATE_RATIO = 1e-6
# optimizer.learning_rate's allowed range (trainyard/spec/bounds.py LEARNING_RATE).
LEARNING_RATE_RANGE = (1e-10, 10.0)
_ADAPTIVE = ("adam", "adamw", "adamax", "nadam", "rmsprop", "adagrad", "adadelta", "adafactor", "lion",
             "ftrl", "lamb")
# Fields whose suggestion would lower the learning rate (see ``reconcile``).
_RATE_FIELDS = ("optimizer", "schedule", "callbacks")


def finding_id(code: str, layer: str | None) -> str:
    return f"{code}:{layer or '-'}"


def finding(code: str, severity: str, message: str, evidence: dict[str, Any], *, layer: str | None = None,
            epoch: int | None = None, suggested_change: dict | None = None,
            basis: str | None = None) -> dict[str, Any]:
    if code not in CODES:
        raise ValueError(f"unknown finding code {code!r}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if suggested_change is not None and basis not in BASES:
        raise ValueError(f"a suggested change needs a basis from {BASES}, got {basis!r}")
    return {"id": finding_id(code, layer), "code": code, "severity": severity, "message": message,
            "evidence": _jsonable(evidence), "layer": layer, "epoch": epoch,
            "suggested_change": suggested_change,
            "suggested_change_basis": basis if suggested_change is not None else None}


def _jsonable(value: Any) -> Any:
    # Evidence goes to a JSON column: NaN/inf become strings a person can still read.
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _g(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


@dataclass
class RunContext:
    """What the rules need to know about the job besides the measurements."""

    spec: dict
    # Keras layer names in model order -> index into spec["model"]["layers"] (layers are built as
    # "<type>_<position>", see workers.trainer.layers.build_model).
    variables: list[dict] = field(default_factory=list)  # [{"layer", "name", "shape"}]
    # Optimizer steps in an epoch: an epoch's update ratio over this is the per-step ratio.
    steps_per_epoch: int | None = None

    @property
    def stops_on_error(self) -> bool:
        return ((self.spec.get("diagnostics") or {}).get("on_error") or "stop") == "stop"

    @property
    def optimizer(self) -> dict:
        return self.spec.get("optimizer") or {}

    @property
    def layers(self) -> list[dict]:
        return (self.spec.get("model") or {}).get("layers") or []

    def layer_index(self, layer_name: str) -> int | None:
        head, _, position = layer_name.rpartition("_")
        if not head or not position.isdigit():
            return None
        index = int(position) - 1
        return index if 0 <= index < len(self.layers) else None

    def where(self, layer_name: str) -> str:
        index = self.layer_index(layer_name)
        return f"model.layers[{index}] ({layer_name})" if index is not None else layer_name

    def with_layers(self, changes: dict[int, dict]) -> dict:
        """A suggested change that replaces ``model.layers`` with these fields changed."""
        layers = copy.deepcopy(self.layers)
        for index, fields in changes.items():
            layers[index].update(fields)
        return {"model": {"layers": layers}}

    def default_learning_rate(self) -> float:
        return DEFAULT_LEARNING_RATES.get(self.optimizer.get("type", ""), 0.001)


# --- rules over epoch records ------------------------------------------------------------------------


def _moved(v: dict, size: int) -> bool:
    update = v.get("update_norm") or 0.0
    if update / math.sqrt(max(size, 1)) < NOT_CHANGING_RMS:
        return False
    ratio = v.get("update_ratio")
    return ratio is None or ratio >= NOT_CHANGING_RATIO


def _largest_move(record: dict) -> float:
    ratios = [v["update_ratio"] for v in record["variables"] if v.get("update_ratio") is not None]
    return max(ratios, default=0.0)


def suggested_learning_rate(record: dict, ctx: RunContext) -> tuple[float, dict] | None:
    """The rate that would bring the fastest-moving kernel's update-to-weight ratio per step to about
    ``TARGET_UPDATE_RATIO``, and its evidence; None without a kernel to measure.

    The ratio scales about linearly with the rate (exactly so while the rate is too small to change the
    gradient within an epoch), so ``new = lr * target / ratio``. The per-step ratio is the epoch's
    measured update ratio over its steps; when the epoch's update was lost to float32 rounding (the
    ratio is below ``MEASURABLE_UPDATE_RATIO``) it is estimated from one step of the optimizer: SGD moves
    ``lr * |g| / (1 - momentum)``, adaptive optimizers about ``lr`` per element (``lr * sqrt(size)``).
    Clipped to the spec's allowed range.
    """
    lr = record.get("learning_rate")
    if not lr or lr <= 0:
        return None
    shapes = {(v["layer"], v["name"]): v.get("shape") for v in ctx.variables}
    steps = max(int(ctx.steps_per_epoch or 1), 1)
    kind = ctx.optimizer.get("type", "")
    momentum = float(ctx.optimizer.get("momentum") or 0.0) if kind == "sgd" else 0.0
    best: tuple[float, dict] | None = None
    for v in record.get("variables") or []:
        shape = shapes.get((v["layer"], v["name"]))
        weight = v.get("weight_norm")
        if not shape or len(shape) < 2 or not weight or not math.isfinite(weight):
            continue  # biases start at zero: their ratio says nothing about the rate
        measured = v.get("update_ratio")
        if measured is not None and math.isfinite(measured) and measured >= MEASURABLE_UPDATE_RATIO:
            ratio, source = measured / steps, "measured_update"
        elif kind in _ADAPTIVE:
            ratio, source = lr * math.sqrt(_size(shape)) / weight, "adaptive_step_estimate"
        elif v.get("grad_norm") and math.isfinite(v["grad_norm"]):
            ratio, source = lr * v["grad_norm"] / (weight * max(1.0 - momentum, 1e-3)), "gradient_step_estimate"
        else:
            continue
        if ratio > 0 and (best is None or ratio > best[1]["update_ratio_per_step"]):
            best = (ratio, {"variable": f"{v['layer']}/{v['name']}", "update_ratio_per_step": ratio,
                            "source": source, "steps_per_epoch": steps})
    if best is None:
        return None
    ratio, evidence = best
    low, high = LEARNING_RATE_RANGE
    rate = float(f"{min(max(lr * TARGET_UPDATE_RATIO / ratio, low), high):.2g}")
    return rate, {**evidence, "learning_rate": lr, "target_update_ratio": TARGET_UPDATE_RATIO,
                  "suggested_learning_rate": rate}


def _rate_change(record: dict, ctx: RunContext) -> tuple[dict, str, dict]:
    """A learning-rate change from the update ratios, or the optimizer's default rate without a kernel."""
    suggested = suggested_learning_rate(record, ctx)
    if suggested is None:
        rate = ctx.default_learning_rate()
        return {"optimizer": {"learning_rate": rate}}, "optimizer_default", {"suggested_learning_rate": rate}
    rate, evidence = suggested
    return {"optimizer": {"learning_rate": rate}}, "update_ratio", evidence


def check_weights_not_changing(epochs: list[dict], ctx: RunContext) -> list[dict]:
    """Every variable's update far below what training needs (relative to the weight and per
    element), in every epoch so far."""
    if not epochs or not epochs[-1]["variables"]:
        return []
    sizes = {(v["layer"], v["name"]): _size(v.get("shape")) for v in ctx.variables}
    if any(_moved(v, sizes.get((v["layer"], v["name"]), 1)) for r in epochs for v in r["variables"]):
        return []
    last = epochs[-1]
    if all(v.get("zero_grad_fraction") == 1.0 for v in last["variables"]):
        return []  # no gradient at all: zero_gradients says why
    lr = last.get("learning_rate")
    evidence = {"largest_update_ratio": _largest_move(last), "learning_rate": lr,
                "largest_update_norm": max((v.get("update_norm") or 0.0) for v in last["variables"]),
                "threshold_ratio": NOT_CHANGING_RATIO, "threshold_rms": NOT_CHANGING_RMS,
                "epochs": [r["epoch"] for r in epochs]}
    change, basis, rate_evidence = _rate_change(last, ctx)
    rate = change["optimizer"]["learning_rate"]
    evidence["rate"] = rate_evidence
    if lr is not None and lr < SMALL_LEARNING_RATE:
        return [finding(
            "lr_too_small", "error",
            f"The learning rate {_g(lr)} is too small to train: after {len(epochs)} epoch(s) the weights "
            f"have practically not changed (largest update {_g(evidence['largest_update_norm'])}). Set "
            f"optimizer.learning_rate to about {rate:g}"
            + (" (the rate that moves the weights by about 1e-3 of their size per step)."
               if basis == "update_ratio" else " (the optimizer's default)."),
            evidence, epoch=last["epoch"], suggested_change=change, basis=basis)]
    if lr is None or (basis == "update_ratio" and rate <= lr):
        change = None  # the ratios do not call for a larger rate: the gradient findings say why
    advice = (f"the steps are too small. Raise optimizer.learning_rate to about {rate:g}, or look at the "
              "gradient findings." if change else
              "yet steps of this rate should move them, so a larger rate is not the answer: look at the "
              "gradient findings and the data.")
    return [finding(
        "weights_not_changing", "warning",
        f"The weights have practically not changed in {len(epochs)} epoch(s) (largest update "
        f"{_g(evidence['largest_update_norm'])}, learning rate {_g(lr)}): " + advice,
        evidence, epoch=last["epoch"], suggested_change=change, basis=basis if change else None)]


def _divergence_change(ctx: RunContext, lr: float | None) -> dict:
    """A tenth of the rate that diverged, never above the optimizer's default rate (a rate of 1e6 that
    diverged says nothing in favour of 1e5), and gradient clipping."""
    base = lr if lr else ctx.optimizer.get("learning_rate") or ctx.default_learning_rate()
    rate = float(f"{max(min(base / 10, ctx.default_learning_rate()), LEARNING_RATE_RANGE[0]):.2g}")
    return {"optimizer": {"learning_rate": rate, "clipnorm": 1.0, "clipvalue": None}}


def check_diverged(epochs: list[dict], ctx: RunContext, nan: dict | None = None) -> list[dict]:
    """The loss became NaN/inf (``nan``: {"epoch", "learning_rate"}) or grew by orders of magnitude."""
    if nan is not None:
        lr = nan.get("learning_rate")
        change = _divergence_change(ctx, lr)
        where = "in the preflight steps" if nan.get("preflight") else f"in epoch {nan.get('epoch')}"
        return [finding(
            "diverged", "error",
            f"The loss became NaN or infinite {where} at learning rate {_g(lr)}; training diverged. "
            f"Lower optimizer.learning_rate (try {_g(change['optimizer']['learning_rate'])}) and clip "
            "gradients with optimizer.clipnorm, and scale the data (dataset.normalize: standardize).",
            {**nan, "losses": [r.get("loss") for r in epochs]},
            epoch=nan.get("epoch"), suggested_change=change, basis="divergence")]
    finite = [(r["epoch"], r["loss"], r.get("learning_rate")) for r in epochs
              if r.get("loss") is not None and math.isfinite(r["loss"])]
    if len(finite) < 2:
        return []
    best_epoch, best, _ = min(finite, key=lambda t: t[1])
    epoch, last, lr = finite[-1]
    if best <= 0 or epoch == best_epoch or last < DIVERGENCE_FACTOR * best:
        return []
    return [finding(
        "diverged", "error",
        f"The loss grew from {_g(best)} (epoch {best_epoch}) to {_g(last)} (epoch {epoch}) at learning "
        f"rate {_g(lr)}: training diverged. Lower optimizer.learning_rate or set optimizer.clipnorm.",
        {"best_epoch": best_epoch, "best_loss": best, "loss": last, "learning_rate": lr,
         "factor": last / best},
        epoch=epoch, suggested_change=_divergence_change(ctx, lr), basis="divergence")]


def check_exploding_gradients(epochs: list[dict], ctx: RunContext) -> list[dict]:
    if not epochs:
        return []
    last = epochs[-1]
    big = [v for v in last["variables"]
           if v.get("grad_norm") is not None
           and (not math.isfinite(v["grad_norm"]) or v["grad_norm"] > EXPLODING_GRAD_NORM)]
    if not big:
        return []
    worst = max(big, key=lambda v: v["grad_norm"])
    if ctx.optimizer.get("clipnorm") or ctx.optimizer.get("clipvalue"):
        change = {"optimizer": {"learning_rate": (last.get("learning_rate") or
                                                  ctx.default_learning_rate()) / 10}}
    else:
        change = {"optimizer": {"clipnorm": 1.0, "clipvalue": None}}
    return [finding(
        "exploding_gradients", "warning",
        f"Gradient norms reach {_g(worst['grad_norm'])} ({worst['layer']}/{worst['name']}); steps that "
        "large throw the weights around. Clip gradients (optimizer.clipnorm: 1.0), lower the learning "
        "rate, or scale inputs and targets.",
        {"threshold": EXPLODING_GRAD_NORM,
         "grad_norms": {f"{v['layer']}/{v['name']}": v["grad_norm"] for v in big}},
        layer=worst["layer"], epoch=last["epoch"], suggested_change=change, basis="gradient_norm")]


def _size(shape: list[int] | None) -> int:
    return int(math.prod(shape)) if shape else 1


def check_vanishing_gradients(epochs: list[dict], ctx: RunContext) -> list[dict]:
    """Per-layer RMS gradient of the main weight shrinking layer by layer towards the input."""
    if not epochs:
        return []
    shapes = {(v["layer"], v["name"]): v.get("shape") for v in ctx.variables}
    per_layer: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for v in epochs[-1]["variables"]:
        shape = shapes.get((v["layer"], v["name"]))
        if shape is None or len(shape) < 2 or v.get("grad_norm") is None:
            continue  # biases and scales say little about depth
        size = _size(shape)
        if size > sizes.get(v["layer"], 0):  # the layer's biggest weight matrix
            sizes[v["layer"]] = size
            per_layer[v["layer"]] = v["grad_norm"] / math.sqrt(size)
    names = list(per_layer)
    rms = [per_layer[n] for n in names]
    if len(rms) < VANISHING_MIN_LAYERS or not all(math.isfinite(r) for r in rms) or rms[-1] <= 0:
        return []
    if rms[0] >= VANISHING_RATIO * rms[-1]:
        return []
    rising = sum(1 for a, b in zip(rms, rms[1:]) if a <= b)
    if rising < 0.75 * (len(rms) - 1):
        return []
    changes = {}
    for name in names[:-1]:
        index = ctx.layer_index(name)
        if index is not None and ctx.layers[index].get("activation") in _SATURATING:
            changes[index] = {"activation": "relu", "kernel_initializer": "he_uniform"}
    return [finding(
        "vanishing_gradients", "warning",
        f"Gradients shrink layer by layer towards the input: the RMS gradient of {ctx.where(names[0])} is "
        f"{_g(rms[0] / rms[-1])} times that of {ctx.where(names[-1])}, so the first layers barely learn. "
        "Use relu-family activations with he_uniform initialisation in hidden layers, or add "
        "batch_normalization.",
        {"rms_grad_by_layer": dict(zip(names, rms)), "ratio_first_to_last": rms[0] / rms[-1],
         "threshold": VANISHING_RATIO},
        layer=names[0], epoch=epochs[-1]["epoch"],
        suggested_change=ctx.with_layers(changes) if changes else None, basis="gradient_flow")]


def zero_gradient_findings(record: dict, ctx: RunContext, *, severity: str = "warning") -> list[dict]:
    """One finding per layer with a variable whose gradient is exactly zero everywhere."""
    by_layer: dict[str, list[dict]] = {}
    for v in record["variables"]:
        by_layer.setdefault(v["layer"], []).append(v)
    out = []
    for layer, variables in by_layer.items():
        dead = [v for v in variables if v.get("zero_grad_fraction") == 1.0]
        if not dead:
            continue
        index = ctx.layer_index(layer)
        cfg = ctx.layers[index] if index is not None else {}
        names = [v["name"] for v in dead]
        zero_init = [key for key in ("kernel_initializer", "bias_initializer") if cfg.get(key) == "zeros"
                     and (key == "kernel_initializer" or len(dead) == len(variables))]
        change = None
        if cfg.get("kernel_initializer") == "zeros":
            init = "he_uniform" if cfg.get("activation") in ("relu", "relu6", "elu", "leaky_relu") \
                else "glorot_uniform"
            why = (f"it is initialised with zeros, so every unit computes the same thing and "
                   f"{'relu passes no gradient at 0' if cfg.get('activation') == 'relu' else 'no signal flows'}."
                   f" Use kernel_initializer: {init}.")
            change = ctx.with_layers({index: {"kernel_initializer": init}})
        elif len(dead) < len(variables):
            why = ("its inputs are all zero, so look at the layer before it (dead relu units or zero "
                   "initialisation upstream).")
        elif cfg.get("activation") in ("relu", "relu6"):
            why = ("its relu units are dead (they output 0 for every probe sample). Lower the learning "
                   "rate or use leaky_relu.")
            change = ctx.with_layers({index: {"activation": "leaky_relu"}})
        else:
            why = "nothing in the loss depends on it; check the layers after it and the final activation."
        out.append(finding(
            "zero_gradients", severity,
            f"{ctx.where(layer)} gets an all-zero gradient for {', '.join(names)}, so it cannot learn: "
            + why,
            {"variables": {v["name"]: {"grad_norm": v.get("grad_norm"),
                                       "zero_grad_fraction": v.get("zero_grad_fraction")} for v in dead},
             "zero_initializers": zero_init},
            layer=layer, epoch=record.get("epoch"), suggested_change=change, basis="gradient_flow"))
    return out


def check_zero_gradients(epochs: list[dict], ctx: RunContext) -> list[dict]:
    return zero_gradient_findings(epochs[-1], ctx) if epochs else []


def _monitored(epochs: list[dict]) -> tuple[str, list[tuple[int, float]]]:
    key = "val_loss" if any(r.get("val_loss") is not None for r in epochs) else "loss"
    return key, [(r["epoch"], r[key]) for r in epochs
                 if r.get(key) is not None and math.isfinite(r[key])]


def check_plateau(epochs: list[dict], ctx: RunContext) -> list[dict]:
    """No improvement for PLATEAU_EPOCHS epochs with a constant rate and no plateau callback."""
    schedule = (ctx.spec.get("schedule") or {}).get("type", "constant")
    if schedule != "constant" or ((ctx.spec.get("callbacks") or {}).get("reduce_lr_on_plateau")):
        return []
    key, values = _monitored(epochs)
    if len(values) <= PLATEAU_EPOCHS:
        return []
    best_epoch, best = values[0]
    for epoch, value in values[1:]:
        if value < best - PLATEAU_MIN_RELATIVE_IMPROVEMENT * abs(best):
            best_epoch, best = epoch, value
    since = values[-1][0] - best_epoch
    if since < PLATEAU_EPOCHS:
        return []
    return [finding(
        "plateau", "info",
        f"{key} has not improved for {since} epochs (best {_g(best)} at epoch {best_epoch}) at a "
        "constant learning rate. Add callbacks.reduce_lr_on_plateau or a decaying schedule.",
        {"monitor": key, "best_epoch": best_epoch, "best": best, "epochs_without_improvement": since},
        epoch=values[-1][0],
        suggested_change={"callbacks": {"reduce_lr_on_plateau": {"monitor": key, "factor": 0.5,
                                                                 "patience": 5}}}, basis="progress")]


def check_overfitting(epochs: list[dict], ctx: RunContext) -> list[dict]:
    """Validation loss rising while the training loss keeps falling."""
    rows = [r for r in epochs if r.get("val_loss") is not None and r.get("loss") is not None
            and math.isfinite(r["val_loss"]) and math.isfinite(r["loss"])]
    if len(rows) < OVERFITTING_EPOCHS + 1:
        return []
    best = min(rows, key=lambda r: r["val_loss"])
    last = rows[-1]
    if last["epoch"] - best["epoch"] < OVERFITTING_EPOCHS:
        return []
    if last["val_loss"] <= best["val_loss"] * (1 + OVERFITTING_RISE) or last["loss"] >= best["loss"]:
        return []
    change = None
    if not (ctx.spec.get("callbacks") or {}).get("early_stopping"):
        change = {"callbacks": {"early_stopping": {"monitor": "val_loss", "patience": OVERFITTING_EPOCHS,
                                                   "restore_best_weights": True}}}
    return [finding(
        "overfitting", "warning",
        f"The model is overfitting: val_loss rose from {_g(best['val_loss'])} (epoch {best['epoch']}) to "
        f"{_g(last['val_loss'])} while the training loss fell from {_g(best['loss'])} to "
        f"{_g(last['loss'])}. Stop early (callbacks.early_stopping with restore_best_weights), add "
        "dropout or regularisation, or get more data. The best checkpoint is kept either way.",
        {"best_epoch": best["epoch"], "best_val_loss": best["val_loss"], "val_loss": last["val_loss"],
         "loss_at_best": best["loss"], "loss": last["loss"]},
        epoch=last["epoch"], suggested_change=change, basis="validation_loss")]


EPOCH_RULES = (check_weights_not_changing, check_diverged, check_exploding_gradients,
               check_vanishing_gradients, check_zero_gradients, check_plateau, check_overfitting)


def analyze_epochs(epochs: list[dict], ctx: RunContext, *, nan: dict | None = None) -> list[dict]:
    """Every epoch-based finding for the records so far (``nan``: the loss became non-finite)."""
    out: list[dict] = []
    for rule in EPOCH_RULES:
        if rule is check_diverged:
            out += check_diverged(epochs, ctx, nan)
        else:
            out += rule(epochs, ctx)
    return out


# --- rules over the data and the spec (once, before training) -----------------------------------------


def check_unscaled(stats: dict | None, ctx: RunContext) -> list[dict]:
    """``stats``: {"inputs": {...} | None, "targets": {...} | None} from ``data_stats.scale_stats``."""
    if not stats:
        return []
    out = []
    dataset = ctx.spec.get("dataset") or {}
    inputs = stats.get("inputs")
    if inputs and (dataset.get("normalize") or "none") == "none" and _unscaled(inputs):
        out.append(finding(
            "unscaled_inputs", "warning",
            f"The training inputs are not scaled (feature means up to {_g(inputs['max_abs_mean'])}, "
            f"spreads up to {_g(inputs['max_std'])}); networks train best on inputs near zero mean and unit "
            "variance. Set dataset.normalize: standardize.",
            {**inputs, "limit": UNSCALED_LIMIT},
            suggested_change={"dataset": {"normalize": "standardize"}}, basis="data_scale"))
    targets = stats.get("targets")
    if (targets and canonical_loss(ctx.spec.get("loss")) in REGRESSION_LOSSES
            and (dataset.get("normalize_targets") or "none") == "none" and _unscaled(targets)):
        out.append(finding(
            "unscaled_targets", "warning",
            f"The regression targets are not scaled (means up to {_g(targets['max_abs_mean'])}, spreads up "
            f"to {_g(targets['max_std'])}), so the loss and its gradients are huge at the start. Set "
            "dataset.normalize_targets: standardize (predictions are scaled back with the statistics "
            "returned in model.normalization).",
            {**targets, "limit": UNSCALED_LIMIT},
            suggested_change={"dataset": {"normalize_targets": "standardize"}}, basis="data_scale"))
    return out


def _unscaled(s: dict) -> bool:
    return s["max_abs_mean"] > UNSCALED_LIMIT or s["max_std"] > UNSCALED_LIMIT


def _final_activation(layers: list[dict]) -> tuple[int | None, str]:
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        if layer.get("type") == "bidirectional":
            return index, (layer.get("layer") or {}).get("activation") or "tanh"
        if "activation" in layer:
            return index, layer.get("activation") or "linear"
    return None, "linear"


def check_loss_activation(ctx: RunContext, output_units: int | None, targets: dict | None) -> list[dict]:
    """Loss/final-activation pairs the spec validator lets through but that train badly or not at all."""
    loss = ctx.spec.get("loss")
    kind = canonical_loss(loss)  # the catalogue lists full names; tests and old specs may use an alias
    index, activation = _final_activation(ctx.layers)
    where = f"model.layers[{index}]" if index is not None else "the model"

    def mismatch(severity: str, message: str, new_activation: str | None = None,
                 change: dict | None = None) -> list[dict]:
        if change is None and new_activation and index is not None:
            change = ctx.with_layers({index: {"activation": new_activation}})
        return [finding("loss_activation_mismatch", severity, message,
                        {"loss": loss, "final_activation": activation, "output_units": output_units,
                         "targets": targets},
                        layer=f"{ctx.layers[index]['type']}_{index + 1}" if index is not None else None,
                        suggested_change=change, basis="loss_activation")]

    if activation == "softmax" and output_units == 1:
        return mismatch("error", f"{where} applies softmax to a single unit, which always outputs 1.0: "
                        "nothing can be learned. Use sigmoid for one output (binary_crossentropy) or "
                        "linear for regression.", "sigmoid" if kind in CLASSIFICATION_LOSSES else "linear")
    if activation in ("softmax", "log_softmax") and kind in REGRESSION_LOSSES:
        return mismatch("warning", f"{where} applies {activation} but the loss is {loss}: outputs that "
                        "sum to one cannot match regression targets. For regression use a linear final "
                        "activation; for classes use a crossentropy loss.", "linear")
    # Regression targets beyond a bounded final activation's range (sigmoid, tanh, relu, ...) are
    # label_out_of_range (data_checks.py), judged on the targets as trained (after normalize_targets).
    if loss in ("hinge", "squared_hinge") and activation in ("sigmoid", "softmax", "relu"):
        return mismatch("warning", f"{loss} wants margins in [-1, 1] but {where} applies {activation}, "
                        "which cannot go below 0. Use tanh (or linear) as the final activation.", "tanh")
    if loss == "poisson" and activation in ("linear", "tanh", "leaky_relu", "elu", "selu"):
        return mismatch("warning", f"poisson needs positive predictions but {where} applies "
                        f"{activation}, which can go negative and make the loss NaN. Use softplus or "
                        "exponential.", "softplus")
    if loss == "kl_divergence" and activation != "softmax":
        return mismatch("warning", f"kl_divergence compares probability distributions but {where} "
                        f"applies {activation}. Use softmax as the final activation.", "softmax")
    return []


def analyze_setup(ctx: RunContext, stats: dict | None, output_units: int | None) -> list[dict]:
    """Findings known before the first step: data scale and loss/activation fit."""
    return check_unscaled(stats, ctx) + check_loss_activation(
        ctx, output_units, (stats or {}).get("targets"))


def merge(*groups: list[dict]) -> list[dict]:
    """One finding per id (code and layer): later groups replace earlier ones (they have newer evidence)."""
    out: dict[str, dict] = {}
    for group in groups:
        for item in group:
            out[item.get("id") or finding_id(item["code"], item.get("layer"))] = item
    return list(out.values())


# --- one coherent recommendation ----------------------------------------------------------------------

# Findings that say the steps are too small: while one holds, nothing may suggest a smaller rate.
_RATE_TOO_SMALL = ("lr_too_small", "weights_not_changing")


def _lowers_rate(field: str, value: Any, lr: float | None) -> bool:
    if field == "optimizer.learning_rate":
        return lr is None or (isinstance(value, (int, float)) and value < lr)
    if field == "callbacks.reduce_lr_on_plateau":
        return value is not None
    return field == "schedule" or field.startswith("schedule.")


def _fields(change: dict, prefix: str = "") -> dict[str, Any]:
    """A suggested change as {dotted field: value}; ``model.layers`` and the callbacks' own settings are
    one field each (a callback and a layer list are suggested whole)."""
    out: dict[str, Any] = {}
    for key, value in change.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in ("model.layers",) and not path.startswith("callbacks."):
            out.update(_fields(value, path + "."))
        else:
            out[path] = value
    return out


def _unflatten(fields: dict[str, Any]) -> dict:
    out: dict = {}
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _rank(item: dict) -> tuple:
    return (-SEVERITIES.index(item["severity"]), CODES.index(item["code"]), item.get("layer") or "")


def reconcile(findings: list[dict], ctx: RunContext) -> list[dict]:
    """The job's findings as one coherent recommendation (a new list; the items are copies):

    - while ``lr_too_small`` or ``weights_not_changing`` holds, no finding suggests lowering the rate
      (a smaller ``optimizer.learning_rate``, ``callbacks.reduce_lr_on_plateau``, a decaying schedule);
      ``plateau`` then points at the rate finding instead;
    - each field gets at most one suggested value in the job: the most severe finding (then ``CODES``
      order, then layer) keeps it, later ones drop it (and their suggestion if nothing is left).
    """
    items = [dict(f) for f in findings]
    rate_small = next((f for f in sorted(items, key=_rank) if f["code"] in _RATE_TOO_SMALL), None)
    lr = ctx.optimizer.get("learning_rate")
    taken: dict[str, Any] = {}
    for item in sorted(items, key=_rank):
        change = item.get("suggested_change")
        if rate_small is not None and item is not rate_small and item["code"] == "plateau":
            item["message"] = (item["message"].split(" at a constant learning rate")[0]
                               + f". The rate is too small to train ({rate_small['code']}): raise it as that "
                               "finding suggests rather than lowering it on a plateau.")
        if not change:
            continue
        fields = _fields(change)
        keep = {}
        for path, value in fields.items():
            if rate_small is not None and item is not rate_small and _lowers_rate(path, value, lr):
                continue
            if path in taken and taken[path] != value:
                continue
            keep[path] = value
        for path, value in keep.items():
            taken.setdefault(path, value)
        if keep != fields:
            item["suggested_change"] = _unflatten(keep) if keep else None
            item["suggested_change_basis"] = item.get("suggested_change_basis") if keep else None
    return sorted(items, key=_rank)
