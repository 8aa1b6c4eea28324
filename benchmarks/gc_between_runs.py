"""Garbage-collection time when one process trains model after model (a tuner's trials).

TensorFlow keeps every trained model's traced graphs alive (~200k Python objects for a
MobileNetV3-Small `fit`, even after `del model` and `clear_session()`: tf-keras#286,
tensorflow#61791), and `keras.backend.clear_session()` runs a full collection, so each trial's
collection walks every earlier trial's graphs again. `recipes.speed.frozen_survivors` moves the
survivors of each collection out of later ones. Run each mode in its own process:
    python benchmarks/gc_between_runs.py plain 8
    python benchmarks/gc_between_runs.py frozen 8
Prints one JSON line per run (seconds in full collections, live tracked objects) and a summary.
"""

import contextlib
import gc
import json
import sys
import time

import keras
import numpy as np

import recipes
from recipes.speed import frozen_survivors

_gc = {"start": 0.0, "seconds": 0.0}


def _clock(phase, info):
    if info["generation"] != 2:
        return
    if phase == "start":
        _gc["start"] = time.perf_counter()
    else:
        _gc["seconds"] += time.perf_counter() - _gc["start"]


def one_run(x, y):
    model = recipes.build_classifier("mobilenet_v3_small", 10, image_size=32, weights=None,
                                     input_shape=(32, 32, 1))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)


def main():
    mode, runs = sys.argv[1], int(sys.argv[2])
    x = np.random.RandomState(0).randint(0, 255, (64, 32, 32, 1)).astype("uint8")
    y = np.arange(64) % 10
    gc.callbacks.append(_clock)
    total = time.perf_counter()
    scope = frozen_survivors() if mode == "frozen" else None
    with scope or contextlib.nullcontext():
        for i in range(runs):
            before = _gc["seconds"]
            start = time.perf_counter()
            one_run(x, y)
            keras.backend.clear_session()  # what KerasTuner does before each trial's build
            if scope is not None:
                scope.collected()
            print(json.dumps({"mode": mode, "run": i, "wall_s": round(time.perf_counter() - start, 2),
                              "full_gc_s": round(_gc["seconds"] - before, 3),
                              "collected_objects": len(gc.get_objects()),
                              "frozen_objects": gc.get_freeze_count()}), flush=True)
    print(json.dumps({"mode": mode, "runs": runs, "wall_s": round(time.perf_counter() - total, 1),
                      "full_gc_s": round(_gc["seconds"], 2)}))


if __name__ == "__main__":
    main()
