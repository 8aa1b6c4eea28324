"""Training ms/step of one classifier with oneDNN on or off (set before TensorFlow is imported).

Run each setting in its own process, e.g.:
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/onednn_steps.py mobilenet_v3_small 32 64
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/onednn_steps.py mobilenet_v3_small 32 64
Prints one JSON line: the first `train_on_batch` (tracing) and the mean of the timed ones.
"""

import json
import os
import sys
import time

import numpy as np

import recipes


def main():
    backbone, size, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    model = recipes.build_classifier(backbone, 10, image_size=size, weights=None,
                                     input_shape=(size, size, 3))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.RandomState(0).randint(0, 255, (batch, size, size, 3)).astype("uint8")
    y = np.arange(batch) % 10
    start = time.time()
    model.train_on_batch(x, y)
    first = time.time() - start
    for _ in range(2):
        model.train_on_batch(x, y)
    n = 12 if size <= 64 else 3
    start = time.time()
    for _ in range(n):
        model.train_on_batch(x, y)
    print(json.dumps({"backbone": backbone, "size": size, "batch": batch,
                      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "first_s": round(first, 2),
                      "step_ms": round((time.time() - start) / n * 1000, 1)}))


if __name__ == "__main__":
    main()
