"""`validate_spec`: raw JSON body in, normalised job spec out (or `SpecError`)."""
from __future__ import annotations

from marshmallow import ValidationError

from trainyard.spec.catalog import DatasetLookup
from trainyard.spec.checks import resolve_dataset, run_checks, unknown_dataset
from trainyard.spec.errors import ROOT, SpecError, error
from trainyard.spec.fields import refuse_many_unknown_keys
from trainyard.spec.hints import Hinter, hint_budget
from trainyard.spec.limits import SpecLimits
from trainyard.spec.schema import JobPatchSchema, JobSpecSchema

# Built once: a schema's construction deep-copies every declared field; `load` keeps no state on it.
_SCHEMA = JobSpecSchema()
_HINTER = Hinter(JobSpecSchema)
_PATCH_SCHEMA = JobPatchSchema()
_PATCH_HINTER = Hinter(JobPatchSchema)

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


def _precheck_size(raw: dict, limits: SpecLimits) -> list[dict[str, str]]:
    # Counted before marshmallow walks the list, so a huge layer list is refused cheaply.
    model = raw.get("model")
    layers = model.get("layers") if isinstance(model, dict) else None
    if isinstance(layers, list) and len(layers) > limits.max_layers:
        return [error(
            "model.layers", f"At most {limits.max_layers} layers are allowed; got {len(layers)}."
        )]
    return []


def validate_spec(
    raw: object,
    *,
    datasets: DatasetLookup | None = None,
    limits: SpecLimits | None = None,
) -> dict:
    """Validate a v1 job spec and return it normalised: a plain JSON-able dict, every default filled.

    `datasets` resolves an uploaded data set id to its `DatasetInfo` (None when unknown or not the
    caller's); built-in ids always resolve from `BUILTIN_DATASETS`. Raises `SpecError` listing every
    problem found, each with its field path.
    """
    with hint_budget():  # one for the whole spec (or the whole sweep, whose budget this joins)
        return _validate(raw, datasets, limits or SpecLimits())


def _validate(raw: object, datasets: DatasetLookup | None, limits: SpecLimits) -> dict:
    if not isinstance(raw, dict):
        kind = _JSON_TYPES.get(type(raw), type(raw).__name__)
        raise SpecError([error(ROOT, f"The job spec must be a JSON object; got {kind}.")])
    size_errors = _precheck_size(raw, limits)
    if size_errors:
        raise SpecError(size_errors)
    try:
        refuse_many_unknown_keys(raw, _SCHEMA)
        spec = _SCHEMA.load(raw)
    except ValidationError as exc:
        raise SpecError(_HINTER.flatten(exc.messages, raw, _SCHEMA)) from None

    errors = []
    info = resolve_dataset(spec["dataset"]["id"], datasets)
    if info is None:
        errors.append(unknown_dataset(spec["dataset"]["id"]))
    errors += run_checks(spec, info, limits)
    if errors:
        raise SpecError(errors)
    return spec


def validate_job_patch(raw: object) -> dict:
    """The body of `PATCH /v1/jobs/{id}` checked: `name` and/or `labels` (a merge patch, null values
    remove keys), only the keys sent. Raises `SpecError` with field paths; a spec field that cannot change
    after submission is named as such."""
    if not isinstance(raw, dict):
        kind = _JSON_TYPES.get(type(raw), type(raw).__name__)
        raise SpecError([error(ROOT, f"The body must be a JSON object; got {kind}.")])
    with hint_budget():
        try:
            refuse_many_unknown_keys(raw, _PATCH_SCHEMA)
            return _PATCH_SCHEMA.load(raw)
        except ValidationError as exc:
            errors = _PATCH_HINTER.flatten(exc.messages, raw, _PATCH_SCHEMA)
    # A spec field sent here is not a typo: say that it is fixed once the job exists.
    fixed = (f"Cannot change after submission; only {' and '.join(_PATCH_SCHEMA.load_fields)} can. Submit a new "
             "job to train with another spec.")
    frozen = set(_SCHEMA.load_fields) - set(_PATCH_SCHEMA.load_fields)
    raise SpecError([error(e["field"], fixed) if e["field"] in frozen else e for e in errors])
