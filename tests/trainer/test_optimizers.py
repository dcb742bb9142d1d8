import keras
import numpy as np
import pytest

from trainyard.spec.schema import OPTIMIZER_SCHEMAS
from workers.trainer import build_model
from workers.trainer.losses import build_loss
from workers.trainer.optimizers import OPTIMIZER_TYPES, build_optimizer

from .specs import dataset_info, make_spec

KERAS_CLASSES = {
    "sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam, "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
}
INFO = dataset_info(input_shape=(4,), n_classes=3)


def _optimizer(kind: str, **fields) -> dict:
    """The normalised optimizer section of a spec asking for `kind` with `fields`."""
    return make_spec(INFO, optimizer={"type": kind, **fields})["optimizer"]


def test_all_optimizer_types_covered():
    assert set(OPTIMIZER_TYPES) == set(KERAS_CLASSES) == set(OPTIMIZER_SCHEMAS)


@pytest.mark.parametrize("kind", sorted(KERAS_CLASSES))
def test_optimizer_trains_one_step(kind):
    opt = build_optimizer(_optimizer(kind, learning_rate=0.05))
    assert type(opt) is KERAS_CLASSES[kind]
    assert float(opt.learning_rate) == pytest.approx(0.05)
    model = build_model(make_spec(INFO))
    model.compile(optimizer=opt, loss=build_loss("sparse_categorical_crossentropy"))
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    before = model.get_weights()[0].copy()
    model.train_on_batch(x, np.arange(8) % 3)
    assert not np.array_equal(before, model.get_weights()[0])


def test_optimizer_specific_arguments_reach_keras():
    sgd = build_optimizer(_optimizer("sgd", momentum=0.8, nesterov=True, clipnorm=1.5))
    assert sgd.momentum == 0.8 and sgd.nesterov is True and sgd.clipnorm == 1.5
    rms = build_optimizer(_optimizer("rmsprop", rho=0.8, centered=True, clipvalue=0.5))
    assert rms.rho == 0.8 and rms.centered is True and rms.clipvalue == 0.5
    adamw = build_optimizer(_optimizer("adamw", weight_decay=0.01, amsgrad=True))
    assert adamw.weight_decay == 0.01 and adamw.amsgrad is True
    adagrad = build_optimizer(_optimizer("adagrad", initial_accumulator_value=0.3))
    assert adagrad.initial_accumulator_value == 0.3


# Validation refuses each of these (tests/spec); the builder refuses them again, as defence in depth, so
# these sections are deliberately not what the contract can produce.
@pytest.mark.parametrize("cfg, message", [
    ({"type": "lbfgs", "learning_rate": 0.1}, "unknown optimizer"),
    ({**_optimizer("sgd"), "beta_1": 0.9}, "does not take"),
    ({**_optimizer("adam", clipnorm=1.0), "clipvalue": 1.0}, "at most one"),
])
def test_bad_optimizer_specs_are_refused(cfg, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer(cfg)
