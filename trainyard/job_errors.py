"""Why a failed job failed: the one list of `error.code` values, and what each means.

Only the job lifecycle (trainyard/lifecycle.py) ends a job `failed`, and it builds the row's values with
`lifecycle.failure()`, so a failed job always has a code from this list and a message naming the cause; the
database refuses a failed job without both (migrations/versions/0007_failed_jobs_have_an_error.py, revision 0008). openapi.yaml (the job's `error.code`) and the
README's table of error codes list the same codes, and tests/workers/test_job_errors.py holds them equal.

Standard library only: the API, the workers and the docs test all import it.
"""
from __future__ import annotations

from enum import StrEnum

#: Longest stored message; the cause comes first, so a cut one still names it.
MAX_MESSAGE_CHARS = 2000


class JobError(StrEnum):
    DATASET_UNAVAILABLE = "dataset_unavailable"
    TRAINING_ERROR = "training_error"
    NAN_LOSS = "nan_loss"
    NO_GRADIENTS = "no_gradients"
    NO_CHECKPOINT = "no_checkpoint"
    CHECKPOINT_UNAVAILABLE = "checkpoint_unavailable"
    WORKER_LOST = "worker_lost"
    WORKER_ERROR = "worker_error"
    # Codes of the diagnostics findings that can stop a job (stop_reason "diagnosis", diagnostics.on_error
    # "stop"): the job's error code is the code of the finding that stopped it.
    LR_TOO_SMALL = "lr_too_small"
    DIVERGED = "diverged"
    LOSS_ACTIVATION_MISMATCH = "loss_activation_mismatch"
    NON_FINITE_FEATURE = "non_finite_feature"


#: The codes a job stopped by a diagnosis (stop_reason "diagnosis") can fail with.
DIAGNOSIS_CODES = frozenset({JobError.LR_TOO_SMALL, JobError.DIVERGED, JobError.LOSS_ACTIVATION_MISMATCH,
                             JobError.NON_FINITE_FEATURE})


MEANINGS: dict[JobError, str] = {
    JobError.DATASET_UNAVAILABLE: "The job's data set was deleted before the job started, or could not be read.",
    JobError.TRAINING_ERROR: "Building, compiling, training or evaluating the model raised an error; the message "
                             "names the exception and its first line.",
    JobError.NAN_LOSS: "The loss became NaN or infinite, in the preflight steps or during training.",
    JobError.NO_GRADIENTS: "Preflight found that no trainable variable gets a gradient, so nothing can learn.",
    JobError.NO_CHECKPOINT: "The run stopped (at its time limit) before any epoch completed, so there is no "
                            "checkpoint.",
    JobError.CHECKPOINT_UNAVAILABLE: "The best checkpoint could not be stored with the recorded SHA-256, or was lost "
                                     "or damaged in the store with no copy left to store again.",
    JobError.WORKER_LOST: "Workers died while training the job `max_attempts` times (killed, out of memory, "
                          "machine gone); it is not retried again.",
    JobError.WORKER_ERROR: "The worker failed outside training itself (reading the resume backup, an "
                           "unexpected error); the message names the exception.",
    JobError.LR_TOO_SMALL: "Diagnosis (stop_reason diagnosis): the learning rate is too small to train, confirmed "
                           "on two consecutive epochs; the finding suggests a rate from the measured update ratios.",
    JobError.DIVERGED: "Diagnosis (stop_reason diagnosis): the loss grew by orders of magnitude on two "
                       "consecutive epochs (a NaN loss fails with nan_loss instead).",
    JobError.LOSS_ACTIVATION_MISMATCH: "Diagnosis (stop_reason diagnosis), before training: the loss and the "
                                       "final activation cannot learn together (softmax on one unit).",
    JobError.NON_FINITE_FEATURE: "Diagnosis (stop_reason diagnosis), before training: a feature holds NaN, "
                                 "infinity or values beyond float32's range, so the loss would be NaN.",
}
