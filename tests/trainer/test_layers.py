import keras
import numpy as np
import pytest

from workers.trainer import build_model
from workers.trainer.layers import LAYER_BUILDERS, summarize
from workers.trainer.losses import build_loss

from .specs import layer, make_spec

# Each allow-listed layer type inside a minimal model that can train: (input_shape, layers, integer ids?)
CASES = {
    "dense": ([4], [layer("dense", units=3, activation="softmax")], False),
    "dropout": ([4], [layer("dropout", rate=0.5), layer("dense", units=3, activation="softmax")], False),
    "flatten": ([2, 2], [layer("flatten"), layer("dense", units=3, activation="softmax")], False),
    "reshape": ([4], [layer("reshape", target_shape=[2, 2]), layer("flatten"),
                      layer("dense", units=3, activation="softmax")], False),
    "activation": ([4], [layer("dense", units=5), layer("activation", activation="tanh"),
                         layer("dense", units=3, activation="softmax")], False),
    "batch_normalization": ([4], [layer("batch_normalization"),
                                  layer("dense", units=3, activation="softmax")], False),
    "layer_normalization": ([4], [layer("layer_normalization"),
                                  layer("dense", units=3, activation="softmax")], False),
    "conv1d": ([6, 2], [layer("conv1d", filters=4, kernel_size=3, activation="relu"), layer("flatten"),
                        layer("dense", units=3, activation="softmax")], False),
    "conv2d": ([8, 8, 1], [layer("conv2d", filters=4, kernel_size=[3, 3], padding="same",
                                 kernel_regularizer={"l1": 0.0, "l2": 1e-4}), layer("flatten"),
                           layer("dense", units=3, activation="softmax")], False),
    "max_pooling1d": ([6, 2], [layer("max_pooling1d", pool_size=2), layer("flatten"),
                               layer("dense", units=3, activation="softmax")], False),
    "max_pooling2d": ([8, 8, 1], [layer("max_pooling2d", pool_size=[2, 2], strides=2), layer("flatten"),
                                  layer("dense", units=3, activation="softmax")], False),
    "average_pooling2d": ([8, 8, 1], [layer("average_pooling2d", pool_size=2, padding="same"),
                                      layer("flatten"), layer("dense", units=3, activation="softmax")],
                          False),
    "global_average_pooling1d": ([6, 2], [layer("global_average_pooling1d"),
                                          layer("dense", units=3, activation="softmax")], False),
    "global_average_pooling2d": ([8, 8, 1], [layer("global_average_pooling2d"),
                                             layer("dense", units=3, activation="softmax")], False),
    "embedding": ([5], [layer("embedding", input_dim=10, output_dim=4), layer("flatten"),
                        layer("dense", units=3, activation="softmax")], True),
    "lstm": ([5, 3], [layer("lstm", units=4), layer("dense", units=3, activation="softmax")], False),
    "gru": ([5, 3], [layer("gru", units=4, return_sequences=True), layer("global_average_pooling1d"),
                     layer("dense", units=3, activation="softmax")], False),
    "simple_rnn": ([5, 3], [layer("simple_rnn", units=4),
                            layer("dense", units=3, activation="softmax")], False),
    "bidirectional": ([5, 3], [layer("bidirectional", layer={"type": "lstm", "units": 4},
                                     merge_mode="sum"),
                               layer("dense", units=3, activation="softmax")], False),
}


def test_every_allow_listed_layer_type_has_a_case():
    assert set(CASES) == set(LAYER_BUILDERS)


@pytest.mark.parametrize("layer_type", sorted(CASES))
def test_layer_builds_and_trains_one_step(layer_type):
    input_shape, layers, integer_ids = CASES[layer_type]
    spec = make_spec(model={"input_shape": input_shape, "layers": layers})
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
    spec = make_spec(model={"input_shape": [4], "layers": [
        layer("dense", units=7, activation="tanh", kernel_regularizer={"l1": 0.01, "l2": 0.02}),
        layer("dropout", rate=0.25),
        layer("dense", units=2, activation="softmax", use_bias=False),
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
    spec = make_spec(model={"input_shape": [8, 8, 1], "layers": [
        layer("conv2d", filters=4, kernel_size=3), layer("flatten"), layer("dense", units=3)]})
    model = build_model(spec)
    rows = summarize(model, spec["model"])
    assert rows == [
        {"name": "conv2d_1", "type": "conv2d", "output_shape": [None, 6, 6, 4], "params": 3 * 3 * 4 + 4},
        {"name": "flatten_2", "type": "flatten", "output_shape": [None, 144], "params": 0},
        {"name": "dense_3", "type": "dense", "output_shape": [None, 3], "params": 144 * 3 + 3},
    ]


@pytest.mark.parametrize("bad_layer, message", [
    ({"type": "lambda", "function": "os.system"}, "unknown layer type"),
    ({"type": "dense", "units": 3, "dtype": "float64"}, "does not take"),
    ({"type": "bidirectional", "layer": {"type": "dense", "units": 3}}, "bidirectional.layer"),
    ({"type": "dense", "units": 3, "kernel_regularizer": {"l3": 1.0}}, "regularizer"),
])
def test_unknown_layer_types_and_fields_are_refused(bad_layer, message):
    spec = make_spec(model={"input_shape": [4], "layers": [bad_layer]})
    with pytest.raises(ValueError, match=message):
        build_model(spec)
