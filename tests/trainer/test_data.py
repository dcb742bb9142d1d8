import numpy as np
import pytest

from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.data import make_dataset, make_train_dataset, prepare_data, split_validation

from trainyard.spec import SpecError

from .specs import make_spec


def _data(n=100, features=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=5.0, scale=3.0, size=(n, features)).astype(np.float32)
    y = np.arange(n)  # row ids as labels: lets tests see which rows went where
    return x, y


def test_validation_split_is_seeded_disjoint_and_keeps_row_order():
    x, y = _data()
    x_tr, y_tr, x_val, y_val = split_validation(x, y, 0.2, seed=3)
    assert len(y_tr) == 80 and len(y_val) == 20
    assert set(y_tr).isdisjoint(y_val) and set(y_tr) | set(y_val) == set(range(100))
    assert (np.diff(y_tr) > 0).all() and (np.diff(y_val) > 0).all()
    np.testing.assert_array_equal(x_val, x[y_val])
    assert y_val.tolist() == split_validation(x, y, 0.2, seed=3)[3].tolist()
    assert y_val.tolist() != split_validation(x, y, 0.2, seed=4)[3].tolist()
    assert y_val.tolist() != list(range(80, 100)), "validation must not be just the tail rows"


def test_given_validation_data_is_used_and_no_split_is_taken_from_training():
    x, y = _data()
    data = TrainData(x[:60], y[:60], x[60:], y[60:])
    # The contract refuses a split of a data set that brings its own validation part ...
    with pytest.raises(SpecError, match="validation_split"):
        make_spec(data, dataset={"validation_split": 0.5})
    # ... and leaves the split out, so every training row trains.
    spec = make_spec(data)
    assert spec["dataset"]["validation_split"] == 0.0
    prepared = prepare_data(spec, data)
    assert len(prepared.x_train) == 60
    np.testing.assert_array_equal(prepared.y_val, y[60:])


def test_standardize_uses_training_split_statistics_only():
    x, y = _data()
    x_val = x[:10] + 100.0  # wildly different validation data must not move the statistics
    x[:, 2] = 7.0  # a constant feature: std 0 becomes 1
    data = TrainData(x, y, x_val, y[:10], x[:5], y[:5])
    prepared = prepare_data(make_spec(data, dataset={"normalize": "standardize"}), data)
    stats = prepared.normalization["inputs"]
    assert stats["method"] == "standardize"
    np.testing.assert_allclose(stats["mean"], x.astype(np.float64).mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["std"][:2], x[:, :2].astype(np.float64).std(axis=0), rtol=1e-6)
    assert stats["std"][2] == 1.0
    np.testing.assert_allclose(prepared.x_train[:, :2].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(prepared.x_train[:, :2].std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(prepared.x_val, (x_val - stats["mean"]) / stats["std"], rtol=1e-5)
    np.testing.assert_allclose(prepared.x_test, prepared.x_train[:5], rtol=1e-6)
    assert prepared.normalization["targets"] is None
    assert prepared.x_train.dtype == np.float32
    assert all(type(v) is float for v in stats["mean"]), "stats must be plain JSON-able lists"


def test_split_happens_before_statistics():
    x, y = _data()
    spec = make_spec(TrainData(x, y), dataset={"validation_split": 0.2, "normalize": "minmax"}, training={"seed": 1})
    prepared = prepare_data(spec, TrainData(x, y))
    train_rows = x[prepared.y_train]
    stats = prepared.normalization["inputs"]
    np.testing.assert_allclose(stats["min"], train_rows.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["range"], np.ptp(train_rows, axis=0), rtol=1e-5)
    assert prepared.x_train.min() == pytest.approx(0.0) and prepared.x_train.max() == pytest.approx(1.0)


def test_target_standardisation():
    x, _ = _data()
    y = np.linspace(100.0, 200.0, 100).astype(np.float32)
    data = TrainData(x, y, x[:4], y[:4])
    prepared = prepare_data(make_spec(data, dataset={"normalize_targets": "standardize"}), data)
    targets = prepared.normalization["targets"]
    assert prepared.normalization["inputs"] is None
    assert targets["mean"] == [pytest.approx(150.0)]
    assert targets["std"] == [pytest.approx(float(y.astype(np.float64).std()))]
    assert abs(float(prepared.y_train.mean())) < 1e-5
    np.testing.assert_allclose(prepared.y_val, (y[:4] - 150.0) / targets["std"][0], rtol=1e-5)


def test_embedding_inputs_stay_integer_ids():
    x = np.random.default_rng(0).integers(0, 10, size=(20, 5))
    data = TrainData(x, np.arange(20) % 2)
    spec = make_spec(data, dataset={"normalize": "standardize"}, model={"layers": [
        {"type": "embedding", "input_dim": 10, "output_dim": 4}, {"type": "flatten"},
        {"type": "dense", "units": 2, "activation": "softmax"}]})
    prepared = prepare_data(spec, data, integer_inputs=True)
    assert prepared.x_train.dtype == np.int32 and prepared.normalization is None
    np.testing.assert_array_equal(prepared.x_train, x)


def test_mismatched_arrays_are_refused():
    x, y = _data()
    with pytest.raises(ValueError, match="both"):
        prepare_data(make_spec(TrainData(x, y)), TrainData(x, y, x_val=x))
    with pytest.raises(ValueError, match="rows"):
        prepare_data(make_spec(TrainData(x, y)), TrainData(x, y[:5]))


def _epochs(ds, n_epochs: int, steps: int) -> list[list[int]]:
    batches = [b[1].numpy() for b in ds.take(n_epochs * steps)]
    return [np.concatenate(batches[e * steps:(e + 1) * steps]).tolist() for e in range(n_epochs)]


def test_training_batches_shuffle_each_epoch_by_seed_and_epoch_and_cover_every_row():
    x, y = _data(n=50)

    def orders(seed, first_epoch=0):  # 50 rows in batches of 16: 4 steps per epoch, the last one short
        return _epochs(make_train_dataset(x, y, 16, shuffle=True, seed=seed, first_epoch=first_epoch), 3, 4)

    epochs = orders(1)
    assert all(sorted(order) == list(range(50)) for order in epochs)
    assert len({tuple(order) for order in epochs}) == 3, "every epoch has its own order"
    assert orders(1) == epochs and orders(2) != epochs
    # A resumed run starting at epoch 2 sees the orders the whole run saw from epoch 2 on.
    assert orders(1, first_epoch=1)[:2] == epochs[1:]
    plain = _epochs(make_train_dataset(x, y, 16, shuffle=False, seed=1), 2, 4)
    assert plain == [list(range(50))] * 2
    assert np.concatenate([b[1].numpy() for b in make_dataset(x, y, 16)]).tolist() == list(range(50))


def test_engine_reports_sizes_and_statistics(tmp_path):
    x, _ = _data(n=80)
    y = (x[:, 0] > 5).astype(int)
    data = TrainData(x, y, x_test=x[:8], y_test=y[:8])
    spec = make_spec(data, model={"layers": [{"type": "dense", "units": 2, "activation": "softmax"}]},
                     dataset={"validation_split": 0.25, "normalize": "standardize"}, training={"batch_size": 32})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    info = reporter.info
    assert (info["train_samples"], info["val_samples"], info["test_samples"]) == (60, 20, 8)
    assert info["steps_per_epoch"] == 2
    assert info["normalization"] == result.normalization
    assert result.normalization["inputs"]["method"] == "standardize"
