"""GPU training speed of `build_classifier` models under Keras' JAX backend (no TensorFlow).

Run by `benchmarks/gpu.sh` on the accelerator machine. For each backbone it builds the model
under each dtype policy (`recipes.speed.dtype_policy`), compiles it with `compile_classifier`
and the toggles `recipes.speed.resolve` picks for the device, and times `fit` on random uint8
images already in memory (the input pipeline is not measured). Then one short real run: digits
(scikit-learn, when installed) at 32 px, to a test accuracy. Writes `gpu.json` and prints a
markdown table.

    KERAS_BACKEND=jax python benchmarks/gpu_bench.py --out OUT
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

import recipes
from recipes.speed import accelerator, dtype_policy, resolve
from recipes.training import compile_classifier, make_optimizer

JOBS = (("resnet50", 224, 256), ("efficientnet_b0", 224, 256), ("mobilenet_v3_large", 224, 256))
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


class Clock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def images_per_second(backbone, size, batch, policy, steps, warmup):
    keras.utils.set_random_seed(0)
    with dtype_policy(policy):
        model = recipes.build_classifier(backbone, 1000, input_shape=(size, size, 3), image_size=size)
    speed = resolve(policy, steps_per_execution=1)
    compile_classifier(model, 1000, optimizer=make_optimizer("sgd", 0.01), jit_compile=speed.jit_compile)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * (steps + warmup), size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 1000, (len(x),))
    clock = Clock()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    ends = clock.ends[warmup - 1:]
    rate = batch * (len(ends) - 1) / (ends[-1] - ends[0])
    keras.backend.clear_session()
    return {"backbone": backbone, "image_size": size, "batch": batch, "precision": policy,
            "images_per_second": round(rate, 1), "first_steps_s": round(clock.ends[warmup - 1] - start, 1)}


def digits_run(epochs):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.round(d.images * 255 / 16).astype("uint8")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(x, d.target, test_size=0.2, stratify=d.target,
                                                        random_state=0)
    keras.utils.set_random_seed(0)
    model = recipes.build_classifier("mobilenet_v3_small", 10, input_shape=(8, 8, 1), image_size=32)
    steps = int(np.ceil(len(x_train) / 64))
    import callbacks

    schedule = callbacks.make_schedule("cosine", 5e-3, epochs=epochs, steps_per_epoch=steps, warmup_epochs=1)
    compile_classifier(model, 10, optimizer=make_optimizer("adam", schedule))
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)[:2]
    return {"job": f"digits, mobilenet_v3_small 32 px, {epochs} epochs", "test_accuracy": round(float(accuracy), 4),
            "fit_s": round(seconds, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    device = accelerator()
    rows = []
    for backbone, size, batch in JOBS:
        for policy in POLICIES:
            try:
                rows.append(images_per_second(backbone, size, batch, policy, args.steps, args.warmup))
            except Exception as exc:  # a policy the device cannot run is a result, not a crash
                rows.append({"backbone": backbone, "precision": policy, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(json.dumps(rows[-1]), flush=True)
    try:
        real = digits_run(8)
    except ImportError as exc:
        real = {"skipped": str(exc)}
    print(json.dumps(real), flush=True)
    report = {"device": str(device), "backend": keras.backend.backend(), "keras": keras.__version__,
              "throughput": rows, "real_run": real}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu.json").write_text(json.dumps(report, indent=1))
    print("| backbone | px | batch | precision | images/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backbone']} | {row.get('image_size', '')} | {row.get('batch', '')} | {row['precision']} | "
              f"{row.get('images_per_second', row.get('error', ''))} |")


if __name__ == "__main__":
    main()
