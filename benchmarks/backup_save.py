"""CPU seconds of one per-epoch backup of the default model plus Adam: Keras' `save_weights`
against the resilient backup's `write_state`, three repeats each.

    python benchmarks/backup_save.py
"""

import os
import tempfile
import time

import recipes
from callbacks.resilience import write_state


def main():
    model = recipes.build_classifier("mobilenet_v3_small", 10, image_size=32, weights=None,
                                     input_shape=(8, 8, 1))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    variables = [*model.weights, *model.optimizer.variables]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            start = time.process_time()
            model.save_weights(os.path.join(tmp, "a.weights.h5"))
            keras_s = time.process_time() - start
            start = time.process_time()
            write_state(os.path.join(tmp, "b.weights.h5"), variables)
            ours_s = time.process_time() - start
            print(f"{len(variables)} arrays: save_weights {keras_s:.3f} CPU s, "
                  f"write_state {ours_s:.3f} CPU s")


if __name__ == "__main__":
    main()
