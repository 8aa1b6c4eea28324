"""`recipes bench`: inference latency and throughput (and optionally training speed) per backbone."""

from __future__ import annotations

import csv
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from .registry import backbone_info

__all__ = ["benchmark", "add_bench_parser"]


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
        backbones: Registry names (default `("mobilenet_v3_small",)`).
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
        ValueError: Unknown backbone or bad sizes (from the registry and builder checks).

    Example:
        >>> recipes.bench.benchmark(["mobilenet_v3_small", "resnet50"], image_size=64)
    """
    import keras

    from .builder import build_classifier

    rows = []
    for name in backbones:
        spec = backbone_info(name)
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


def _cmd_bench(args):
    names = [n.strip() for n in args.backbones.split(",") if n.strip()]
    for name in names:
        backbone_info(name)  # unknown names fail before any model is built
    rows = benchmark(
        names, image_size=args.image_size, batch_size=args.batch_size, repeats=args.repeats,
        train=args.train,
    )
    keys = list(rows[0])
    print(f"# {machine_description()}")
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        print(f"written: {path}")
    return 0


def add_bench_parser(subparsers):
    """Registers `recipes bench`."""
    p = subparsers.add_parser("bench", help="latency/throughput per backbone on this machine")
    p.add_argument("--backbones", default="mobilenet_v3_small,mobilenet_v2,efficientnet_b0,resnet50",
                   help="comma-separated registry names")
    p.add_argument("--image-size", type=int, help="default: each backbone's default size")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--train", action="store_true", help="also time training steps")
    p.add_argument("--out", help="write the table as CSV")
    p.set_defaults(func=_cmd_bench)
    return p
