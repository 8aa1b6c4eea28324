"""`make_schedule`: a per-step Keras `LearningRateSchedule` by name (what `recipes.train` uses)."""

import inspect

from callbacks import schedules as _s
from callbacks.schedules import check_positive_int


def _builders():
    from callbacks.one_cycle import OneCycle

    return {
        "step": _s.StepDecay,
        "exponential": _s.ExponentialDecay,
        "time": _s.TimeBasedDecay,
        "power": _s.PowerDecay,
        "cosine": _s.CosineDecay,
        "cosine_restarts": _s.CosineRestarts,
        "linear": _s.LinearDecay,
        "onecycle": OneCycle,
        "constant": _s.ConstantLR,
    }


SCHEDULE_NAMES = (
    "step",
    "exponential",
    "time",
    "power",
    "cosine",
    "cosine_restarts",
    "linear",
    "onecycle",
    "constant",
)


def _closest_first(name, choices):
    from recipes.validation import closest_matches  # lazy: recipes imports callbacks

    near = closest_matches(name, choices)
    return near + [c for c in choices if c not in near]


def make_schedule(name, initial_lr, *, epochs, steps_per_epoch, warmup_epochs=0, **kwargs):
    """Build a per-step Keras ``LearningRateSchedule`` by name.

    Defaults (``D = epochs - warmup_epochs`` decay epochs; override any of
    them through ``**kwargs``):

    * ``"step"``: ``drop=0.5``, ``every=max(1, D // 3)``.
    * ``"exponential"``: ``rate = 0.01 ** (1 / D)`` per epoch, so the LR ends
      at ``initial_lr / 100``.
    * ``"time"``: ``decay = 9 / D``, so the LR ends at ``initial_lr / 10``.
    * ``"power"``: ``power=0.9``, ``end_lr=0`` (poly policy).
    * ``"cosine"``: ``min_lr=0``. ``"linear"``: ``end_lr=0``.
    * ``"cosine_restarts"``: ``first_epochs=max(1, D // 3)``, ``t_mul=2``, so
      two cycles fill the run.
    * ``"onecycle"``: ``initial_lr`` is the peak; ``pct_start=0.25``,
      ``div=25``, ``div_final=1e5`` (fastai). A non-zero ``warmup_epochs``
      sets ``pct_start = warmup_epochs / epochs`` (one-cycle has its own
      warmup).
    * ``"constant"``: ``initial_lr`` throughout (after warmup).

    Args:
        name: One of ``"step"``, ``"exponential"``, ``"time"``, ``"power"``,
            ``"cosine"``, ``"cosine_restarts"``, ``"linear"``, ``"onecycle"``,
            ``"constant"``.
        initial_lr: float > 0.
        epochs: int > 0, total epochs including warmup.
        steps_per_epoch: int > 0.
        warmup_epochs: int >= 0 and < epochs, default 0.
        **kwargs: Extra arguments of the matching callback class
            (e.g. ``drop``, ``min_lr``, ``power``).

    Returns:
        A serializable ``keras.optimizers.schedules.LearningRateSchedule`` that
        takes the optimizer step.

    Raises:
        ValueError: Unknown name (the message lists names, closest first),
            unknown keyword, or out-of-range values.

    Example:
        >>> lr = make_schedule("cosine", 0.1, epochs=30, steps_per_epoch=100, warmup_epochs=2)
        >>> model.compile(keras.optimizers.SGD(lr, momentum=0.9), "sparse_categorical_crossentropy")
    """
    builders = _builders()
    key = str(name).lower().replace("-", "_")
    if key not in builders:
        raise ValueError(
            f"Unknown schedule name; expected one of {_closest_first(name, SCHEDULE_NAMES)}; "
            f"Received: name={name!r}"
        )
    check_positive_int("epochs", epochs)
    check_positive_int("steps_per_epoch", steps_per_epoch)
    check_positive_int("warmup_epochs", warmup_epochs, minimum=0)
    if warmup_epochs >= epochs:
        raise ValueError(
            "warmup_epochs must be smaller than epochs; Received: "
            f"warmup_epochs={warmup_epochs}, epochs={epochs}"
        )
    cls = builders[key]
    # Arguments that only matter to the callback form (or are set here) are
    # not schedule options.
    not_options = {"self", "initial_lr", "max_lr", "epochs", "kwargs", "per_step"}
    not_options |= {"steps_per_epoch", "verbose", "moms", "cycle_momentum"}
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in not_options]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown argument(s) for schedule {key!r}: {unknown}; accepted: {accepted}"
        )
    decay_epochs = epochs - warmup_epochs
    if key == "onecycle":
        defaults = {"pct_start": warmup_epochs / epochs} if warmup_epochs else {}
        callback = cls(initial_lr, epochs, **{**defaults, **kwargs})
        return callback.as_schedule(steps_per_epoch)
    defaults = {
        "step": {"drop": 0.5, "every": max(1, decay_epochs // 3)},
        "exponential": {"rate": 0.01 ** (1.0 / decay_epochs)},
        "time": {"decay": 9.0 / decay_epochs},
        "cosine_restarts": {"first_epochs": max(1, decay_epochs // 3)},
    }.get(key, {})
    args = (initial_lr, epochs) if getattr(cls, "_finite", False) else (initial_lr,)
    callback = cls(*args, warmup_epochs=warmup_epochs, per_step=True, **{**defaults, **kwargs})
    return callback.as_schedule(steps_per_epoch)
