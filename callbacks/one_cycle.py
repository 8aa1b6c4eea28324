"""One-cycle policy (Smith 2018; fastai ``fit_one_cycle``) as schedule and callback."""

import math
import warnings

import keras
from keras import ops

from callbacks.schedules import (
    ScheduleCallback,
    check_number,
    check_positive_int,
)


def _check_one_cycle(max_lr, pct_start, div, div_final):
    check_number("max_lr", max_lr, low=0, low_open=True)
    check_number("pct_start", pct_start, low=0, high=1, low_open=True, high_open=True)
    check_number("div", div, low=0, low_open=True)
    check_number("div_final", div_final, low=0, low_open=True)


def one_cycle_value(step, total_steps, pct_start, start, peak, end):
    """Float version of the one-cycle curve (used for momentum and in tests).

    Cosine from ``start`` to ``peak`` over the first ``pct_start`` of the
    steps, then cosine from ``peak`` to ``end``; clamped at ``end`` after
    ``total_steps``.
    """
    up = pct_start * total_steps
    if step < up:
        return peak + (start - peak) * (1 + math.cos(math.pi * step / up)) / 2
    pos = min((step - up) / (total_steps - up), 1.0)
    return end + (peak - end) * (1 + math.cos(math.pi * pos)) / 2


@keras.saving.register_keras_serializable(package="callbacks")
class OneCycleSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One-cycle learning-rate schedule (fastai ``fit_one_cycle`` defaults).

    Over the first ``pct_start * total_steps`` steps the LR rises from
    ``max_lr / div`` to ``max_lr`` along a half cosine, then anneals along a
    half cosine to ``max_lr / div_final``; it stays there after
    ``total_steps``.

    Args:
        max_lr: float > 0, the peak learning rate.
        total_steps: int >= 2, number of optimizer steps in the cycle.
        pct_start: float in (0, 1), default 0.25. Fraction spent going up.
        div: float > 0, default 25.0. ``start_lr = max_lr / div``.
        div_final: float > 0, default 1e5. ``final_lr = max_lr / div_final``.
        name: str, default ``"OneCycle"``.

    Returns:
        A serializable ``LearningRateSchedule``.

    Raises:
        ValueError: On out-of-range arguments.

    Example:
        >>> lr = OneCycleSchedule(1e-2, total_steps=10 * 100)
        >>> optimizer = keras.optimizers.Adam(learning_rate=lr)
    """

    def __init__(
        self, max_lr, total_steps, pct_start=0.25, div=25.0, div_final=1e5, name="OneCycle"
    ):
        super().__init__()
        _check_one_cycle(max_lr, pct_start, div, div_final)
        check_positive_int("total_steps", total_steps, minimum=2)
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div = float(div)
        self.div_final = float(div_final)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        total = float(self.total_steps)
        up = self.pct_start * total
        start, peak, end = self.max_lr / self.div, self.max_lr, self.max_lr / self.div_final
        rising = peak + (start - peak) * (1.0 + ops.cos(math.pi * step / up)) / 2.0
        pos = ops.minimum((step - up) / (total - up), 1.0)
        falling = end + (peak - end) * (1.0 + ops.cos(math.pi * pos)) / 2.0
        return ops.where(step < up, rising, falling)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "pct_start": self.pct_start,
            "div": self.div,
            "div_final": self.div_final,
            "name": self.name,
        }


def _momentum_attribute(optimizer):
    if hasattr(optimizer, "beta_1"):
        return "beta_1"
    momentum = getattr(optimizer, "momentum", None)
    if isinstance(momentum, (int, float)) and momentum > 0:
        return "momentum"
    return None


class _HyperVariable(keras.Variable):
    """Non-trainable variable standing in for a float optimizer hyperparameter.

    SGD and RMSprop test ``momentum != 0`` / ``momentum > 0`` in Python while
    tracing; a variable would make that a symbolic bool. One-cycle momentum is
    always > 0, so those comparisons against zero can be answered statically
    while arithmetic still reads the live value at every step.
    """

    def __ne__(self, other):
        if isinstance(other, (int, float)) and other == 0:
            return True
        return super().__ne__(other)

    def __gt__(self, other):
        if isinstance(other, (int, float)) and other == 0:
            return True
        return super().__gt__(other)


@keras.saving.register_keras_serializable(package="callbacks")
class OneCycle(ScheduleCallback):
    """One-cycle LR *and* inverse momentum, updated every step.

    The LR follows :class:`OneCycleSchedule`; momentum (``beta_1`` for the
    Adam family, ``momentum`` for SGD/RMSprop with momentum > 0) follows the
    inverse cycle ``moms[0] -> moms[1] -> moms[2]`` with the same cosine
    phases. If the optimizer's learning rate is already a
    ``LearningRateSchedule`` (e.g. from ``make_schedule("onecycle", ...)``)
    the callback leaves the LR to it and only cycles momentum.

    During ``fit`` the momentum attribute is swapped for a non-trainable
    variable (so the compiled step reads the new value without retracing) and
    restored to a float at the end of training; the optimizer's ``get_config``
    keeps reporting a float meanwhile, so mid-training checkpoints stay
    loadable. Momentum cycling needs a backend whose train step reads Python
    attributes at trace time as live variables (TensorFlow, torch); on JAX the
    value is frozen at trace time.

    Args:
        max_lr: float > 0, the peak learning rate.
        epochs: int > 0, epochs in the cycle.
        steps_per_epoch: int or None, default None (taken from ``fit``).
        pct_start: float in (0, 1), default 0.25.
        div: float > 0, default 25.0.
        div_final: float > 0, default 1e5.
        moms: 3 floats in (0, 1), default (0.95, 0.85, 0.95).
        cycle_momentum: bool, default True.
        verbose: int, default 0.

    Returns:
        A ``keras.callbacks.Callback``; ``as_schedule(steps_per_epoch)`` gives
        the :class:`OneCycleSchedule`.

    Raises:
        ValueError: On out-of-range arguments.

    Example:
        >>> model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        >>> model.fit(ds, epochs=5, callbacks=[OneCycle(1e-2, epochs=5)])
    """

    _requires_settable_lr = False

    def __init__(
        self,
        max_lr,
        epochs,
        steps_per_epoch=None,
        pct_start=0.25,
        div=25.0,
        div_final=1e5,
        moms=(0.95, 0.85, 0.95),
        cycle_momentum=True,
        verbose=0,
    ):
        _check_one_cycle(max_lr, pct_start, div, div_final)
        super().__init__(max_lr, per_step=True, steps_per_epoch=steps_per_epoch, verbose=verbose)
        check_positive_int("epochs", epochs)
        if (
            not isinstance(moms, (list, tuple))
            or len(moms) != 3
            or not all(isinstance(m, (int, float)) and 0 < m < 1 for m in moms)
        ):
            raise ValueError(f"moms must be 3 floats in (0, 1); Received: moms={moms!r}")
        self.max_lr = float(max_lr)
        self.epochs = int(epochs)
        self.pct_start = float(pct_start)
        self.div = float(div)
        self.div_final = float(div_final)
        self.moms = tuple(float(m) for m in moms)
        self.cycle_momentum = bool(cycle_momentum)
        self._swapped = None

    def _build(self, units_per_epoch):
        return OneCycleSchedule(
            self.max_lr,
            max(2, self.epochs * units_per_epoch),
            self.pct_start,
            self.div,
            self.div_final,
        )

    def momentum_at(self, step, total_steps):
        """Momentum at optimizer ``step`` of a ``total_steps`` cycle."""
        return one_cycle_value(step, total_steps, self.pct_start, *self.moms)

    # -- momentum plumbing ----------------------------------------------------
    def _install_momentum(self):
        optimizer = self.model.optimizer
        attr = _momentum_attribute(optimizer)
        if attr is None:
            warnings.warn(
                f"OneCycle: {type(optimizer).__name__} has no beta_1 or non-zero momentum, "
                "so only the learning rate is cycled.",
                stacklevel=2,
            )
            self._swapped = None
            return
        variable = _HyperVariable(self.moms[0], trainable=False, dtype="float32")
        original = getattr(optimizer, attr)
        original_get_config = optimizer.get_config

        def get_config():
            config = original_get_config()
            config[attr] = float(keras.ops.convert_to_numpy(variable))
            return config

        # object.__setattr__ bypasses the optimizer's variable tracking: the
        # stand-in must not become an optimizer variable (checkpoint layout).
        object.__setattr__(optimizer, attr, variable)
        object.__setattr__(optimizer, "get_config", get_config)
        self._swapped = (optimizer, attr, variable, original)
        # The train function may already be traced with the float baked in.
        self.model.make_train_function(force=True)

    def _restore_momentum(self):
        if self._swapped is None:
            return
        optimizer, attr, variable, _ = self._swapped
        object.__setattr__(optimizer, attr, float(keras.ops.convert_to_numpy(variable)))
        if "get_config" in optimizer.__dict__:
            object.__delattr__(optimizer, "get_config")
        self._swapped = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._total = self._spe * self.epochs
        if self.cycle_momentum:
            self._install_momentum()

    def on_train_batch_begin(self, batch, logs=None):
        super().on_train_batch_begin(batch, logs)
        if self.cycle_momentum:
            if self._swapped is not None and self._swapped[0] is not self.model.optimizer:
                # Another callback replaced the optimizer (e.g. GradualUnfreeze).
                self._restore_momentum()
                self._install_momentum()
            if self._swapped is not None:
                step = self._epoch * self._spe + batch
                self._swapped[2].assign(self.momentum_at(step, self._total))

    def on_train_end(self, logs=None):
        self._restore_momentum()

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "pct_start": self.pct_start,
            "div": self.div,
            "div_final": self.div_final,
            "moms": list(self.moms),
            "cycle_momentum": self.cycle_momentum,
            "verbose": self.verbose,
        }
