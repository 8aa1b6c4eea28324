"""Inference latency and throughput (and optionally training speed) per backbone (`recipes bench`)."""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np

from . import validation as v
from .registry import backbone_info

__all__ = ["benchmark", "machine_description"]


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
        train: Also time `train_on_batch` (default False).
        num_classes: Classifier width (default 10).
        alpha: Width multiplier for MobileNets.

    Returns:
        A list of dicts: backbone, image_size, params, latency_ms (batch 1, median),
        images_per_second (at `batch_size`), and train_images_per_second when `train`.

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
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            labels = rng.integers(0, num_classes, (batch_size,))
            for _ in range(warmup):
                model.train_on_batch(batch, labels)
            step = statistics.median(
                _timed(model.train_on_batch, max(3, repeats // 2), batch, labels)
            )
            row["train_images_per_second"] = round(batch_size / step, 1)
        rows.append(row)
        keras.backend.clear_session()
    return rows


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
