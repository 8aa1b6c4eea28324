"""Linear warmup in front of any Keras learning-rate schedule."""

import keras
from keras import ops


def _check_schedule(schedule):
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        raise ValueError(
            "schedule must be a keras.optimizers.schedules.LearningRateSchedule; "
            f"Received: schedule={schedule!r}"
        )


@keras.saving.register_keras_serializable(package="callbacks")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup wrapped around any Keras learning-rate schedule.

    For ``step < warmup_steps`` the learning rate ramps linearly towards the
    wrapped schedule's first value, ``target = schedule(0)``::

        lr(step) = target * (step + 1) / warmup_steps

    so the first step already uses ``target / warmup_steps`` (no wasted
    zero-LR step) and the last warmup step uses ``target``. Afterwards the
    wrapped schedule runs *shifted* by the warmup, so it starts from its
    beginning once warmup is over::

        lr(step) = schedule(step - warmup_steps)

    Args:
        schedule: A ``keras.optimizers.schedules.LearningRateSchedule`` (for
            example ``keras.optimizers.schedules.CosineDecay``).
        warmup_steps: int > 0. Number of optimizer steps to ramp over.
        name: str, default ``"Warmup"``.

    Returns:
        A serializable ``LearningRateSchedule``; calling it with a step returns
        the learning rate as a float32 tensor.

    Raises:
        ValueError: If ``schedule`` is not a ``LearningRateSchedule`` or
            ``warmup_steps`` is not a positive int.

    Example:
        >>> cosine = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=900)
        >>> lr = Warmup(cosine, warmup_steps=100)
        >>> optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    """

    def __init__(self, schedule, warmup_steps, name="Warmup"):
        super().__init__()
        _check_schedule(schedule)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(
                f"warmup_steps must be a positive int; Received: warmup_steps={warmup_steps!r}"
            )
        self.schedule = schedule
        self.warmup_steps = warmup_steps
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = ops.cast(self.warmup_steps, "float32")
        target = ops.cast(self.schedule(0), "float32")
        ramp = target * (step + 1.0) / warmup
        after = ops.cast(self.schedule(ops.maximum(step - warmup, 0.0)), "float32")
        return ops.where(step < warmup, ramp, after)

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
