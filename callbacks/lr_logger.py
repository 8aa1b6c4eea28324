"""`LearningRateLogger`: the learning rate of each epoch in `history`, for in-optimizer schedules."""

import keras

from callbacks.schedules import _optimizers, _register, current_lr


@_register
class LearningRateLogger(keras.callbacks.Callback):
    """Log the learning rate of each epoch as ``logs["learning_rate"]``.

    Keras 3.15 only logs ``learning_rate`` from ``LearningRateScheduler`` and
    ``ReduceLROnPlateau``; an optimizer driven by a ``LearningRateSchedule``
    leaves no trace in ``history``. This logs the LR used by the first step of
    each epoch (``schedule(optimizer.iterations)`` before that step). It does
    not overwrite a value another callback already logged.

    Returns:
        A ``keras.callbacks.Callback``.

    Example:
        >>> history = model.fit(x, y, epochs=5, callbacks=[LearningRateLogger()])
        >>> history.history["learning_rate"]
    """

    #: Reads the rate at an epoch's first batch only: correct with several steps per execution.
    steps_per_execution_safe = True

    def __init__(self):
        super().__init__()
        self._lr = None

    def on_epoch_begin(self, epoch, logs=None):
        self._lr = None

    def on_train_batch_begin(self, batch, logs=None):
        # Read at the first batch, after every on_epoch_begin has set the LR.
        if self._lr is None:
            # A multi-optimizer's own `learning_rate` is its head (default) rate when it defines
            # one (recipes' LayerwiseOptimizer); else its first part's.
            optimizer = self.model.optimizer
            try:
                self._lr = current_lr(optimizer)
            except (AttributeError, TypeError, ValueError):
                self._lr = current_lr(_optimizers(self.model)[0])

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._lr is not None:
            logs.setdefault("learning_rate", self._lr)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


