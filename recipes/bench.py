"""Inference latency and throughput (and optionally training speed) per backbone (`recipes bench`)."""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np

from . import validation as v
from .registry import backbone_info

__all__ = ["benchmark", "machine_description", "forward_flops", "matmul_peak_gflops"]


def _timed(fn, repeats, *args):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return times


def benchmark(
    backbones=("mobilenet_v3_small",),
    *,
    image_size=None,
    batch_size=32,
    repeats=10,
    warmup=2,
    train=False,
    num_classes=10,
    alpha=None,
    passes=1,
):
    """Measures latency and throughput of `build_classifier` models on this machine.

    Each model is built with random weights (speed does not depend on the values), warmed up
    (graph tracing excluded), then timed on uint8 input as it would be served.

    Args:
        backbones: Registry names, or one comma-separated string (default
            `("mobilenet_v3_small",)`).
        image_size: Side the backbone sees (default: each backbone's default size).
        batch_size: Batch for the throughput and training measurements (default 32).
        repeats: Timed calls per measurement (default 10); the median is reported.
        warmup: Untimed calls first (default 2).
        train: Also time training (default False): images/s of the trainer's setup and of a
            plain `model.fit` of the same model in the same run (`train_ratio` = ours / plain),
            the first step's seconds (tracing) of each, forward GFLOPs per image and the
            fraction of this machine's measured matmul peak that training reaches.
        num_classes: Classifier width (default 10).
        alpha: Width multiplier for MobileNets.
        passes: With `train`, how many times each side trains, taking turns at going first;
            each side's best pass counts (default 1: ours, then plain, once).

    Returns:
        A list of dicts: backbone, image_size, params, latency_ms (batch 1, median),
        images_per_second (at `batch_size`); with `train` also train_images_per_second,
        first_step_s, plain_fit_images_per_second, plain_first_step_s, train_ratio,
        train_passes, gflops_per_image, matmul_peak_gflops, peak_fraction.

    Raises:
        ValueError: An unknown backbone, no backbone, or a bad size or count (all checked before
            any model is built).

    Example:
        >>> recipes.bench.benchmark(["mobilenet_v3_small", "resnet50"], image_size=64)
    """
    import keras

    from .builder import build_classifier

    if isinstance(backbones, str):
        backbones = [n.strip() for n in backbones.split(",") if n.strip()]
    specs = [backbone_info(name) for name in backbones]
    if not specs:
        raise ValueError(f"benchmark needs at least one backbone; Received: backbones={backbones!r}")
    v.check_int("image_size", image_size, 1, allow_none=True)
    v.check_int("batch_size", batch_size, 1)
    v.check_int("repeats", repeats, 1)
    v.check_int("warmup", warmup, 0)
    v.check_int("num_classes", num_classes, 1)
    v.check_int("passes", passes, 1)
    peak = matmul_peak_gflops() if train else None
    rows = []
    for spec in specs:
        size = image_size or spec.default_size
        model = build_classifier(
            spec.name, num_classes, image_size=size, input_shape=(size, size, 3),
            alpha=alpha if spec.alphas else None,
        )
        rng = np.random.default_rng(0)
        one = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        batch = rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8)
        for _ in range(warmup):
            model.predict_on_batch(one)
            model.predict_on_batch(batch)
        latency = statistics.median(_timed(model.predict_on_batch, repeats, one))
        per_batch = statistics.median(_timed(model.predict_on_batch, repeats, batch))
        row = {
            "backbone": spec.name,
            "image_size": size,
            "params": model.count_params(),
            "latency_ms": round(latency * 1000, 2),
            "images_per_second": round(batch_size / per_batch, 1),
        }
        if train:
            row.update(_train_speed(spec, size, num_classes, batch_size, repeats, warmup, alpha,
                                    peak=peak, passes=passes))
        rows.append(row)
        keras.backend.clear_session()
    return rows


class _StepClock:
    """Wall time at the end of every training batch (steady state = after the warm-up ones)."""

    def __init__(self):
        import keras

        clock = self

        class Clock(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                clock.start, clock.ends = time.perf_counter(), []

            def on_train_batch_end(self, batch, logs=None):
                clock.ends.append(time.perf_counter())

        self.callback = Clock()

    def images_per_second(self, batch_size, warmup):
        ends = self.ends[warmup:]
        return batch_size * (len(ends) - 1) / (ends[-1] - ends[0])

    @property
    def first_step(self):
        return self.ends[0] - self.start


def _train_speed(spec, size, num_classes, batch_size, repeats, warmup, alpha, *, peak, passes=1):
    """Training images/s of the trainer's setup next to a plain `model.fit` of the same model.

    Ours: `compile_classifier` (its metrics, Adam), `recipes.speed.resolve`'s toggles and the
    training state built before the first trace, on a tf.data pipeline. Plain: the same model
    compiled as the Keras guides do (`"adam"`, `"sparse_categorical_crossentropy"`,
    `["accuracy"]`) and fitted on numpy arrays. Both on the same random images; the first
    `warmup` steps (tracing) are left out of images/s and reported as `first_step_s`. With
    `passes` > 1 the two take turns going first (ours, plain; then plain, ours; ...), each
    side's best pass counts (as `timeit` takes the best), and the first steps are each side's
    first pass.
    """
    import keras

    from .builder import build_classifier
    from .speed import resolve

    steps = warmup + max(5, repeats) + 1
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (batch_size * steps, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, num_classes, (batch_size * steps,))

    def build():
        keras.utils.set_random_seed(0)
        return build_classifier(spec.name, num_classes, image_size=size, input_shape=(size, size, 3),
                                alpha=alpha if spec.alphas else None)

    speed = resolve(steps_per_epoch=steps)
    runs = {"ours": [], "plain": []}
    flops = None
    for i in range(passes):
        for side in (("ours", "plain") if i % 2 == 0 else ("plain", "ours")):
            model = build()
            if side == "ours":
                runs[side].append(_fit_ours(model, x, y, num_classes, batch_size, warmup, speed))
                flops = flops or forward_flops(model, size)
            else:
                runs[side].append(_fit_plain(model, x, y, batch_size, warmup))
            keras.backend.clear_session()
    ours, theirs = (max(rate for rate, _ in runs[side]) for side in ("ours", "plain"))
    out = {"train_images_per_second": round(ours, 1), "first_step_s": round(runs["ours"][0][1], 1),
           "plain_fit_images_per_second": round(theirs, 1),
           "plain_first_step_s": round(runs["plain"][0][1], 1), "train_ratio": round(ours / theirs, 2),
           "train_passes": passes}
    if flops:
        out["gflops_per_image"] = round(flops / 1e9, 3)
        if peak:
            out["matmul_peak_gflops"] = round(peak, 1)
            # A training step costs about three forward passes (forward, two backward products).
            out["peak_fraction"] = round(3 * flops * ours / (peak * 1e9), 3)
    return out


def _fit_ours(model, x, y, num_classes, batch_size, warmup, speed):
    """One epoch as `train` sets it up; returns (steady images/s, first step s)."""
    import keras

    from .training import compile_classifier, make_optimizer

    compile_classifier(model, num_classes, optimizer=make_optimizer("adam"),
                       jit_compile=speed.jit_compile, steps_per_execution=speed.steps_per_execution)
    clock = _StepClock()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        from .compat import build_training_state

        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(2)
        build_training_state(model, ds.element_spec)
        model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[clock.callback])
    else:
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[clock.callback])
    rate = clock.images_per_second(batch_size * speed.steps_per_execution,
                                   max(1, warmup // speed.steps_per_execution))
    return rate, clock.first_step


def _fit_plain(model, x, y, batch_size, warmup):
    """One epoch of a plain `compile` + `fit` on numpy; returns (steady images/s, first step s)."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clock = _StepClock()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[clock.callback])
    return clock.images_per_second(batch_size, max(1, warmup)), clock.first_step


def forward_flops(model, size) -> float | None:
    """FLOPs of one forward pass on one image, counted by TensorFlow's profiler (None on other
    backends, or when the profiler counts nothing)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    fn = tf.function(lambda images: model(images, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1, size, size, model.input_shape[-1]), tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op",
                                         options=options)
    return float(info.total_float_ops) or None


def matmul_peak_gflops(n=1024, repeats=5) -> float:
    """This machine's float32 matmul rate in GFLOP/s (best of `repeats` n x n products through
    the Keras backend), the reference for `peak_fraction`."""
    import keras

    a = keras.ops.convert_to_tensor(np.random.default_rng(0).random((n, n), dtype=np.float32))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))  # warm-up
    best = min(_timed(lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, a)), repeats))
    return 2 * n**3 / best / 1e9


def machine_description() -> str:
    """One line naming the machine a benchmark ran on."""
    import os

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    device = f"{len(gpus)} GPU(s)" if gpus else "no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {device}, "
        f"TensorFlow {tf.__version__}"
    )
