"""Learning-rate decay callbacks (with warmup); `callbacks.factory.make_schedule` builds them by name.

Conventions used by every decay here (``e`` is the epoch index counted from
0, ``W`` the warmup length, ``lr`` the initial learning rate):

* step:        ``lr * drop ** floor((e - W) / every)``
* exponential: ``lr * rate ** (e - W)`` (``rate`` is the per-epoch factor,
  not ``exp(-k)``)
* time-based:  ``lr / (1 + decay * (e - W))``
* power:       ``lr * (1 - (e - W) / (E - W)) ** power`` (``E`` = epochs)
* linear:      power decay with ``power=1``
* cosine:      ``min_lr + (lr - min_lr) * (1 + cos(pi * (e - W) / (E - W))) / 2``
* warmup:      ``lr * (e + 1) / W`` for ``e < W``; the decay clock starts at
  ``e = W``.

With ``per_step=True`` (and in :meth:`as_schedule`) the same formulas are
evaluated at the fractional epoch ``global_step / steps_per_epoch``; warmup
then ramps per step: ``lr * (step + 1) / warmup_steps``.

The math is Keras' own ``keras.optimizers.schedules`` (ExponentialDecay,
InverseTimeDecay, PolynomialDecay, CosineDecay, CosineDecayRestarts,
PiecewiseConstantDecay); the classes here only glue them to epochs, warmup and
the optimizer.
"""


import keras

from callbacks.warmup import Warmup

_KS = keras.optimizers.schedules


# --------------------------------------------------------------------------- #
# Argument checks shared by the package.
# --------------------------------------------------------------------------- #
def check_positive_int(name, value, minimum=1):
    """Keras-style ValueError unless ``value`` is an int >= ``minimum``."""
    from recipes.validation import check_int  # lazy: recipes imports callbacks

    check_int(name, value, minimum)


def check_number(name, value, low=None, high=None, low_open=False, high_open=False):
    """Keras-style ValueError unless ``low <(=) value <(=) high`` (bounds closed by default)."""
    from recipes.validation import check_number as check

    check(name, value, low, high, low_open=low_open, high_open=high_open)


def _optimizers(model):
    optimizer = model.optimizer
    return list(getattr(optimizer, "optimizers", None) or [optimizer])


def has_settable_lr(optimizer):
    """True when the optimizer's learning rate is a plain (float) variable."""
    from recipes.compat import learning_rate_slot  # lazy: recipes imports callbacks

    return isinstance(learning_rate_slot(optimizer), keras.Variable)


def current_lr(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


# --------------------------------------------------------------------------- #
# Base class.
# --------------------------------------------------------------------------- #
class ScheduleCallback(keras.callbacks.Callback):
    """Base for callbacks that drive the optimizer's LR from a Keras schedule.

    Subclasses implement ``_decay(units_per_epoch, decay_units)`` returning the
    Keras schedule of the decay part, measured in units where one epoch is
    ``units_per_epoch`` units (1 in per-epoch mode, ``steps_per_epoch`` in
    per-step mode). Warmup and the optimizer plumbing live here so every decay
    behaves the same way. The LR is a pure function of (epoch, batch), so a
    run resumed by ``BackupAndRestore`` continues on the same curve.

    The LR logged as ``logs["learning_rate"]`` for an epoch is the one its
    first step used. With ``steps_per_execution > 1`` the per-step LR is set
    once per execution chunk.

    Args:
        initial_lr: float > 0.
        warmup_epochs: int >= 0, default 0.
        warmup_steps: int or None, default None (needs ``per_step=True``).
        per_step: bool, default False.
        steps_per_epoch: int or None, default None (taken from ``fit``).
        verbose: int, default 0.

    Raises:
        ValueError: On out-of-range arguments, or at ``on_train_begin`` when
            the optimizer's learning rate is a schedule (not settable) or the
            steps per epoch are unknown in per-step mode.
    """

    # OneCycle sets this to False: with a schedule inside the optimizer it only
    # cycles momentum.
    _requires_settable_lr = True
    # Number of epochs the schedule is defined over (None = unbounded).
    epochs = None

    def __init__(
        self,
        initial_lr,
        *,
        warmup_epochs=0,
        warmup_steps=None,
        per_step=False,
        steps_per_epoch=None,
        verbose=0,
    ):
        super().__init__()
        check_number("initial_lr", initial_lr, low=0, low_open=True)
        check_positive_int("warmup_epochs", warmup_epochs, minimum=0)
        if warmup_steps is not None:
            check_positive_int("warmup_steps", warmup_steps, minimum=0)
            if warmup_epochs:
                raise ValueError(
                    "Pass warmup_epochs or warmup_steps, not both; Received: "
                    f"warmup_epochs={warmup_epochs}, warmup_steps={warmup_steps}"
                )
            if not per_step:
                raise ValueError(
                    "warmup_steps needs per_step=True (per_step=False updates the LR once "
                    f"per epoch; use warmup_epochs); Received: warmup_steps={warmup_steps}"
                )
        if steps_per_epoch is not None:
            check_positive_int("steps_per_epoch", steps_per_epoch)
        self.initial_lr = float(initial_lr)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_steps = warmup_steps
        self.per_step = bool(per_step)
        self.steps_per_epoch = steps_per_epoch
        self.verbose = verbose
        self._active = None
        self._epoch = 0
        self._epoch_lr = None

    def _check_warmup_fits(self):
        if self.epochs is not None and self.warmup_epochs >= self.epochs:
            raise ValueError(
                "warmup_epochs must be smaller than epochs; Received: "
                f"warmup_epochs={self.warmup_epochs}, epochs={self.epochs}"
            )

    # -- schedule construction ------------------------------------------------
    def _decay(self, units_per_epoch, decay_units):
        raise NotImplementedError

    def _warmup_units(self, units_per_epoch):
        if self.warmup_steps is not None:
            return self.warmup_steps
        return self.warmup_epochs * units_per_epoch

    def _build(self, units_per_epoch):
        warmup = self._warmup_units(units_per_epoch)
        decay_units = None
        if self.epochs is not None:
            decay_units = self.epochs * units_per_epoch - warmup
            if decay_units < 1:
                raise ValueError(
                    "warmup must end before the schedule does; Received: "
                    f"warmup={warmup} steps, epochs * steps_per_epoch="
                    f"{self.epochs * units_per_epoch}"
                )
        schedule = self._decay(units_per_epoch, decay_units)
        return Warmup(schedule, warmup) if warmup else schedule

    def as_schedule(self, steps_per_epoch):
        """Return the per-step Keras ``LearningRateSchedule`` of this decay.

        The schedule is smooth (evaluated at ``step / steps_per_epoch``) except
        for decays that are staircase by definition (step decay); warmup ramps
        per step. It is registered serializable, so a model whose optimizer
        uses it survives ``model.save`` / ``keras.models.load_model``.

        Args:
            steps_per_epoch: int > 0.

        Returns:
            A ``keras.optimizers.schedules.LearningRateSchedule`` (a Keras
            schedule, wrapped in :class:`Warmup` when warmup is set).

        Raises:
            ValueError: If ``steps_per_epoch`` is not a positive int, or the
                warmup is not shorter than the schedule.

        Example:
            >>> lr = CosineDecay(0.1, epochs=30, warmup_epochs=2).as_schedule(100)
            >>> optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
        """
        check_positive_int("steps_per_epoch", steps_per_epoch)
        return self._build(steps_per_epoch)

    # -- callback hooks -------------------------------------------------------
    def _resolve_steps_per_epoch(self):
        steps = self.steps_per_epoch or (self.params or {}).get("steps")
        if not steps:
            raise ValueError(
                f"{type(self).__name__} updates per step and needs the number of steps per "
                "epoch, which this fit() does not know; pass steps_per_epoch= to the "
                "callback or to fit(); Received: steps_per_epoch=None"
            )
        return int(steps)

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        self._set_lr = has_settable_lr(optimizer)
        if self._requires_settable_lr and not self._set_lr:
            raise ValueError(
                f"{type(self).__name__} sets the optimizer's learning rate, so the optimizer "
                "needs a float learning_rate; it has "
                f"{type(optimizer.learning_rate).__name__}. Compile with "
                f"a float, or put `{type(self).__name__}(...).as_schedule(steps_per_epoch)` "
                "in the optimizer instead."
            )
        if self.per_step:
            self._spe = self._resolve_steps_per_epoch()
            self._active = self._build(self._spe)
        else:
            self._spe = None
            self._active = self._build(1)

    def _value(self, position):
        return float(keras.ops.convert_to_numpy(self._active(position)))

    def _apply(self, lr):
        self.model.optimizer.learning_rate = lr

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_lr = None
        if not self.per_step and self._set_lr:
            lr = self._value(epoch)
            self._apply(lr)
            self._epoch_lr = lr
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {type(self).__name__} sets learning rate to {lr:.6g}.")

    def on_train_batch_begin(self, batch, logs=None):
        if self.per_step and self._set_lr:
            lr = self._value(self._epoch * self._spe + batch)
            self._apply(lr)
            if self._epoch_lr is None:
                self._epoch_lr = lr

    def on_epoch_end(self, epoch, logs=None):
        # The LR logged for an epoch is the one its first step used, so
        # history["learning_rate"][e] equals the closed form at epoch e.
        if logs is not None and self._epoch_lr is not None:
            logs["learning_rate"] = self._epoch_lr

    def get_config(self):
        return {
            "initial_lr": self.initial_lr,
            "warmup_epochs": self.warmup_epochs,
            "warmup_steps": self.warmup_steps,
            "per_step": self.per_step,
            "steps_per_epoch": self.steps_per_epoch,
            "verbose": self.verbose,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _register(cls):
    return keras.saving.register_keras_serializable(package="callbacks")(cls)


_COMMON_DOC_ARGS = """
        warmup_epochs: int >= 0, default 0. Linear warmup length in epochs.
        warmup_steps: int or None, default None. Warmup length in steps
            instead (needs ``per_step=True``).
        per_step: bool, default False. Update the LR before every batch
            (smooth) instead of once per epoch.
        steps_per_epoch: int or None, default None. Only for ``per_step``
            when ``fit`` cannot tell the number of steps.
        verbose: int, default 0. Print the LR at each epoch when > 0."""


_RETURNS_DOC = """Returns:
        A ``keras.callbacks.Callback``; ``as_schedule(steps_per_epoch)`` gives
        the equivalent optimizer schedule.

    Raises:
        ValueError: On out-of-range arguments."""


_FINITE_DOC_ARGS = """
        initial_lr: float > 0.
        epochs: int > 0, total epochs including warmup."""


def _doc(cls):
    # Every decay callback shares these Args/Returns/Raises paragraphs.
    for key, text in (("{common}", _COMMON_DOC_ARGS), ("{returns}", _RETURNS_DOC),
                      ("{finite}", _FINITE_DOC_ARGS)):
        cls.__doc__ = cls.__doc__.replace(key, text)
    return cls


# --------------------------------------------------------------------------- #
# Concrete decays.
# --------------------------------------------------------------------------- #
@_register
@_doc
class StepDecay(ScheduleCallback):
    """Step decay: multiply the LR by ``drop`` every ``every`` epochs.

    ``lr(e) = initial_lr * drop ** floor(e / every)`` (``e`` counted after
    warmup). ``every`` may also be a list of milestone epochs, e.g.
    ``[30, 60, 80]``: the LR is multiplied by ``drop`` at each milestone.

    Args:
        initial_lr: float > 0.
        drop: float in (0, 1], default 0.5.
        every: int > 0 or increasing list of ints, default 10.{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=30, callbacks=[StepDecay(0.1, drop=0.1, every=10)])
    """

    def __init__(self, initial_lr, drop=0.5, every=10, **kwargs):
        super().__init__(initial_lr, **kwargs)
        check_number("drop", drop, low=0, high=1, low_open=True)
        if isinstance(every, (list, tuple)):
            if (
                not every
                or not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in every)
                or list(every) != sorted(set(every))
            ):
                raise ValueError(
                    "every must be a positive int or a strictly increasing list of positive "
                    f"ints; Received: every={every!r}"
                )
            every = list(every)
        else:
            check_positive_int("every", every)
        self.drop = float(drop)
        self.every = every

    def _decay(self, units_per_epoch, decay_units):
        if isinstance(self.every, list):
            # Keras keeps the old value at step == boundary; the drop must
            # apply from the milestone's first step on.
            boundaries = [m * units_per_epoch - 1 for m in self.every]
            values = [self.initial_lr * self.drop**k for k in range(len(boundaries) + 1)]
            return _KS.PiecewiseConstantDecay(boundaries, values)
        return _KS.ExponentialDecay(
            self.initial_lr, self.every * units_per_epoch, self.drop, staircase=True
        )

    def get_config(self):
        return {**super().get_config(), "drop": self.drop, "every": self.every}


@_register
@_doc
class ExponentialDecay(ScheduleCallback):
    """Exponential decay by a per-epoch factor.

    ``lr(e) = initial_lr * rate ** e`` -- ``rate`` is the factor per epoch (to
    use ``exp(-k * e)`` pass ``rate=math.exp(-k)``).

    Args:
        initial_lr: float > 0.
        rate: float in (0, 1].{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=20, callbacks=[ExponentialDecay(0.01, rate=0.8)])
    """

    def __init__(self, initial_lr, rate, **kwargs):
        super().__init__(initial_lr, **kwargs)
        check_number("rate", rate, low=0, high=1, low_open=True)
        self.rate = float(rate)

    def _decay(self, units_per_epoch, decay_units):
        return _KS.ExponentialDecay(self.initial_lr, units_per_epoch, self.rate)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


@_register
@_doc
class TimeBasedDecay(ScheduleCallback):
    """Time-based (inverse time) decay: ``lr(e) = initial_lr / (1 + decay * e)``.

    Args:
        initial_lr: float > 0.
        decay: float >= 0.{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=20, callbacks=[TimeBasedDecay(0.01, decay=0.5)])
    """

    def __init__(self, initial_lr, decay, **kwargs):
        super().__init__(initial_lr, **kwargs)
        check_number("decay", decay, low=0)
        self.decay = float(decay)

    def _decay(self, units_per_epoch, decay_units):
        return _KS.InverseTimeDecay(self.initial_lr, units_per_epoch, self.decay)

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


class _FiniteDecay(ScheduleCallback):
    """A decay defined over ``epochs`` epochs (warmup included)."""

    _finite = True

    def __init__(self, initial_lr, epochs, **kwargs):
        super().__init__(initial_lr, **kwargs)
        check_positive_int("epochs", epochs)
        self.epochs = int(epochs)
        self._check_warmup_fits()

    def get_config(self):
        return {**super().get_config(), "epochs": self.epochs}


@_register
@_doc
class PowerDecay(_FiniteDecay):
    """Polynomial ("poly") decay to ``end_lr`` at the end of training.

    ``lr(e) = (initial_lr - end_lr) * (1 - e / E) ** power + end_lr`` where
    ``E = epochs - warmup_epochs`` and ``e`` is counted after warmup.

    Args:{finite}
        power: float > 0, default 0.9 (the DeepLab "poly" policy).
        end_lr: float >= 0, default 0.0.{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=50, callbacks=[PowerDecay(0.01, epochs=50, power=2.0)])
    """

    def __init__(self, initial_lr, epochs, power=0.9, end_lr=0.0, **kwargs):
        super().__init__(initial_lr, epochs, **kwargs)
        check_number("power", power, low=0, low_open=True)
        check_number("end_lr", end_lr, low=0, high=self.initial_lr)
        self.power = float(power)
        self.end_lr = float(end_lr)

    def _decay(self, units_per_epoch, decay_units):
        return _KS.PolynomialDecay(self.initial_lr, decay_units, self.end_lr, power=self.power)

    def get_config(self):
        return {**super().get_config(), "power": self.power, "end_lr": self.end_lr}


@_register
@_doc
class LinearDecay(_FiniteDecay):
    """Linear decay from ``initial_lr`` to ``end_lr`` over the epochs after warmup.

    ``lr(e) = initial_lr + (end_lr - initial_lr) * e / E`` with
    ``E = epochs - warmup_epochs``.

    Args:{finite}
        end_lr: float >= 0, default 0.0.{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=10, callbacks=[LinearDecay(0.1, epochs=10, warmup_epochs=1)])
    """

    def __init__(self, initial_lr, epochs, end_lr=0.0, **kwargs):
        super().__init__(initial_lr, epochs, **kwargs)
        check_number("end_lr", end_lr, low=0, high=self.initial_lr)
        self.end_lr = float(end_lr)

    def _decay(self, units_per_epoch, decay_units):
        return _KS.PolynomialDecay(self.initial_lr, decay_units, self.end_lr, power=1.0)

    def get_config(self):
        return {**super().get_config(), "end_lr": self.end_lr}


@_register
@_doc
class CosineDecay(_FiniteDecay):
    """Cosine annealing from ``initial_lr`` to ``min_lr`` over the epochs after warmup.

    ``lr(e) = min_lr + (initial_lr - min_lr) * (1 + cos(pi * e / E)) / 2`` with
    ``E = epochs - warmup_epochs`` (Keras ``CosineDecay`` with
    ``alpha = min_lr / initial_lr``).

    Args:{finite}
        min_lr: float >= 0, default 0.0.{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=30, callbacks=[CosineDecay(0.1, 30, warmup_epochs=3)])
    """

    def __init__(self, initial_lr, epochs, min_lr=0.0, **kwargs):
        super().__init__(initial_lr, epochs, **kwargs)
        check_number("min_lr", min_lr, low=0, high=self.initial_lr)
        self.min_lr = float(min_lr)

    def _decay(self, units_per_epoch, decay_units):
        return _KS.CosineDecay(self.initial_lr, decay_units, alpha=self.min_lr / self.initial_lr)

    def get_config(self):
        return {**super().get_config(), "min_lr": self.min_lr}


@_register
@_doc
class CosineRestarts(ScheduleCallback):
    """Cosine annealing with warm restarts (SGDR, Keras ``CosineDecayRestarts``).

    The first cycle lasts ``first_epochs``; each next one is ``t_mul`` times
    longer and starts from ``m_mul`` times the previous peak. Each cycle
    anneals down to ``min_lr`` (scaled like the peak).

    Args:
        initial_lr: float > 0.
        first_epochs: int > 0, length of the first cycle.
        t_mul: float > 0, default 2.0.
        m_mul: float in (0, 1], default 1.0.
        min_lr: float >= 0, default 0.0.{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=30, callbacks=[CosineRestarts(0.1, first_epochs=10)])
    """

    def __init__(self, initial_lr, first_epochs, t_mul=2.0, m_mul=1.0, min_lr=0.0, **kwargs):
        super().__init__(initial_lr, **kwargs)
        check_positive_int("first_epochs", first_epochs)
        check_number("t_mul", t_mul, low=0, low_open=True)
        check_number("m_mul", m_mul, low=0, high=1, low_open=True)
        check_number("min_lr", min_lr, low=0, high=self.initial_lr)
        self.first_epochs = int(first_epochs)
        self.t_mul = float(t_mul)
        self.m_mul = float(m_mul)
        self.min_lr = float(min_lr)

    def _decay(self, units_per_epoch, decay_units):
        return _KS.CosineDecayRestarts(
            self.initial_lr,
            self.first_epochs * units_per_epoch,
            t_mul=self.t_mul,
            m_mul=self.m_mul,
            alpha=self.min_lr / self.initial_lr,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "first_epochs": self.first_epochs,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "min_lr": self.min_lr,
        }


@_register
@_doc
class ConstantLR(ScheduleCallback):
    """Constant learning rate, optionally after a linear warmup.

    Args:
        initial_lr: float > 0.{common}

    {returns}

    Example:
        >>> model.fit(x, y, epochs=10, callbacks=[ConstantLR(1e-3, warmup_epochs=2)])
    """

    def _decay(self, units_per_epoch, decay_units):
        # ExponentialDecay with rate 1 is Keras' serializable constant.
        return _KS.ExponentialDecay(self.initial_lr, 1, 1.0)
