"""openapi.yaml against the code: a valid document, the same routes as the app, and real responses.

Every request below goes through the Flask test client against real Postgres (and, for the training
part, a real Celery worker), and both the request and the response are validated with openapi-core, so
a shape that drifts from the document fails here.
"""
from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import (
    WerkzeugOpenAPIRequest,
    WerkzeugOpenAPIResponse,
)
from openapi_core.deserializing.media_types.util import json_loads, plain_loads
from openapi_core.exceptions import OpenAPIError
from openapi_core.templating.paths.exceptions import PathError
from openapi_spec_validator import validate
from werkzeug.datastructures import FileStorage
from werkzeug.test import EnvironBuilder, encode_multipart

from tests.conftest import tiny_spec, wait_until

ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "openapi.yaml"
# The document's server; requests are built against it so openapi-core matches them to the document.
BASE_URL = "http://127.0.0.1:8000"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
FINAL = ("succeeded", "failed", "cancelled")


def octets_loads(value: bytes, **parameters: str) -> str:
    return value.decode("latin-1")


def load_document() -> dict[str, Any]:
    with open(SPEC_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    return load_openapi()


def load_openapi() -> OpenAPI:
    """The document as openapi-core validates requests and responses against it (the `Api` of other modules).

    openapi-core deserialises only a fixed list of media types; it is taught the ones this API adds. The YAML
    document is checked as what it parses to, as schemathesis does (tests/service/test_fuzz_api.py).
    The upload's file part is `type: string, format: binary` (what client generators turn into a file);
    openapi-core reads such a part as bytes, which its OAS 3.1 validator does not count as a string, so
    it is read as a string of octets instead (latin-1 maps each byte to one character).
    """
    config = Config(extra_media_type_deserializers={
        "application/problem+json": json_loads,
        "application/merge-patch+json": json_loads,
        "application/yaml": yaml.safe_load,
        "text/html": plain_loads,
        "application/octet-stream": octets_loads,
    })
    return OpenAPI.from_file_path(str(SPEC_PATH), config=config)


class Api:
    """Send a request with the test client and validate it and its response against the document."""

    def __init__(self, client: Any, openapi: OpenAPI, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.openapi = openapi
        self.headers = headers or {}
        self.seen: set[tuple[str, int]] = set()

    def __call__(
        self,
        method: str,
        path: str,
        status: int,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        request_valid: bool = True,
    ) -> Any:
        if json_body is not None:
            data, content_type = json.dumps(json_body).encode(), "application/json"
        all_headers = {**(self.headers if auth else {}), **(headers or {})}
        kwargs: dict[str, Any] = dict(method=method, base_url=BASE_URL, headers=all_headers, query_string=query,
                                      data=data, content_type=content_type)
        resp = self.client.open(path, **kwargs)
        resp.get_data()  # buffer streamed bodies (the checkpoint download) once
        assert resp.status_code == status, (method, path, resp.status_code, resp.get_data(as_text=True)[:2000])

        # The request the app consumed cannot be read again: rebuild an identical one for validation.
        request = WerkzeugOpenAPIRequest(EnvironBuilder(path=path, **kwargs).get_request())
        if request_valid:
            self.openapi.validate_request(request)
        else:
            # The document must say this request is wrong (and still know the operation).
            with pytest.raises(OpenAPIError) as info:
                self.openapi.validate_request(request)
            assert not isinstance(info.value, PathError), info.value
        self.openapi.validate_response(request, WerkzeugOpenAPIResponse(resp))
        if resp.status_code >= 400 and path != "/readyz":  # /readyz answers 503 with its usual body
            assert resp.mimetype == "application/problem+json"
        return resp

    def ended_job(self, job_id: str, timeout: float = 300) -> dict[str, Any]:
        """The job once it has ended (each poll validated like any call)."""
        wait_until(lambda: self("GET", f"/v1/jobs/{job_id}", 200).get_json()["status"] in FINAL, timeout, 0.5,
                   f"job {job_id} to end")
        return self("GET", f"/v1/jobs/{job_id}", 200).get_json()


@pytest.fixture()
def api(client: Any, openapi: OpenAPI, auth: dict[str, str]) -> Api:
    return Api(client, openapi, auth)


def tiny_npz() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    np.savez(buf, x_train=rng.normal(size=(40, 3)).astype(np.float32), y_train=rng.integers(0, 2, size=40),
             x_test=rng.normal(size=(10, 3)).astype(np.float32), y_test=rng.integers(0, 2, size=10))
    return buf.getvalue()


def multipart(fields: dict[str, Any]) -> tuple[bytes, str]:
    """Encode form fields (a `(bytes, filename)` value is a file) once, so the same bytes can be sent and
    validated."""
    values = {k: FileStorage(io.BytesIO(v[0]), filename=v[1], content_type="application/octet-stream")
              if isinstance(v, tuple) else v for k, v in fields.items()}
    boundary, body = encode_multipart(values)
    return body, f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------------------------------
# the document itself


def test_document_is_valid_openapi() -> None:
    validate(load_document())


def test_every_route_is_documented_and_every_documented_operation_exists(app: Any) -> None:
    in_app: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # files (the dashboard's scripts and styles), not API operations
        path = re.sub(r"<(?:[a-z_]+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method.lower() in ("head", "options"):
                continue  # added to every GET route by werkzeug/Flask
            in_app.add((path, method.lower()))
    documented = {
        (path, method)
        for path, item in load_document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert in_app - documented == set(), "routes missing from openapi.yaml"
    assert documented - in_app == set(), "openapi.yaml documents routes the app does not have"


def test_operation_ids_are_unique_and_errors_are_problems() -> None:
    doc = load_document()
    ids = [op["operationId"] for item in doc["paths"].values() for m, op in item.items() if m in HTTP_METHODS]
    assert len(ids) == len(set(ids))
    responses = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for code, response in op["responses"].items():
                if "$ref" in response:
                    response = responses[response["$ref"].rsplit("/", 1)[1]]
                if int(code) >= 400 and path != "/readyz":
                    assert list(response["content"]) == ["application/problem+json"], (path, method, code)


def schemas_in(node: Any, path: str = "#", is_schema: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in the document, with its path: `components.schemas`, any `schema`, and the
    subschemas inside them. Examples and defaults are data and are not entered."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from schemas_in(item, f"{path}/{i}", is_schema)
        return
    if not isinstance(node, dict):
        return
    if is_schema:
        yield path, node
    for key, value in node.items():
        here = f"{path}/{key}"
        if key in ("example", "examples", "default", "const", "enum"):
            continue
        if is_schema and key in ("properties", "patternProperties", "$defs"):
            for name, sub in value.items():
                yield from schemas_in(sub, f"{here}/{name}", True)
        elif (is_schema and key in ("items", "additionalProperties", "not", "propertyNames", "oneOf", "anyOf",
                                    "allOf", "prefixItems")) or key == "schema":
            yield from schemas_in(value, here, True)
        elif path == "#/components" and key == "schemas":
            for name, sub in value.items():
                yield from schemas_in(sub, f"{here}/{name}", True)
        elif not is_schema:
            yield from schemas_in(value, here, False)


def test_document_uses_only_shapes_client_generators_keep() -> None:
    """The plain OpenAPI 3.1 that client generators (openapi-python-client, openapi-generator, ...) turn into
    working models; each rule is a shape a generator dropped or mangled (tests/client/test_generated_client.py
    generates a client and uses it)."""
    doc = load_document()
    schemas = doc["components"]["schemas"]
    problems = []
    for path, schema in schemas_in(doc):
        types = schema.get("type")
        types = set(types) if isinstance(types, list) else {types} - {None}
        if "allOf" in schema or "unevaluatedProperties" in schema:
            problems.append(f"{path}: allOf/unevaluatedProperties; write the whole object out")
        if "const" in schema and not types:
            problems.append(f"{path}: a const needs its type beside it")
        if "enum" in schema and None in schema["enum"]:
            problems.append(f"{path}: a null in an enum; use oneOf [the enum, type: 'null']")
        if "array" in types and "items" not in schema:
            problems.append(f"{path}: an array needs items ({{}} for any JSON value)")
        if "properties" in schema and "object" not in types:
            problems.append(f"{path}: properties need type: object")
        ref = schema.get("$ref")
        if ref is not None and not re.fullmatch(r"#/components/schemas/\w+", ref):
            problems.append(f"{path}: $ref {ref} is not a whole schema of components.schemas")
        if "discriminator" in schema:
            prop, mapping = schema["discriminator"]["propertyName"], schema["discriminator"]["mapping"]
            if {m["$ref"] for m in schema["oneOf"]} != set(mapping.values()):
                problems.append(f"{path}: the discriminator maps other schemas than oneOf lists")
            for value, target in mapping.items():
                selector = schemas[target.rsplit("/", 1)[1]]["properties"][prop]
                if value not in [selector.get("const"), *selector.get("enum", [])]:
                    problems.append(f"{path}: {target}'s {prop} does not take {value!r}")
    assert not problems, "\n".join(problems)
    # The stored spec is the submitted one with every default filled in: the same properties, more required.
    assert schemas["NormalizedJobSpec"]["properties"] == schemas["JobSpec"]["properties"]
    assert set(schemas["JobSpec"]["required"]) < set(schemas["NormalizedJobSpec"]["required"])


# --------------------------------------------------------------------------------------------------
# the job-spec schema against trainyard.spec, without HTTP


def spec_validator() -> Any:
    from openapi_schema_validator import OAS31Validator

    return OAS31Validator({"$ref": "#/components/schemas/JobSpec", "components": load_document()["components"]})


IMAGE_ID = "ds_" + "1" * 32
SEQUENCE_ID = "ds_" + "2" * 32


def fake_datasets(dataset_id: str) -> Any:
    from trainyard.spec import DatasetInfo

    infos = {
        IMAGE_ID: DatasetInfo(IMAGE_ID, (8, 8, 1), "classification", 3, True, True, (), 300),
        SEQUENCE_ID: DatasetInfo(SEQUENCE_ID, (20,), "classification", 2, False, False, (), 300),
    }
    return infos.get(dataset_id)


# Specs the server accepts, covering every layer type, optimizer, schedule and callback.
ACCEPTED_SPECS: list[dict[str, Any]] = [
    tiny_spec(),
    {
        "version": 1, "name": "image (cnn)",
        "dataset": {"id": IMAGE_ID, "normalize": "minmax"},
        "model": {"input_shape": [8, 8, 1], "layers": [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "swish",
             "kernel_regularizer": {"l2": 0.01}, "bias_regularizer": None, "kernel_initializer": "he_normal"},
            {"type": "batch_normalization", "momentum": 0.9},
            {"type": "max_pooling2d", "pool_size": [2, 2]},
            {"type": "conv2d", "filters": 8, "kernel_size": [3, 3], "strides": 1, "dilation_rate": [1, 1],
             "use_bias": False},
            {"type": "average_pooling2d", "pool_size": 2, "strides": None, "padding": "valid"},
            {"type": "flatten"},
            {"type": "layer_normalization", "epsilon": 0.01},
            {"type": "dropout", "rate": 0.1},
            {"type": "dense", "units": 3},
            {"type": "activation", "activation": "softmax"},
        ]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy", "sparse_categorical_accuracy"],
        "optimizer": {"type": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "clipnorm": 1.0},
        "schedule": {"type": "piecewise_constant", "unit": "step", "boundaries": [100, 200],
                     "values": [0.1, 0.01, 0.001]},
        "callbacks": {"early_stopping": {"monitor": "val_accuracy", "patience": 3, "min_delta": 0.001,
                                         "restore_best_weights": True, "start_from_epoch": 1},
                      "checkpoint": {"monitor": "val_accuracy", "mode": "max"}},
        "training": {"epochs": 5, "batch_size": 64, "shuffle": False, "seed": None, "mixed_precision": False,
                     "jit_compile": False, "class_weight": "balanced"},
        "limits": {"max_runtime_seconds": 600},
        "diagnostics": {"enabled": False, "preflight": False},
    },
    {
        "dataset": {"id": SEQUENCE_ID, "validation_split": 0.1},
        "model": {"input_shape": [20], "layers": [
            {"type": "embedding", "input_dim": 100, "output_dim": 8, "embeddings_regularizer": {"l1": 0.001}},
            {"type": "conv1d", "filters": 8, "kernel_size": 3, "padding": "same", "dilation_rate": 2},
            {"type": "max_pooling1d", "pool_size": 2},
            {"type": "bidirectional", "merge_mode": "sum",
             "layer": {"type": "lstm", "units": 4, "return_sequences": True, "dropout": 0.1}},
            {"type": "gru", "units": 4, "return_sequences": True, "recurrent_initializer": "orthogonal"},
            {"type": "simple_rnn", "units": 4, "return_sequences": True, "activation": None},
            {"type": "global_average_pooling1d"},
            {"type": "dense", "units": 1, "activation": "sigmoid"},
        ]},
        "loss": "binary_crossentropy",
        "metrics": ["auc", "precision", "recall", "binary_accuracy"],
        "optimizer": {"type": "adamw", "weight_decay": 0.01, "amsgrad": True, "clipvalue": 0.5},
        "schedule": {"type": "cosine_decay", "decay_steps": 10, "alpha": 0.1, "warmup_steps": 2,
                     "warmup_target": 0.01},
    },
    {
        "dataset": {"id": "builtin:digits"},
        "model": {"input_shape": [64], "layers": [
            {"type": "reshape", "target_shape": [8, 8, -1]},
            {"type": "conv2d", "filters": 4, "kernel_size": 3},
            {"type": "global_average_pooling2d"},
            {"type": "dense", "units": 10, "activation": "softmax"},
        ]},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"type": "rmsprop", "rho": 0.8, "centered": True},
        "callbacks": {"reduce_lr_on_plateau": {"factor": 0.5, "patience": 2, "cooldown": 1, "min_lr": 1e-5},
                      "early_stopping": None},
    },
    {
        "dataset": {"id": "builtin:diabetes", "normalize": "standardize", "normalize_targets": "standardize",
                    "validation_split": 0.25},
        "model": {"input_shape": [10], "layers": [{"type": "dense", "units": 16, "activation": "gelu"},
                                                  {"type": "dense", "units": 1}]},
        "loss": "mse", "metrics": ["mae", "rmse", "mse", "mape"],
        "optimizer": {"type": "nadam", "beta_1": 0.8},
        "schedule": {"type": "exponential_decay", "decay_steps": 5, "decay_rate": 0.9, "staircase": True},
    },
    *[
        {"dataset": {"id": "builtin:wine"},
         "model": {"input_shape": [13], "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
         "loss": "sparse_categorical_crossentropy", "optimizer": optimizer, "schedule": schedule}
        for optimizer, schedule in [
            ({"type": "adagrad", "initial_accumulator_value": 0.2}, {"type": "inverse_time_decay",
                                                                     "decay_steps": 3, "decay_rate": 0.5}),
            ({"type": "adam", "epsilon": 1e-6}, {"type": "polynomial_decay", "decay_steps": 4,
                                                 "end_learning_rate": 0.0, "power": 2.0, "cycle": True}),
            ({"type": "sgd"}, {"type": "constant"}),
            ({"type": "adam", "learning_rate": "auto"}, {"type": "cosine_decay", "decay_steps": 5}),
        ]
    ],
    {**tiny_spec(), "diagnostics": {"lr_range_test": True, "on_error": "continue"}},
]

ACCEPTED_SPECS.append(tiny_spec(name="labelled", labels={"team": "vision", "data.version": "2026-03", "empty": "",
                                                         "k" * 63: "v" * 256, **{f"n{i}": "x" for i in range(28)}}))

# Specs the schema layer of trainyard.spec rejects, which the document must reject too.
REJECTED_SPECS: list[dict[str, Any]] = [
    tiny_spec(labels={"Team": "vision"}),
    tiny_spec(labels={"team.": "vision"}),
    tiny_spec(labels={"k" * 64: "v"}),
    tiny_spec(labels={"team": "v" * 257}),
    tiny_spec(labels={"team": 1}),
    tiny_spec(labels={"team": None}),
    tiny_spec(labels={"team": "a\tb"}),
    tiny_spec(labels={f"k{i}": "v" for i in range(33)}),
    tiny_spec(labels=["team"]),
    tiny_spec(extra=True),
    tiny_spec(name="a/b"),
    tiny_spec(loss="cross_entropy"),
    tiny_spec(metrics=["accuracy", "accuracy"]),
    tiny_spec(optimizer={"type": "adam", "momentum": 0.9}),
    tiny_spec(optimizer={"type": "lbfgs"}),
    tiny_spec(optimizer={"type": "adam", "learning_rate": "automatic"}),
    tiny_spec(diagnostics={"lr_range_test": "yes"}),
    tiny_spec(schedule={"type": "cosine_decay"}),
    tiny_spec(training={"epochs": "10"}),
    tiny_spec(training={"epochs": 10_001}),
    tiny_spec(training={"class_weight": "inverse"}),
    tiny_spec(dataset={"id": "iris"}),
    tiny_spec(callbacks={"checkpoint": None}),
    tiny_spec(model={"input_shape": [4], "layers": []}),
    tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 3, "activation": "magic"}]}),
    tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": True}]}),
    tiny_spec(model={"input_shape": [4], "layers": [{"type": "conv2d", "filters": 2, "kernel_size": [3]}]}),
    tiny_spec(model={"input_shape": [4], "layers": [{"type": "dropout", "rate": 1.0}]}),
    tiny_spec(model={"input_shape": [4], "layers": [{"type": "bidirectional", "layer": {"type": "dense", "units": 2}}]}),
    tiny_spec(model={"input_shape": [4], "layers": [{"type": "transformer"}]}),
]


@pytest.mark.parametrize("raw", ACCEPTED_SPECS, ids=lambda s: str(s.get("name") or s["dataset"]["id"]))
def test_job_spec_schema_accepts_what_the_server_accepts(raw: dict[str, Any]) -> None:
    from trainyard.spec import validate_spec

    normalised = validate_spec(raw, datasets=fake_datasets)
    validator = spec_validator()
    assert not list(validator.iter_errors(raw)), list(validator.iter_errors(raw))[0].message
    errors = list(validator.iter_errors(normalised))
    assert not errors, errors[0].message
    normalised_schema = load_document()["components"]["schemas"]["NormalizedJobSpec"]["required"]
    assert sorted(normalised) == sorted(normalised_schema)


@pytest.mark.parametrize("raw", REJECTED_SPECS)
def test_job_spec_schema_rejects_what_the_server_rejects(raw: dict[str, Any]) -> None:
    from trainyard.spec import SpecError, validate_spec

    with pytest.raises(SpecError):
        validate_spec(raw, datasets=fake_datasets)
    assert not spec_validator().is_valid(raw)


# --------------------------------------------------------------------------------------------------
# health and auth


def test_health_and_document_routes(client: Any, openapi: OpenAPI) -> None:
    anon = Api(client, openapi)
    anon("GET", "/healthz", 200, auth=False)
    resp = client.get("/readyz")
    anon("GET", "/readyz", resp.status_code, auth=False)
    served = anon("GET", "/openapi.yaml", 200, auth=False)
    assert served.get_data() == SPEC_PATH.read_bytes()
    page = anon("GET", "/", 200, auth=False)
    assert b'<script type="module" src="/ui/app.js">' in page.get_data()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert client.get("/ui/app.js").status_code == 200  # assets need no token either


def test_unauthorized(api: Api) -> None:
    # No token: the request itself breaks the document's security requirement.
    resp = api("GET", "/v1/jobs", 401, auth=False, request_valid=False)
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="trainyard"'
    # A token the server does not know: a valid request, answered 401.
    resp = api("GET", "/v1/datasets", 401, auth=False, headers={"Authorization": "Bearer not-a-token"})
    assert "invalid_token" in resp.headers["WWW-Authenticate"]


# --------------------------------------------------------------------------------------------------
# jobs without a worker


def test_submit_and_read_jobs(api: Api, other_auth: dict[str, str]) -> None:
    spec = tiny_spec(training={"epochs": 500, "batch_size": 16, "seed": 1})
    resp = api("POST", "/v1/jobs", 201, json_body=spec)
    job = resp.get_json()
    assert resp.headers["Location"] == f"/v1/jobs/{job['id']}"

    # The document's own example is accepted by the server.
    example = load_document()["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    for ex in example["examples"].values():
        accepted = api("POST", "/v1/jobs", 201, json_body=ex["value"]).get_json()
        if accepted["status"] not in FINAL:  # nothing to learn from running them: cancel (202)
            api("POST", f"/v1/jobs/{accepted['id']}/cancel", 202)

    # Schema-valid but wrong for the data set (iris has 4 features): only the server can tell.
    api("POST", "/v1/jobs", 422, json_body=tiny_spec(model={"input_shape": [5], "layers": [
        {"type": "dense", "units": 3, "activation": "softmax"}]}))
    # Invalid per the document too.
    bad = tiny_spec()
    bad["model"]["layers"][0]["units"] = 0
    resp = api("POST", "/v1/jobs", 422, json_body=bad, request_valid=False)
    assert "model.layers[0].units" in {e["field"] for e in resp.get_json()["errors"]}
    api("POST", "/v1/jobs", 422, json_body=tiny_spec(surprise=1), request_valid=False)
    api("POST", "/v1/jobs", 400, data=b"{not json", content_type="application/json", request_valid=False)
    api("POST", "/v1/jobs", 415, data=b"x=1", content_type="application/x-www-form-urlencoded",
        request_valid=False)

    body = api("GET", "/v1/jobs", 200, query={"limit": 2}).get_json()
    assert len(body["jobs"]) == 2 and body["next_cursor"]
    api("GET", "/v1/jobs", 200, query={"limit": 2, "cursor": body["next_cursor"], "status": "queued"})
    api("GET", "/v1/jobs", 422, query={"limit": 0}, request_valid=False)
    api("GET", "/v1/jobs", 422, query={"status": "sleeping"}, request_valid=False)
    api("GET", "/v1/jobs", 422, query={"cursor": "garbage"})

    api("GET", f"/v1/jobs/{job['id']}", 200)
    etag = api("GET", f"/v1/jobs/{job['id']}", 200).headers["ETag"]
    # `*`: the job is queued, and its representation (its eta) may change by the second.
    patched = api("PATCH", f"/v1/jobs/{job['id']}", 200, json_body={"labels": {"team": "vision", "x": None},
                                                                     "name": "renamed"},
                  headers={"If-Match": "*"}).get_json()
    assert patched["labels"] == {"team": "vision"} and patched["name"] == "renamed"
    api("PATCH", f"/v1/jobs/{job['id']}", 412, json_body={"name": "again"}, headers={"If-Match": etag})
    api("PATCH", f"/v1/jobs/{job['id']}", 422, json_body={"loss": "mse"}, request_valid=False)
    api("PATCH", f"/v1/jobs/{job['id']}", 422, json_body={"labels": {"Team": "x"}}, request_valid=False)
    api("PATCH", f"/v1/jobs/{job['id']}", 200, data=b'{"labels": {"stage": "draft"}}',
        content_type="application/merge-patch+json")
    api("PATCH", f"/v1/jobs/{job['id']}", 400, data=b"{", content_type="application/json", request_valid=False)
    api("PATCH", f"/v1/jobs/{job['id']}", 404, json_body={"name": "x"}, headers=other_auth)
    listed = api("GET", "/v1/jobs", 200, query={"label": ["team:vision", "stage"], "name": "RENAMED",
                                                "sort": "-best_value", "limit": 1}).get_json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    api("GET", "/v1/jobs", 200, query={"sort": "best_value", "label": "team"})
    api("GET", "/v1/jobs", 422, query={"sort": "loss"}, request_valid=False)
    api("GET", "/v1/jobs", 422, query={"label": "Team:x"}, request_valid=False)
    api("GET", f"/v1/jobs/{job['id']}/metrics", 200, query={"after": 0})
    api("GET", f"/v1/jobs/{job['id']}/metrics", 422, query={"after": -1}, request_valid=False)
    api("GET", f"/v1/jobs/{job['id']}/checkpoints", 200)
    api("GET", f"/v1/jobs/{job['id']}/diagnostics", 200, query={"after": 0})
    api("GET", f"/v1/jobs/{job['id']}/diagnostics", 422, query={"after": -1}, request_valid=False)
    missing = "job_" + "0" * 32
    api("GET", f"/v1/jobs/{missing}/diagnostics", 404)
    api("GET", f"/v1/jobs/{missing}", 404)
    api("GET", f"/v1/jobs/{missing}/metrics", 404)
    api("GET", f"/v1/jobs/{missing}/checkpoints", 404)
    api("GET", f"/v1/jobs/{missing}/checkpoints/best", 404)
    api("POST", f"/v1/jobs/{missing}/cancel", 404)
    api("DELETE", f"/v1/jobs/{missing}", 404)
    # Another tenant's job answers like a missing one.
    api("GET", f"/v1/jobs/{job['id']}", 404, headers=other_auth)

    # Cancel (202), then wait for the job to end (at once when queued, at a batch boundary when running).
    status = api("GET", f"/v1/jobs/{job['id']}", 200).get_json()["status"]
    if status not in FINAL:
        api("DELETE", f"/v1/jobs/{job['id']}", 409)
        api("POST", f"/v1/jobs/{job['id']}/cancel", 202)
        wait_until(lambda: api("GET", f"/v1/jobs/{job['id']}", 200).get_json()["status"] in FINAL, 120, 0.5,
                   "the cancelled job to end")
    api("POST", f"/v1/jobs/{job['id']}/cancel", 409)
    api("DELETE", f"/v1/jobs/{job['id']}", 204)
    api("GET", f"/v1/jobs/{job['id']}", 404)


# --------------------------------------------------------------------------------------------------
# a job that really trains


def test_finished_job_metrics_and_checkpoints(api: Api, worker: Any) -> None:
    job = api("POST", "/v1/jobs", 201, json_body=tiny_spec()).get_json()
    url = f"/v1/jobs/{job['id']}"

    def ended() -> dict[str, Any] | None:
        body = api("GET", url, 200).get_json()
        return body if body["status"] in FINAL else None

    done = wait_until(ended, 300, 0.5, "the job to finish")
    assert done["status"] == "succeeded", done
    assert done["model"] is not None and done["best"] is not None

    metrics = api("GET", f"{url}/metrics", 200).get_json()["epochs"]
    assert [row["epoch"] for row in metrics] == [1, 2, 3]
    assert api("GET", f"{url}/metrics", 200, query={"after": 2}).get_json()["epochs"][0]["epoch"] == 3

    checkpoints = api("GET", f"{url}/checkpoints", 200).get_json()["checkpoints"]
    assert sum(c["is_best"] for c in checkpoints) == 1

    full = api("GET", f"{url}/checkpoints/best", 200)
    size, etag = len(full.get_data()), full.headers["ETag"]
    assert int(full.headers["Content-Length"]) == size
    part = api("GET", f"{url}/checkpoints/best", 206, headers={"Range": "bytes=0-9"})
    assert part.get_data() == full.get_data()[:10]
    assert part.headers["Content-Range"] == f"bytes 0-9/{size}"
    tail = api("GET", f"{url}/checkpoints/best", 206, headers={"Range": "bytes=-5", "If-Range": etag})
    assert tail.get_data() == full.get_data()[-5:]
    api("GET", f"{url}/checkpoints/best", 304, headers={"If-None-Match": etag})
    resp = api("GET", f"{url}/checkpoints/best", 416, headers={"Range": f"bytes={size}-"})
    assert resp.headers["Content-Range"] == f"bytes */{size}"

    diagnostics = api("GET", f"{url}/diagnostics", 200).get_json()
    assert [row["epoch"] for row in diagnostics["epochs"]] == [1, 2, 3]
    assert len(diagnostics["variables"]) == 4
    assert api("GET", f"{url}/diagnostics", 200, query={"after": 2}).get_json()["epochs"][0]["epoch"] == 3

    api("POST", f"{url}/cancel", 409)
    api("DELETE", url, 204)


# --------------------------------------------------------------------------------------------------
# data sets


def test_datasets(api: Api, other_auth: dict[str, str]) -> None:
    body, ctype = multipart({"file": (tiny_npz(), "tiny.npz")})
    resp = api("POST", "/v1/datasets", 201, data=body, content_type=ctype)
    ds = resp.get_json()
    assert resp.headers["Location"] == f"/v1/datasets/{ds['id']}"
    assert ds["splits"] == {"train": 40, "val": None, "test": 10}

    body, ctype = multipart({"file": (b"\x00garbage" * 50, "junk.npz")})
    resp = api("POST", "/v1/datasets", 422, data=body, content_type=ctype)
    assert resp.get_json()["errors"]
    body, ctype = multipart({"file": (b"a,b\n1,2\n", "table.csv")})
    api("POST", "/v1/datasets", 422, data=body, content_type=ctype)  # CSV without 'target'
    body, ctype = multipart({"target": "b"})
    api("POST", "/v1/datasets", 422, data=body, content_type=ctype, request_valid=False)  # no file

    listed = api("GET", "/v1/datasets", 200).get_json()["datasets"]
    assert ds["id"] in {d["id"] for d in listed} and "builtin:digits" in {d["id"] for d in listed}
    api("GET", f"/v1/datasets/{ds['id']}", 200)
    api("GET", "/v1/datasets/builtin:iris", 200)
    api("GET", f"/v1/datasets/{ds['id']}", 404, headers=other_auth)
    api("GET", "/v1/datasets/ds_" + "0" * 32, 404)

    # A job on the upload keeps it from being deleted while the job is queued or running.
    spec = tiny_spec(dataset={"id": ds["id"]}, loss="binary_crossentropy",
                     model={"input_shape": [3], "layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]},
                     training={"epochs": 500, "batch_size": 8})
    job = api("POST", "/v1/jobs", 201, json_body=spec).get_json()
    if api("GET", f"/v1/jobs/{job['id']}", 200).get_json()["status"] not in FINAL:
        api("DELETE", f"/v1/datasets/{ds['id']}", 409)
        api("POST", f"/v1/jobs/{job['id']}/cancel", 202)
    wait_until(lambda: api("GET", f"/v1/jobs/{job['id']}", 200).get_json()["status"] in FINAL, 120, 0.5,
               "the cancelled job to end")
    api("DELETE", f"/v1/datasets/{ds['id']}", 204)
    api("DELETE", f"/v1/datasets/{ds['id']}", 404)
