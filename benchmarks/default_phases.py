"""Where bare `recipes train`'s wall time goes: imports, set-up, first step, epochs, validation, the end.

Runs the default job (digits, the default recipe) through `recipes.train` in this process with a
callback that stamps the time of each phase, and wraps `RunFolder.finish` (model, curves,
metrics). Prints one JSON line of seconds. Set `TF_ENABLE_ONEDNN_OPTS` in the environment to
compare kernels (TensorFlow reads it when it is imported):

    python benchmarks/default_phases.py
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/default_phases.py
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/default_phases.py 0 augmentation=translation:0.1
"""

import ast
import json
import sys
import tempfile
import time

START = time.time()

import keras  # noqa: E402

import recipes  # noqa: E402
from recipes.run import RunFolder  # noqa: E402

IMPORTED = time.time()


class Stamps(keras.callbacks.Callback):
    """Times of the first step, each epoch's end and the validation passes."""

    def __init__(self):
        super().__init__()
        self.first_batch = None
        self.epoch_ends, self.test_seconds = [], []
        self._test_start = None

    def on_train_begin(self, logs=None):
        self.train_begin = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self.first_batch is None:
            self.first_batch = time.time()

    def on_test_begin(self, logs=None):
        self._test_start = time.time()

    def on_test_end(self, logs=None):
        self.test_seconds.append(time.time() - self._test_start)

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(time.time())

    def on_train_end(self, logs=None):
        self.train_end = time.time()


def main():
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    changes = {}  # FIELD=VALUE arguments after the seed: other Recipe fields
    for arg in sys.argv[2:]:
        field, value = arg.split("=", 1)
        try:
            changes[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):  # a plain string such as idx:../shared/data/mnist
            changes[field] = value
    stamps, finish = Stamps(), {}
    original = RunFolder.finish

    def timed_finish(self, *args, **kwargs):
        begin = time.time()
        try:
            return original(self, *args, **kwargs)
        finally:
            finish["seconds"] = time.time() - begin

    RunFolder.finish = timed_finish
    with tempfile.TemporaryDirectory() as out:
        called = time.time()
        result = recipes.train(out=out, seed=seed, callbacks=[stamps], verbose=0,
                               **changes)
        done = time.time()
    epochs = [b - a for a, b in zip([stamps.first_batch] + stamps.epoch_ends, stamps.epoch_ends)]
    print(json.dumps({
        "test_accuracy": round(result.metrics["test_accuracy"], 4),
        "onednn": result.metrics["speed"]["onednn"],
        "import_s": round(IMPORTED - START, 1),
        "data_build_compile_s": round(stamps.train_begin - called, 1),
        "first_step_s": round(stamps.first_batch - stamps.train_begin, 1),
        "rest_of_epoch_1_s": round(epochs[0], 1),
        "epochs_2_on_s": round(sum(epochs[1:]), 1),
        "validation_s": [round(s, 2) for s in stamps.test_seconds],
        "after_fit_s": round(done - stamps.train_end, 1),
        "of_which_finish_s": round(finish.get("seconds", 0.0), 1),
        "total_s": round(done - START, 1),
    }))


if __name__ == "__main__":
    main()
