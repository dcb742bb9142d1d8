"""The range of every number in a job spec, and the length of every list.

Each bound keeps a value inside what the engine can use: every float is cast to float32 (TensorFlow
refuses a Python float beyond its range, and rounds 0.99999999 to 1.0, where Adam's bias correction
divides by zero), and decay factors, powers and regularisation strengths far past these caps only
overflow the loss or the learning rate. The caps sit well beyond what a real job asks for, in line with
the search ranges of Keras Tuner and SageMaker's automatic model tuning; the README's Security model
lists them and openapi.yaml carries them as minimum/maximum. tests/spec/test_bounds.py checks that every
number the schema declares is bounded; tests/property/ trains specs drawn at and near every bound.
"""
from __future__ import annotations

from marshmallow import validate

Range = validate.Range

# --- learning rates: optimizer.learning_rate, piecewise_constant values, cosine_decay warmup_target ------
LEARNING_RATE = Range(1e-10, 10.0)
#: Rates a schedule or callback may bring the learning rate down to (0 allowed).
LEARNING_RATE_FLOOR = Range(0.0, 10.0)

# --- optimizers --------------------------------------------------------------------------------------
CLIP = Range(1e-6, 1e6)  # clipnorm, clipvalue
#: momentum (sgd, rmsprop, batch normalisation), beta_1, beta_2, rho: below 1 even after the cast to float32.
MOMENTUM = Range(0.0, 0.99999)
EPSILON = Range(1e-12, 10.0)  # optimizers' and normalisation layers' epsilon
WEIGHT_DECAY = Range(0.0, 1.0)  # adamw: decoupled, so it is multiplied by the learning rate
ACCUMULATOR = Range(0.0, 100.0)  # adagrad's initial_accumulator_value

# --- schedules ---------------------------------------------------------------------------------------
STEPS = Range(1, 10**9)  # decay_steps and piecewise_constant boundaries, in epochs or steps
WARMUP_STEPS = Range(0, 10**9)
EXPONENTIAL_DECAY_RATE = Range(1e-6, 1.0)  # a rate above 1 grows the learning rate without bound
INVERSE_TIME_DECAY_RATE = Range(0.0, 1000.0)
POWER = Range(0.01, 10.0)  # polynomial_decay
ALPHA = Range(0.0, 1.0)  # cosine_decay: the final fraction of the base rate
#: piecewise_constant boundaries: the schedule costs a few graph operations per boundary in every
#: training step (Keras' PiecewiseConstantDecay); 2,000 of them took a worker 75 s to build and trace.
MAX_BOUNDARIES = 100

# --- callbacks ---------------------------------------------------------------------------------------
PATIENCE = Range(0, 100_000)  # patience, cooldown, start_from_epoch
MIN_DELTA = Range(0.0, 1e9)  # in the monitored value's units (a loss on unscaled targets can be large)
FACTOR = Range(1e-4, 0.9999)  # reduce_lr_on_plateau: the new rate is the old one times this

# --- layers ------------------------------------------------------------------------------------------
DROPOUT = Range(0.0, 0.99)  # dropout rate, recurrent dropout and recurrent_dropout
REGULARIZATION = Range(0.0, 1.0)  # l1, l2

# --- the rest ----------------------------------------------------------------------------------------
VALIDATION_SPLIT = Range(0.0, 1.0, max_inclusive=False)
