import keras
import numpy as np
import pytest

from trainyard.spec import LAYER_TYPES
from workers.trainer import TrainData, build_model
from workers.trainer.layers import LAYER_BUILDERS, summarize
from workers.trainer.losses import build_loss

from .specs import dataset_info, make_spec

SOFTMAX_3 = {"type": "dense", "units": 3, "activation": "softmax"}
FLATTEN = {"type": "flatten"}

# Each allow-listed layer type inside a minimal model that can train: (input_shape, layers, integer ids?)
CASES = {
    "dense": ([4], [SOFTMAX_3], False),
    "dropout": ([4], [{"type": "dropout", "rate": 0.5}, SOFTMAX_3], False),
    "flatten": ([2, 2], [FLATTEN, SOFTMAX_3], False),
    "reshape": ([4], [{"type": "reshape", "target_shape": [2, 2]}, FLATTEN, SOFTMAX_3], False),
    "activation": ([4], [{"type": "dense", "units": 5}, {"type": "activation", "activation": "tanh"}, SOFTMAX_3],
                   False),
    "batch_normalization": ([4], [{"type": "batch_normalization"}, SOFTMAX_3], False),
    "layer_normalization": ([4], [{"type": "layer_normalization"}, SOFTMAX_3], False),
    "conv1d": ([6, 2], [{"type": "conv1d", "filters": 4, "kernel_size": 3, "activation": "relu"}, FLATTEN,
                        SOFTMAX_3], False),
    "conv2d": ([8, 8, 1], [{"type": "conv2d", "filters": 4, "kernel_size": [3, 3], "padding": "same",
                            "kernel_regularizer": {"l1": 0.0, "l2": 1e-4}}, FLATTEN, SOFTMAX_3], False),
    "max_pooling1d": ([6, 2], [{"type": "max_pooling1d", "pool_size": 2}, FLATTEN, SOFTMAX_3], False),
    "max_pooling2d": ([8, 8, 1], [{"type": "max_pooling2d", "pool_size": [2, 2], "strides": 2}, FLATTEN,
                                  SOFTMAX_3], False),
    "average_pooling2d": ([8, 8, 1], [{"type": "average_pooling2d", "pool_size": 2, "padding": "same"}, FLATTEN,
                                      SOFTMAX_3], False),
    "global_average_pooling1d": ([6, 2], [{"type": "global_average_pooling1d"}, SOFTMAX_3], False),
    "global_average_pooling2d": ([8, 8, 1], [{"type": "global_average_pooling2d"}, SOFTMAX_3], False),
    "embedding": ([5], [{"type": "embedding", "input_dim": 10, "output_dim": 4}, FLATTEN, SOFTMAX_3], True),
    "lstm": ([5, 3], [{"type": "lstm", "units": 4}, SOFTMAX_3], False),
    "gru": ([5, 3], [{"type": "gru", "units": 4, "return_sequences": True}, {"type": "global_average_pooling1d"},
                     SOFTMAX_3], False),
    "simple_rnn": ([5, 3], [{"type": "simple_rnn", "units": 4}, SOFTMAX_3], False),
    "bidirectional": ([5, 3], [{"type": "bidirectional", "layer": {"type": "lstm", "units": 4}, "merge_mode": "sum"},
                               SOFTMAX_3], False),
}


def _info(input_shape, classes=3):
    return dataset_info(input_shape=tuple(input_shape), n_classes=classes)


def test_every_allow_listed_layer_type_has_a_case():
    assert set(CASES) == set(LAYER_BUILDERS) == set(LAYER_TYPES)


@pytest.mark.parametrize("layer_type", sorted(CASES))
def test_layer_builds_and_trains_one_step(layer_type):
    input_shape, layers, integer_ids = CASES[layer_type]
    spec = make_spec(_info(input_shape), model={"layers": layers})
    model = build_model(spec)
    rng = np.random.default_rng(0)
    if integer_ids:
        x = rng.integers(0, 10, size=(8, *input_shape)).astype(np.int32)
    else:
        x = rng.normal(size=(8, *input_shape)).astype(np.float32)
    y = rng.integers(0, 3, size=8)
    model.compile(optimizer="sgd", loss=build_loss("sparse_categorical_crossentropy"))
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert model.output_shape == (None, 3)
    assert any(name.rsplit("_", 1)[0] == layer_type for name in (lyr.name for lyr in model.layers))
    trained = [w for w, b in zip(model.get_weights(), before) if not np.array_equal(w, b)]
    assert trained, "one SGD step changed no weight"


def test_layers_are_the_explicit_keras_classes_with_spec_arguments():
    spec = make_spec(_info([4], classes=2), model={"layers": [
        {"type": "dense", "units": 7, "activation": "tanh", "kernel_regularizer": {"l1": 0.01, "l2": 0.02}},
        {"type": "dropout", "rate": 0.25},
        {"type": "dense", "units": 2, "activation": "softmax", "use_bias": False},
    ]})
    model = build_model(spec)
    dense, dropout, out = model.layers[1:]
    assert isinstance(dense, keras.layers.Dense) and dense.units == 7
    assert dense.activation is keras.activations.tanh
    assert isinstance(dense.kernel_regularizer, keras.regularizers.L1L2)
    assert dense.kernel_regularizer.l1 == pytest.approx(0.01)
    assert dense.kernel_regularizer.l2 == pytest.approx(0.02)
    assert isinstance(dropout, keras.layers.Dropout) and dropout.rate == 0.25
    assert out.use_bias is False and out.bias is None


def test_summary_rows_name_type_shape_params():
    # A linear output of 3 units: regression targets of 3 values.
    spec = make_spec(dataset_info(input_shape=(8, 8, 1), target_shape=(3,)), model={"layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3}, FLATTEN, {"type": "dense", "units": 3}]})
    model = build_model(spec)
    rows = summarize(model, spec["model"])
    assert rows == [
        {"name": "conv2d_1", "type": "conv2d", "output_shape": [None, 6, 6, 4], "params": 3 * 3 * 4 + 4},
        {"name": "flatten_2", "type": "flatten", "output_shape": [None, 144], "params": 0},
        {"name": "dense_3", "type": "dense", "output_shape": [None, 3], "params": 144 * 3 + 3},
    ]


# Validation refuses each of these (tests/spec); the builder refuses them again, as defence in depth, so
# these model sections are deliberately not specs the contract can produce.
@pytest.mark.parametrize("bad_layer, message", [
    ({"type": "lambda", "function": "os.system"}, "unknown layer type"),
    ({"type": "dense", "units": 3, "dtype": "float64"}, "does not take"),
    ({"type": "bidirectional", "layer": {"type": "dense", "units": 3}}, "bidirectional.layer"),
    ({"type": "dense", "units": 3, "kernel_regularizer": {"l3": 1.0}}, "regularizer"),
])
def test_unknown_layer_types_and_fields_are_refused(bad_layer, message):
    with pytest.raises(ValueError, match=message):
        build_model({"input_shape": [4], "layers": [bad_layer]})


def test_dataset_info_sees_the_arrays_as_an_upload_would():
    x = np.zeros((10, 6, 2), np.float32)
    info = dataset_info(TrainData(x, np.arange(10) % 4, x_test=x[:2], y_test=np.zeros(2, int)))
    assert (info.input_shape, info.task, info.n_classes, info.target_shape) == ((6, 2), "classification", 4, ())
    assert (info.train_samples, info.test_samples, info.has_validation) == (10, 2, False)
    assert dataset_info(TrainData(x, np.linspace(0, 1, 10))).task == "regression"
