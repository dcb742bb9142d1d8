"""The bare baseline of bench/service_overhead.py: a plain Keras script, as a user would write it.

It pays its own Python start and TensorFlow import, loads the same `.npz` the service trains on, and
fits the same 784-128-10 MLP (adam, batch 128, shuffled, 3 epochs). Prints one JSON line with the fit
call's seconds and the script's own seconds from its first line. Run: ``python bench/bare_fit.py DATA.npz``.
"""
import time

BEGAN = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main(path: str, epochs: int = 3, batch: int = 128) -> None:
    with np.load(path, allow_pickle=False) as arrays:
        x, y = arrays["x_train"], arrays["y_train"]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(shape=(x.shape[1],)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(int(y.max()) + 1, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fit_began = time.perf_counter()
    history = model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    fit_seconds = time.perf_counter() - fit_began
    print(json.dumps({"fit_seconds": round(fit_seconds, 4),
                      "script_seconds": round(time.perf_counter() - BEGAN, 4),
                      "loss": [round(v, 4) for v in history.history["loss"]]}))


if __name__ == "__main__":
    main(sys.argv[1])
