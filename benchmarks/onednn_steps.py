"""Training ms/step of one classifier with oneDNN on or off (set before TensorFlow is imported).

Run each setting in its own process, e.g.:
    TF_ENABLE_ONEDNN_OPTS=1 python benchmarks/onednn_steps.py mobilenet_v3_small 32 64
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/onednn_steps.py mobilenet_v3_small 32 64
An optional fourth argument is the Keras dtype policy (default float32), e.g. mixed_bfloat16.
Prints one JSON line: the first `train_on_batch` (tracing) and the mean of the timed ones.
"""

import json
import os
import sys
import time

import numpy as np

import recipes
from recipes.speed import dtype_policy


def main():
    backbone, size, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    precision = sys.argv[4] if len(sys.argv) > 4 else "float32"
    with dtype_policy(precision):
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
                      "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "precision": precision,
                      "first_s": round(first, 2),
                      "step_ms": round((time.time() - start) / n * 1000, 1)}))


if __name__ == "__main__":
    main()
