"""Training throughput (images per second, seconds per epoch) in the logs."""

import time
import warnings

import keras

from callbacks.schedules import check_positive_int


@keras.saving.register_keras_serializable(package="callbacks")
class Throughput(keras.callbacks.Callback):
    """Log ``images_per_second`` and ``epoch_seconds`` for every epoch.

    * ``epoch_seconds``: wall time from ``on_epoch_begin`` to
      ``on_epoch_end`` (training + validation + earlier callbacks).
    * ``images_per_second``: training images / training wall time (first to
      last training batch of the epoch; validation excluded).

    Images are counted exactly when possible: with ``batch_size=None`` the
    callback reads the sample count Keras' built-in ``train_step`` feeds to
    the model's loss tracker (so partial last batches count right). With a
    custom ``train_step`` that bypasses it, pass ``batch_size`` and the count
    becomes ``batch_size * batches`` (over-counting a partial last batch);
    without either only ``epoch_seconds`` is logged. The first epoch includes
    tracing/compilation time.

    Args:
        batch_size: int or None, default None. Images per batch, if known.
        verbose: int, default 1. Print one line per epoch.

    Returns:
        A ``keras.callbacks.Callback``; ``images`` holds the image count of
        the last epoch.

    Raises:
        ValueError: If ``batch_size`` is not a positive int or None.

    Example:
        >>> history = model.fit(ds, epochs=3, callbacks=[Throughput()])
        >>> history.history["images_per_second"]
    """

    def __init__(self, batch_size=None, verbose=1):
        super().__init__()
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        self.batch_size = batch_size
        self.verbose = verbose
        self.images = None
        self._warned = False

    def _sample_count(self):
        tracker = getattr(self.model, "_loss_tracker", None)
        count = getattr(tracker, "count", None)
        if count is None:
            return None
        return float(keras.ops.convert_to_numpy(count))

    def on_epoch_begin(self, epoch, logs=None):
        self._begin = time.perf_counter()
        self._train_end = None
        self._batches = 0
        self._images = None

    def on_train_batch_end(self, batch, logs=None):
        self._train_end = time.perf_counter()
        self._batches += 1
        if self.batch_size is None:
            # Read every batch: validation resets the tracker before on_epoch_end.
            self._images = self._sample_count()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        seconds = now - self._begin
        images = self._images
        if self.batch_size is not None:
            images = self.batch_size * self._batches
        self.images = images
        train_seconds = (self._train_end or now) - self._begin
        rate = images / train_seconds if images and train_seconds > 0 else None
        if logs is not None:
            logs["epoch_seconds"] = seconds
            if rate is not None:
                logs["images_per_second"] = rate
        if rate is None and not self._warned:
            warnings.warn(
                "Throughput cannot count images (custom train_step?); pass batch_size=.",
                stacklevel=2,
            )
            self._warned = True
        if self.verbose:
            text = f"{rate:,.1f} images/s, " if rate is not None else ""
            print(f"Epoch {epoch + 1}: {text}{seconds:.2f} s")

    def get_config(self):
        return {"batch_size": self.batch_size, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
