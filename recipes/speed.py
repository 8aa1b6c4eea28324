"""Speed toggles: precision, XLA and steps per execution, resolved for the machine at hand.

A Recipe keeps `"auto"` (so `recipe.json` redoes a run on any machine); `resolve` turns the three
fields into what this machine runs, before anything is built, and the run records the resolved
values in `metrics.json` (`speed`). The rules:

- `precision="auto"`: `mixed_float16` on a GPU of compute capability 7.0 or more (tensor cores),
  else `float32`. `mixed_float16` without such a GPU is an error: on a CPU float16 is emulated
  and slower than float32 (`mixed_bfloat16` is the CPU-friendly mixed policy).
- `jit_compile="auto"`: XLA on a GPU (and always on JAX, which compiles with XLA anyway), off on
  a CPU with TensorFlow, where it measured 1.5x to 8x slower (BENCHMARKS.md).
- `grappler="auto"`: TensorFlow's graph optimizer (Grappler) on, except for short runs on a CPU
  (at most `SHORT_RUN_STEPS` optimizer steps): there optimizing each traced graph takes longer
  than it saves (bare `recipes train`, 184 steps: 45.7 s -> 34.0 s, same accuracy), while a
  1,000-step MNIST run was faster with it (94.6 s against 113.9 s; BENCHMARKS.md). Other
  backends have no Grappler; the value is then recorded as False.
- `steps_per_execution="auto"`: several steps per compiled call on a GPU, where the per-step
  Python overhead is a large share of a small model's step; 1 on a CPU, where a step takes tens
  of milliseconds and looping inside the graph measured no faster. Never more than one step per
  call while a callback acts per batch (a one-cycle schedule, an LR finder): Keras calls batch
  hooks once per execution, so such a callback would see one batch in N.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc

from . import validation as v

__all__ = [
    "PRECISIONS",
    "Accelerator",
    "Speed",
    "accelerator",
    "resolve",
    "dtype_policy",
    "graph_optimizer",
    "frozen_survivors",
    "per_batch_callbacks",
]

#: `Recipe.precision` values.
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")

#: Tensor cores (fast float16) start with Volta, compute capability 7.0.
_FP16_CAPABILITY = (7, 0)

#: Runs of at most this many optimizer steps skip Grappler on a CPU (`grappler="auto"`).
SHORT_RUN_STEPS = 500

#: Steps per compiled call `"auto"` picks on a GPU (capped at the epoch's steps).
_GPU_STEPS_PER_EXECUTION = 32


@dataclasses.dataclass(frozen=True)
class Accelerator:
    """The device Keras trains on: `kind` is `"gpu"` or `"cpu"`; `compute_capability` is
    `(major, minor)` for an NVIDIA GPU, else None; `count` is the number of GPUs."""

    kind: str
    compute_capability: tuple | None = None
    count: int = 0


@dataclasses.dataclass(frozen=True)
class Speed:
    """What a run uses: the Keras dtype policy name, `jit_compile`, `steps_per_execution`,
    Grappler, and whether TensorFlow runs oneDNN's CPU kernels (`recipes.startup`)."""

    precision: str
    jit_compile: bool
    steps_per_execution: int
    grappler: bool = False
    onednn: bool | None = None  # TensorFlow's oneDNN CPU kernels (None on other backends)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _capability(text):
    try:
        return tuple(int(part) for part in str(text).split(".")[:2])
    except ValueError:
        return None


def accelerator() -> Accelerator:
    """The first GPU Keras' backend sees, or the CPU.

    Example:
        >>> recipes.speed.accelerator().kind
        'cpu'
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return Accelerator("cpu")
        details = tf.config.experimental.get_device_details(gpus[0])
        return Accelerator("gpu", details.get("compute_capability"), len(gpus))
    if backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            return Accelerator("cpu")
        return Accelerator("gpu", _capability(getattr(gpus[0], "compute_capability", "")), len(gpus))
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return Accelerator("cpu")
        return Accelerator("gpu", tuple(torch.cuda.get_device_capability(0)), torch.cuda.device_count())
    return Accelerator("cpu")


def _resolve_precision(precision, device):
    v.check_choice("precision", precision, PRECISIONS)
    fast_fp16 = device.kind == "gpu" and (device.compute_capability or (0, 0)) >= _FP16_CAPABILITY
    if precision == "auto":
        return "mixed_float16" if fast_fp16 else "float32"
    if precision == "mixed_float16" and device.kind != "gpu":
        raise ValueError(
            "precision='mixed_float16' needs a GPU: on a CPU float16 is emulated and slower than "
            "float32; use precision='mixed_bfloat16' (fast on CPUs with bfloat16 support) or "
            "'float32'; Received: precision='mixed_float16' on a machine without a GPU"
        )
    return precision


def _resolve_jit(jit_compile, device):
    import keras

    if jit_compile == "auto":
        if keras.backend.backend() == "jax":
            return True
        return device.kind == "gpu" and keras.backend.backend() == "tensorflow"
    return bool(jit_compile)


def per_batch_callbacks(callbacks) -> list:
    """The callbacks that act on every batch (override a train-batch hook), by class name.

    Keras' own progress bar and NaN check are left out: they stay correct when called once per
    execution (the bar shows the last batch; a NaN loss stays NaN).
    """
    import keras

    base = keras.callbacks.Callback
    safe = (keras.callbacks.ProgbarLogger, keras.callbacks.TerminateOnNaN, keras.callbacks.History)
    epoch_savers = (keras.callbacks.BackupAndRestore, keras.callbacks.ModelCheckpoint)
    hooks = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
    found = []
    for callback in callbacks:
        if isinstance(callback, safe) or getattr(callback, "steps_per_execution_safe", False):
            continue
        if isinstance(callback, epoch_savers) and getattr(callback, "save_freq", None) == "epoch":
            continue
        if any(getattr(type(callback), hook, None) is not getattr(base, hook) for hook in hooks):
            found.append(type(callback).__name__)
    return found


def _resolve_steps(steps_per_execution, device, steps_per_epoch, callbacks):
    per_batch = per_batch_callbacks(callbacks)
    if steps_per_execution == "auto":
        if per_batch or device.kind != "gpu":
            return 1
        return max(1, min(_GPU_STEPS_PER_EXECUTION, steps_per_epoch or 1))
    v.check_int("steps_per_execution", steps_per_execution, 1)
    if steps_per_execution > 1 and per_batch:
        raise ValueError(
            f"steps_per_execution={steps_per_execution} runs several batches per call, but "
            f"{', '.join(per_batch)} acts on every batch and would see one batch in "
            f"{steps_per_execution}; use steps_per_execution=1 or 'auto'; "
            f"Received: steps_per_execution={steps_per_execution}"
        )
    return steps_per_execution


def _resolve_grappler(grappler, device, total_steps):
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    if grappler == "auto":
        short = total_steps is not None and total_steps <= SHORT_RUN_STEPS
        return device.kind == "gpu" or not short
    return bool(grappler)


def resolve(precision="auto", jit_compile="auto", steps_per_execution="auto", grappler="auto", *,
            steps_per_epoch=None, epochs=None, callbacks=(), device=None) -> Speed:
    """The precision, XLA flag and steps per execution a run uses on this machine.

    Args:
        precision: `"auto"` (default), `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`.
        jit_compile: `"auto"` (default), True or False.
        steps_per_execution: `"auto"` (default) or an int >= 1.
        grappler: `"auto"` (default), True or False: TensorFlow's graph optimizations.
        steps_per_epoch: Training steps per epoch (caps the automatic choice).
        epochs: Epochs of the run (with `steps_per_epoch`, tells a short run for `grappler`).
        callbacks: The run's callbacks (per-batch ones force one step per call).
        device: An `Accelerator` (default: `accelerator()`).

    Returns:
        A `Speed`.

    Raises:
        ValueError: An unknown precision (closest matches), `mixed_float16` without a GPU,
            `steps_per_execution` < 1, or > 1 with a per-batch callback.

    Example:
        >>> recipes.speed.resolve()
        Speed(precision='float32', jit_compile=False, steps_per_execution=1, grappler=True, onednn=True)
    """
    device = device if device is not None else accelerator()
    return Speed(
        precision=_resolve_precision(precision, device),
        jit_compile=_resolve_jit(jit_compile, device),
        steps_per_execution=_resolve_steps(steps_per_execution, device, steps_per_epoch, callbacks),
        grappler=_resolve_grappler(
            grappler, device, steps_per_epoch * epochs if steps_per_epoch and epochs else None),
        onednn=_onednn(),
    )


def _onednn():
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    from .startup import onednn_enabled

    return onednn_enabled()


@contextlib.contextmanager
def dtype_policy(name):
    """Builds layers under Keras' dtype policy `name` (`"mixed_bfloat16"`, ...), then restores
    the previous global policy, so one mixed model does not make every later model mixed.

    Example:
        >>> with recipes.speed.dtype_policy("mixed_bfloat16"):
        ...     model = recipes.build_classifier("mobilenet_v3_small", 10, input_shape=(32, 32, 3))
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def graph_optimizer(enabled: bool):
    """Runs the block with TensorFlow's Grappler meta-optimizer on or off, then restores the
    previous setting (graphs traced inside keep theirs). A no-op on other backends.

    Example:
        >>> with recipes.speed.graph_optimizer(False):
        ...     model.fit(ds, epochs=2)
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    key = "disable_meta_optimizer"
    previous = tf.config.optimizer.get_experimental_options().get(key, False)
    tf.config.optimizer.set_experimental_options({key: not enabled})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({key: previous})


class frozen_survivors:
    """Keeps the objects that outlive each run out of later garbage collections, for a process
    that trains run after run (a tuner's trials).

    TensorFlow keeps a trained model's traced graphs alive after the model is gone (about 200k
    Python objects for a MobileNetV3-Small `fit`, `clear_session()` or not: tf-keras#286,
    tensorflow#61791), and `keras.backend.clear_session()` runs a full collection, which walks
    every earlier run's graphs again: the collections grow with each run. `collected()` collects
    the finished run's garbage, then freezes what survived (`gc.freeze`), so later collections
    skip it. Leaving the block unfreezes it again, unless something had frozen objects before
    the block began (their owner decides).

    Returns (from `with`): the scope; call `scope.collected()` after each run.

    Example:
        >>> with recipes.speed.frozen_survivors() as scope:
        ...     for trial in trials:
        ...         train(trial)
        ...         keras.backend.clear_session()
        ...         scope.collected()
    """

    def __enter__(self):
        self._owner = gc.get_freeze_count() == 0
        return self

    def collected(self):
        """Collects the garbage now, then moves every survivor out of later collections."""
        gc.collect()
        gc.freeze()

    def __exit__(self, *exc):
        if self._owner:
            gc.unfreeze()
        return False
