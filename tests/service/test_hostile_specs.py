"""Hostile job specs: every known way a Keras config turns into code execution, file reads or SSRF is
refused by the allow-list with a 422 naming the field, and validating and building specs opens no file
and imports nothing outside Keras' own (an audit hook in a fresh interpreter records it).
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import ROOT, subprocess_env, tiny_spec

NESTED_MODEL = {"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": 3}}]}}


def _layer0(**layer: Any) -> dict[str, Any]:
    spec = tiny_spec()
    spec["model"]["layers"][0] = layer
    return spec


def _with(path: str, value: Any) -> dict[str, Any]:
    """tiny_spec with `value` set at a dotted `path` (creating objects on the way)."""
    spec = copy.deepcopy(tiny_spec())
    node = spec
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return spec


# (what it imitates, spec, the field the 422 must name)
HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    # Code execution through layers (CVE-2024-3660 and the safe_mode bypasses that followed)
    ("Lambda layer with marshalled bytecode", _layer0(type="lambda", function="4wEAAAAAAAAA", module="builtins"),
     "model.layers[0].type"),
    ("Keras class_name/config layer", _layer0(class_name="Lambda", config={"function": "os.system"}),
     "model.layers[0].type"),
    ("class_name next to an allowed type", _layer0(type="dense", units=3, activation="softmax", class_name="Lambda"),
     "model.layers[0].class_name"),
    ("module key (CVE-2025-1550)", _layer0(type="dense", units=3, activation="softmax", module="os"),
     "model.layers[0].module"),
    ("registered_name key", _layer0(type="dense", units=3, activation="softmax", registered_name="Custom>Evil"),
     "model.layers[0].registered_name"),
    ("config key", _layer0(type="dense", units=3, activation="softmax", config={"units": 3}),
     "model.layers[0].config"),
    ("activation as a serialized function (CVE-2025-9906 gadget)",
     _layer0(type="dense", units=3, activation={"module": "keras.models", "class_name": "function",
                                                "config": "load_model", "registered_name": "function"}),
     "model.layers[0].activation"),
    ("activation naming a module function", _layer0(type="dense", units=3, activation="os.system"),
     "model.layers[0].activation"),
    ("initializer as a class_name/config object",
     _layer0(type="dense", units=3, activation="softmax",
             kernel_initializer={"class_name": "Constant", "config": {"value": "/etc/passwd"}}),
     "model.layers[0].kernel_initializer"),
    ("regularizer with a module", _layer0(type="dense", units=3, activation="softmax",
                                          kernel_regularizer={"module": "os", "l2": 0.1}),
     "model.layers[0].kernel_regularizer.module"),
    ("nested model as a layer", _layer0(type="sequential", layers=[{"type": "dense", "units": 3}]),
     "model.layers[0].type"),
    ("nested functional model in a bidirectional wrapper",
     _layer0(type="bidirectional", layer={"type": "functional", "config": NESTED_MODEL}), "model.layers[0].layer.type"),
    ("whole model as a Keras config", _with("model.config", NESTED_MODEL), "model.config"),
    ("model class_name", _with("model.class_name", "Functional"), "model.class_name"),
    # Layers that read files or URLs while loading (CVE-2025-12058, CVE-2026-1462, TF-Hub style layers)
    ("StringLookup vocabulary file", _layer0(type="string_lookup", vocabulary="/etc/passwd"), "model.layers[0].type"),
    ("TFSMLayer SavedModel path", _layer0(type="tfsm_layer", filepath="/tmp/evil_savedmodel"), "model.layers[0].type"),
    ("hub layer URL", _layer0(type="keras_layer", handle="https://169.254.169.254/latest/meta-data"),
     "model.layers[0].type"),
    ("weights file on a layer", _layer0(type="dense", units=3, activation="softmax", weights="/etc/shadow"),
     "model.layers[0].weights"),
    ("pretrained weights URL for the model", _with("model.weights", "https://evil.example/w.h5"), "model.weights"),
    ("input_shape holding a path", _with("model.input_shape", ["/etc/passwd"]), "model.input_shape[0]"),
    # Callbacks outside the allow-list (SSRF, arbitrary writes)
    ("RemoteMonitor callback (SSRF)", _with("callbacks.remote_monitor", {"root": "http://169.254.169.254"}),
     "callbacks.remote_monitor"),
    ("TensorBoard callback writing anywhere", _with("callbacks.tensorboard", {"log_dir": "/etc/cron.d"}),
     "callbacks.tensorboard"),
    ("CSVLogger with a traversal path", _with("callbacks.csv_logger", {"filename": "../../../../etc/x"}),
     "callbacks.csv_logger"),
    ("LambdaCallback", _with("callbacks.lambda_callback", {"on_epoch_end": "os.system('id')"}),
     "callbacks.lambda_callback"),
    ("BackupAndRestore with a path", _with("callbacks.backup_and_restore", {"backup_dir": "/"}),
     "callbacks.backup_and_restore"),
    ("user-chosen checkpoint path", _with("callbacks.checkpoint.filepath", "/var/lib/postgresql/x.keras"),
     "callbacks.checkpoint.filepath"),
    ("checkpoint monitor that is a path", _with("callbacks.checkpoint.monitor", "../../etc/passwd"),
     "callbacks.checkpoint.monitor"),
    ("early stopping with a URL", _with("callbacks.early_stopping", {"monitor": "val_loss", "url": "http://x"}),
     "callbacks.early_stopping.url"),
    # Data set references that are paths or URLs
    ("dataset id as an absolute path", _with("dataset.id", "/etc/passwd"), "dataset.id"),
    ("dataset id as a file URL", _with("dataset.id", "file:///etc/passwd"), "dataset.id"),
    ("dataset id as a cloud-metadata URL", _with("dataset.id", "http://169.254.169.254/latest/"), "dataset.id"),
    ("dataset id with traversal", _with("dataset.id", "builtin:../../etc/passwd"), "dataset.id"),
    ("dataset path key", _with("dataset.path", "/srv/artifacts/other-tenant.npz"), "dataset.path"),
    ("dataset url key", _with("dataset.url", "https://evil.example/data.npz"), "dataset.url"),
    ("Keras dataset loader name", _with("dataset.id", "keras.datasets.mnist"), "dataset.id"),
    # Anything else that would reach Keras deserialization
    ("custom loss by module path", _with("loss", "my_module.my_loss"), "loss"),
    ("loss as a serialized object", _with("loss", {"class_name": "Loss", "module": "os"}), "loss"),
    ("metric by URL", _with("metrics", ["https://evil.example/metric"]), "metrics[0]"),
    ("optimizer by Keras class path", _with("optimizer", {"type": "keras.optimizers.Adam"}), "optimizer.type"),
    ("optimizer with a module key", _with("optimizer", {"type": "adam", "module": "os"}), "optimizer.module"),
    ("schedule as a Keras config", _with("schedule", {"class_name": "CosineDecay", "config": {}}), "schedule.type"),
    ("safe_mode switch", _with("safe_mode", False), "safe_mode"),
    ("custom_objects", _with("custom_objects", {"Evil": "os.system"}), "custom_objects"),
    ("job name as a path", _with("name", "../../etc/passwd"), "name"),
]


@pytest.mark.parametrize(("spec", "field"), [(s, f) for _, s, f in HOSTILE], ids=[w for w, _, _ in HOSTILE])
def test_hostile_spec_is_422_naming_the_field(client: Any, auth: dict[str, str], spec: dict[str, Any],
                                              field: str) -> None:
    resp = client.post("/v1/jobs", json=spec, headers=auth)
    assert resp.status_code == 422, resp.get_json()
    assert resp.mimetype == "application/problem+json"
    fields = [e["field"] for e in resp.get_json()["errors"]]
    assert field in fields, fields


def test_billion_unit_dense_is_422_before_anything_is_allocated(client: Any, auth: dict[str, str]) -> None:
    start = time.perf_counter()
    huge = client.post("/v1/jobs", json=_layer0(type="dense", units=10**9, activation="softmax"), headers=auth)
    assert huge.status_code == 422
    assert "model.layers[0].units" in [e["field"] for e in huge.get_json()["errors"]]
    # Each layer within its own bound, the model far beyond the parameter ceiling: counted, not built.
    wide = tiny_spec(model={"input_shape": [4], "layers": [
        {"type": "dense", "units": 1_000_000, "activation": "relu"},
        {"type": "dense", "units": 1_000_000, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"}]})
    resp = client.post("/v1/jobs", json=wide, headers=auth)
    assert resp.status_code == 422
    assert any(e["field"] == "model" and "parameters" in e["message"] for e in resp.get_json()["errors"])
    many = tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 3}] * 1000})
    resp = client.post("/v1/jobs", json=many, headers=auth)
    assert resp.status_code == 422 and resp.get_json()["errors"][0]["field"] == "model.layers"
    # Past the JSON body cap (1 MiB by default) the body is not even parsed.
    huge_body = tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 3}] * 100_000})
    assert client.post("/v1/jobs", json=huge_body, headers=auth).status_code == 413
    assert time.perf_counter() - start < 5  # a trillion float32s would take minutes (or the worker)


# --- audit hook: nothing opened, nothing imported --------------------------------------------------

_BENIGN = [
    tiny_spec(dataset={"id": "builtin:digits"}, model={"input_shape": [64], "layers": [
        {"type": "reshape", "target_shape": [8, 8, 1]},
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "kernel_regularizer": {"l2": 0.01}},
        {"type": "batch_normalization"},
        {"type": "max_pooling2d", "pool_size": 2},
        {"type": "average_pooling2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 16, "activation": "relu", "kernel_initializer": "he_normal"},
        {"type": "dropout", "rate": 0.1},
        {"type": "layer_normalization"},
        {"type": "activation", "activation": "gelu"},
        {"type": "dense", "units": 10, "activation": "softmax"}]}),
    tiny_spec(dataset={"id": "builtin:digits"}, model={"input_shape": [64], "layers": [
        {"type": "reshape", "target_shape": [8, 8]},
        {"type": "conv1d", "filters": 4, "kernel_size": 3},
        {"type": "max_pooling1d", "pool_size": 2},
        {"type": "lstm", "units": 4, "return_sequences": True},
        {"type": "gru", "units": 4, "return_sequences": True},
        {"type": "bidirectional", "layer": {"type": "simple_rnn", "units": 4, "return_sequences": True}},
        {"type": "global_average_pooling1d"},
        {"type": "dense", "units": 10, "activation": "softmax"}]}),
    tiny_spec(dataset={"id": "builtin:digits"}, model={"input_shape": [64], "layers": [
        {"type": "reshape", "target_shape": [8, 8, 1]},
        {"type": "conv2d", "filters": 2, "kernel_size": 3},
        {"type": "global_average_pooling2d"},
        {"type": "dense", "units": 10, "activation": "softmax"}]},
        optimizer={"type": "adamw", "clipnorm": 1.0},
        schedule={"type": "cosine_decay", "decay_steps": 10, "warmup_steps": 2}),
]

# Runs in a fresh interpreter: audit hooks cannot be removed, and sys.modules must start clean.
_PROBE = r'''
import json, sys
import keras, numpy, tensorflow  # noqa: F401  (loaded before the hook: their own start-up is not the question)
from trainyard.spec import SpecError, validate_spec
from workers.trainer.layers import build_model
from workers.trainer.losses import build_loss, build_metrics
from workers.trainer.optimizers import build_optimizer

hostile, benign = json.loads(sys.stdin.read())

def build(spec):
    model = build_model(spec)
    model.compile(optimizer=build_optimizer(spec["optimizer"], spec["schedule"], 10),
                  loss=build_loss(spec["loss"]), metrics=build_metrics(spec["metrics"], spec["loss"]))
    return model

for spec in benign:  # warm: Keras imports some of its own modules on first use of a layer
    build(validate_spec(spec))

events = []
WATCHED = ("open", "import", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.listdir", "os.scandir",
           "subprocess.Popen", "socket.", "urllib.Request", "http.client.connect", "shutil.", "ctypes.dlopen",
           "marshal.loads", "pickle.find_class", "exec", "builtins.input")

def hook(event, args):
    if event.startswith(WATCHED):
        events.append([event, str(args[0])[:200] if args else ""])

sys.addaudithook(hook)
outcome = {"refused": [], "built": 0, "builder_refused": []}
for spec in hostile:
    try:
        validate_spec(spec)
        outcome["refused"].append(None)
    except SpecError as exc:
        outcome["refused"].append([e["field"] for e in exc.errors])
    try:  # the builder on its own, as if the validator were bypassed
        build_model(spec)
        outcome["builder_refused"].append(False)
    except Exception:
        outcome["builder_refused"].append(True)
for spec in benign:
    build(validate_spec(spec))
    outcome["built"] += 1
hostile_events = list(events)
# Canary: the hook does see an import and an open made now.
import wave  # noqa: F401
open(__import__("os").devnull).close()
outcome["events"], outcome["canary"] = hostile_events, events[len(hostile_events):]
print("RESULT " + json.dumps(outcome))
'''

# Beyond Keras, TensorFlow and NumPy (and the standard library, minus what reaches the network, other
# processes or serialized code), nothing may be imported while specs are validated and built.
_ALLOWED_PACKAGES = ("keras", "tensorflow", "numpy", "ml_dtypes", "optree", "absl", "google.protobuf", "h5py",
                     "namex", "rich", "tf_keras")
_FORBIDDEN_STDLIB = {"subprocess", "socket", "ssl", "urllib", "http", "ftplib", "smtplib", "pickle", "marshal",
                     "shelve", "webbrowser", "pty", "multiprocessing", "xmlrpc", "telnetlib"}


def _allowed_import(name: str) -> bool:
    top = name.split(".")[0]
    if name.startswith(_ALLOWED_PACKAGES):
        return True
    return top in sys.stdlib_module_names and top not in _FORBIDDEN_STDLIB


def test_validating_and_building_opens_no_file_and_imports_nothing_foreign() -> None:
    hostile = [spec for _, spec, _ in HOSTILE]
    proc = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps([hostile, _BENIGN]), cwd=ROOT,
                          env=subprocess_env({}), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    outcome = json.loads(line.removeprefix("RESULT "))
    assert None not in outcome["refused"]  # every hostile spec refused by the validator...
    # ...and a hostile layer is refused by the model builder on its own too (other sections it never reads).
    for (what, _, field), refused in zip(HOSTILE, outcome["builder_refused"]):
        assert refused or not field.startswith("model.layers"), what
    assert outcome["built"] == len(_BENIGN)
    opened = [arg for event, arg in outcome["events"] if event == "open"]
    assert opened == [], opened
    foreign = [arg for event, arg in outcome["events"] if event == "import" and not _allowed_import(arg)]
    assert foreign == [], foreign
    other = [e for e in outcome["events"] if e[0] not in ("open", "import")]
    assert other == [], other
    # The hook was live: the canary's import and open were both recorded.
    assert ["import", "wave"] in outcome["canary"]
    assert any(event == "open" for event, _ in outcome["canary"])
