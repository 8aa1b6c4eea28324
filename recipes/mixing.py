"""MixUp / CutMix on integer-labelled tf.data batches, label smoothing, and metrics for soft labels.

Keras' own `MixUp`/`CutMix` layers want dict inputs and one-hot labels, and
`SparseCategoricalCrossentropy` has no label smoothing. Here:

- `mix_batches(dataset, num_classes, mixup=0.2, cutmix=1.0)` mixes batches of
  `(images, integer labels)` into `(mixed images, soft labels (batch, num_classes))`.
- `SmoothedCrossentropy(label_smoothing)` takes integer *or* soft labels, so one compiled loss
  serves soft-labelled training batches and integer-labelled validation batches.
- `MixedAccuracy` / `MixedTopKAccuracy` likewise take both label kinds.
- `MixingSchedule` + `StopMixing` switch mixing off for the last epochs.
- `mixing_setup(...)` returns the `(loss, metrics, dataset_transform)` a trainer needs.
- `exclude_from_weight_decay(optimizer)` keeps decoupled weight decay off biases and
  normalization scales/offsets.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

__all__ = [
    "MixingSchedule",
    "MixBatches",
    "StopMixing",
    "mix_batches",
    "SmoothedCrossentropy",
    "MixedAccuracy",
    "MixedTopKAccuracy",
    "mixing_setup",
    "NO_DECAY_NAMES",
    "exclude_from_weight_decay",
]

#: Variable names that decoupled weight decay should leave alone: biases and the scale/offset of
#: BatchNormalization/LayerNormalization (decaying them only fights the normalization).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


def _check_number(name, value, low=0.0, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < low or (
        high is not None and value > high
    ):
        allowed = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a number {allowed}; Received: {name}={value!r}")
    return float(value)


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; Received: {name}={value!r}")
    return int(value)


class MixingSchedule:
    """An on/off switch for `mix_batches`, read by the tf.data map function at run time.

    The flag is a `tf.Variable` on the CPU: the dataset reads it when it produces each batch, so
    flipping it between epochs changes what the next epoch's batches look like without
    rebuilding the dataset. (Batches already prefetched keep their mixing; Keras makes a fresh
    iterator each epoch for finite datasets, so `StopMixing` switching at `on_epoch_begin` takes
    effect from the first batch of that epoch.)

    Args:
        enabled: Initial state (default True).

    Example:
        >>> schedule = MixingSchedule()
        >>> train = mix_batches(train, 10, schedule=schedule)
        >>> schedule.disable()  # next epoch: unmixed images, one-hot labels
    """

    def __init__(self, enabled=True):
        import tensorflow as tf

        if not isinstance(enabled, bool):
            raise ValueError(f"enabled must be True or False; Received: enabled={enabled!r}")
        # tf.data runs on the CPU; a GPU-placed flag would be copied back for every batch.
        with tf.device("/cpu:0"):
            self.variable = tf.Variable(enabled, trainable=False, dtype=tf.bool, name="mixing_on")

    @property
    def enabled(self) -> bool:
        """The current state as a Python bool."""
        return bool(self.variable.numpy())

    def enable(self):
        """Turns mixing on for batches produced from now on."""
        self.variable.assign(True)

    def disable(self):
        """Turns mixing off for batches produced from now on."""
        self.variable.assign(False)

    def __repr__(self):
        return f"MixingSchedule(enabled={self.enabled})"


class StopMixing(keras.callbacks.Callback):
    """Keras callback that turns mixing off for the last `last_n` epochs of a fit.

    Sets the schedule at every `on_epoch_begin` (on for epoch `< epochs - last_n`, off after),
    so resuming with `initial_epoch` behaves the same.

    Args:
        epochs: Total epochs of the `fit` call, at least 1.
        last_n: How many final epochs train on clean (unmixed) batches, 0..epochs.
        schedule: The `MixingSchedule` given to `mix_batches`.

    Raises:
        ValueError: Non-int or out-of-range `epochs`/`last_n`, or `schedule` not a MixingSchedule.

    Example:
        >>> schedule = MixingSchedule()
        >>> model.fit(mix_batches(train, 10, schedule=schedule), epochs=20,
        ...           callbacks=[StopMixing(20, 3, schedule)])
    """

    def __init__(self, epochs, last_n, schedule):
        super().__init__()
        self.epochs = _check_int("epochs", epochs, 1)
        self.last_n = _check_int("last_n", last_n, 0)
        if self.last_n > self.epochs:
            raise ValueError(
                f"last_n must be at most epochs; Received: last_n={last_n!r}, epochs={epochs!r}"
            )
        if not isinstance(schedule, MixingSchedule):
            raise ValueError(
                "schedule must be the MixingSchedule passed to mix_batches; "
                f"Received: schedule of type {type(schedule).__name__}"
            )
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.epochs - self.last_n:
            self.schedule.enable()
        else:
            self.schedule.disable()


def _sample_beta(alpha, seed):
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
    # Beta(alpha, alpha) as a ratio of gammas; the epsilon avoids 0/0 for tiny alphas.
    return a / tf.maximum(a + b, 1e-12)


def mix_batches(
    dataset, num_classes, *, mixup=0.2, cutmix=1.0, switch_prob=0.5, prob=1.0, seed=None,
    schedule=None,
):
    """Batch-level MixUp / CutMix for a tf.data pipeline with integer labels (timm semantics).

    For each batch: with probability `prob` it is mixed, else passed through. If both
    alphas are > 0, CutMix is used with probability `switch_prob` and MixUp otherwise. The batch
    is mixed with itself in reverse order (image i with image batch-1-i, as timm does), with one
    lambda per batch drawn from Beta(alpha, alpha):

    - MixUp: `x = lam * x_i + (1 - lam) * x_j`, labels `lam * y_i + (1 - lam) * y_j`.
    - CutMix: a box of about `(1 - lam)` of the area (side `sqrt(1 - lam)`, centre uniform, clipped
      at the borders) is pasted from `x_j`; the label weight is the *actual* pasted area fraction
      after clipping: `lam = 1 - box_area / image_area`.

    Args:
        dataset: A *batched* `tf.data.Dataset` of `(images, labels)`; images
            `(batch, height, width, channels)` of any numeric dtype, labels integer class ids of
            shape `(batch,)` or `(batch, 1)`, or already one-hot/soft `(batch, num_classes)`.
        num_classes: Number of classes, at least 2.
        mixup: MixUp Beta alpha (default 0.2); 0 disables MixUp.
        cutmix: CutMix Beta alpha (default 1.0); 0 disables CutMix.
        switch_prob: Probability of CutMix when both are enabled (default 0.5).
        prob: Probability that a batch is mixed at all (default 1.0).
        seed: Int seed for reproducible mixing (default None). Each epoch draws new values.
        schedule: Optional `MixingSchedule`; while it is disabled batches pass unmixed.

    Returns:
        A dataset of `(float32 images, float32 soft labels (batch, num_classes))`. Unmixed batches
        have one-hot labels, so the element spec never changes.

    Raises:
        ValueError: Bad numbers (alphas < 0, both alphas 0, probabilities outside [0, 1],
            num_classes < 2), a dataset that is not batched `(images, labels)`, or labels that are
            neither integer ids nor `(batch, num_classes)`.

    Example:
        >>> train = mix_batches(train, 10, mixup=0.2, cutmix=1.0)  # then model.fit(train, ...)
    """
    import tensorflow as tf

    num_classes = _check_int("num_classes", num_classes, 2)
    mixup = _check_number("mixup", mixup)
    cutmix = _check_number("cutmix", cutmix)
    switch_prob = _check_number("switch_prob", switch_prob, 0.0, 1.0)
    prob = _check_number("prob", prob, 0.0, 1.0)
    if mixup == 0 and cutmix == 0:
        raise ValueError(
            "mix_batches needs mixup > 0 or cutmix > 0 (Beta alphas); Received: mixup=0, cutmix=0"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an int or None; Received: seed={seed!r}")
    if schedule is not None and not isinstance(schedule, MixingSchedule):
        raise ValueError(
            f"schedule must be a MixingSchedule or None; Received: {type(schedule).__name__}"
        )
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"dataset must be a tf.data.Dataset; Received: dataset of type {type(dataset).__name__}"
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            f"dataset must yield (images, labels) pairs; Received: element_spec={spec!r}"
        )
    image_spec, label_spec = spec
    if image_spec.shape.rank != 4:
        raise ValueError(
            "dataset must be batched images (batch, height, width, channels) (call .batch() "
            f"first); Received: images with shape {image_spec.shape}"
        )
    label_shape = label_spec.shape
    integer_labels = label_spec.dtype.is_integer and (
        label_shape.rank == 1 or (label_shape.rank == 2 and label_shape[-1] == 1)
    )
    soft_labels = (
        label_spec.dtype.is_floating and label_shape.rank == 2 and label_shape[-1] == num_classes
    )
    if not (integer_labels or soft_labels):
        raise ValueError(
            "labels must be integer class ids of shape (batch,) or (batch, 1), or one-hot/soft "
            f"labels of shape (batch, {num_classes}); Received: labels with shape {label_shape} "
            f"and dtype {label_spec.dtype.name}"
        )

    use_both = mixup > 0 and cutmix > 0
    switch = switch_prob if use_both else (1.0 if cutmix > 0 else 0.0)
    flag = schedule.variable if schedule is not None else None

    def one_hot(labels):
        if integer_labels:
            return tf.one_hot(tf.reshape(tf.cast(labels, tf.int32), [-1]), num_classes)
        return tf.cast(labels, tf.float32)

    def mixup_batch(images, lam):
        return lam * images + (1.0 - lam) * tf.reverse(images, [0]), lam

    def cutmix_batch(images, lam, seed):
        shape = tf.shape(images)
        height, width = shape[1], shape[2]
        cut = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
        cut_w = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
        cy = tf.random.stateless_uniform([], seed, 0, height, dtype=tf.int32)
        cx = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seed, 1), 0, width, dtype=tf.int32
        )
        y0 = tf.clip_by_value(cy - cut_h // 2, 0, height)
        y1 = tf.clip_by_value(cy + cut_h // 2, 0, height)
        x0 = tf.clip_by_value(cx - cut_w // 2, 0, width)
        x1 = tf.clip_by_value(cx + cut_w // 2, 0, width)
        rows = tf.range(height)
        cols = tf.range(width)
        inside = (
            ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]
        )
        mask = tf.cast(inside, images.dtype)[None, :, :, None]
        mixed = images * (1.0 - mask) + tf.reverse(images, [0]) * mask
        area = tf.cast((y1 - y0) * (x1 - x0), tf.float32)
        # The label weight follows the pixels actually pasted, after clipping at the border.
        return mixed, 1.0 - area / tf.cast(height * width, tf.float32)

    def mix(batch, seed):
        images, labels = batch
        images = tf.cast(images, tf.float32)
        labels = one_hot(labels)
        seeds = tf.random.experimental.stateless_split(seed, 5)
        apply = tf.random.stateless_uniform([], seeds[0]) < prob
        if flag is not None:
            apply = tf.logical_and(apply, flag.read_value())
        use_cutmix = tf.random.stateless_uniform([], seeds[1]) < switch

        def do_mix():
            # tf.cond traces both branches; a disabled method (alpha 0, never chosen because
            # `switch` is 0 or 1) still needs a valid Beta alpha to build its graph.
            def do_cutmix():
                return cutmix_batch(images, _sample_beta(cutmix or 1.0, seeds[2]), seeds[3])

            def do_mixup():
                return mixup_batch(images, _sample_beta(mixup or 1.0, seeds[4]))

            mixed, lam = tf.cond(use_cutmix, do_cutmix, do_mixup)
            return mixed, lam * labels + (1.0 - lam) * tf.reverse(labels, [0])

        return tf.cond(apply, do_mix, lambda: (images, labels))

    # Per-batch stateless seeds from a seeded random dataset: reproducible with `seed`, fresh
    # values every epoch (rerandomize_each_iteration), and safe under parallel map.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    zipped = tf.data.Dataset.zip((dataset, seeds))
    return zipped.map(mix, num_parallel_calls=tf.data.AUTOTUNE)


class MixBatches:
    """The dataset transform `mixing_setup` returns: `transform(train_dataset) -> mixed dataset`.

    Holds the mixing settings and a `MixingSchedule`, so a trainer can also ask for the
    `StopMixing` callback that drives it.

    Args:
        num_classes: Number of classes.
        mixup: MixUp alpha (0 disables).
        cutmix: CutMix alpha (0 disables).
        switch_prob: CutMix probability when both are on (default 0.5).
        prob: Probability a batch is mixed (default 1.0).
        seed: Optional int seed.

    Raises:
        ValueError: As `mix_batches`.

    Example:
        >>> transform = MixBatches(10, mixup=0.2, cutmix=1.0)
        >>> model.fit(transform(train), epochs=10, callbacks=[transform.stop_callback(10, 2)])
    """

    def __init__(self, num_classes, *, mixup=0.0, cutmix=0.0, switch_prob=0.5, prob=1.0, seed=None):
        self.num_classes = _check_int("num_classes", num_classes, 2)
        self.mixup = _check_number("mixup", mixup)
        self.cutmix = _check_number("cutmix", cutmix)
        if self.mixup == 0 and self.cutmix == 0:
            raise ValueError("MixBatches needs mixup > 0 or cutmix > 0; Received: both 0")
        self.switch_prob = _check_number("switch_prob", switch_prob, 0.0, 1.0)
        self.prob = _check_number("prob", prob, 0.0, 1.0)
        self.seed = seed
        self.schedule = MixingSchedule()

    def __call__(self, dataset):
        return mix_batches(
            dataset, self.num_classes, mixup=self.mixup, cutmix=self.cutmix,
            switch_prob=self.switch_prob, prob=self.prob, seed=self.seed, schedule=self.schedule,
        )

    def stop_callback(self, epochs, last_n):
        """A `StopMixing(epochs, last_n)` callback bound to this transform's schedule."""
        return StopMixing(epochs, last_n, self.schedule)

    def __repr__(self):
        return (
            f"MixBatches(num_classes={self.num_classes}, mixup={self.mixup}, "
            f"cutmix={self.cutmix}, switch_prob={self.switch_prob}, prob={self.prob})"
        )


def _targets_to_indices(y_true, y_pred):
    # Static rank decides: (batch, C) with C > 1 is soft/one-hot, anything else integer ids.
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1:
        return ops.argmax(y_true, axis=-1)
    return ops.cast(ops.reshape(y_true, (-1,)), "int32")


def _targets_to_one_hot(y_true, y_pred):
    y_true = ops.convert_to_tensor(y_true)
    num_classes = y_pred.shape[-1]
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1:
        return ops.cast(y_true, y_pred.dtype)
    ids = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    return ops.one_hot(ids, num_classes, dtype=y_pred.dtype)


@keras.saving.register_keras_serializable(package="recipes")
class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing for integer *or* soft/one-hot labels.

    Integer labels (shape `(batch,)` or `(batch, 1)`) are one-hot encoded; soft labels
    (`(batch, num_classes)`, e.g. from `mix_batches`) are used as they are. Then
    `target = (1 - label_smoothing) * y + label_smoothing / num_classes` and the loss is
    `-sum(target * log(p))`. The branch is on the labels' static rank, so one compiled loss serves
    mixed training batches and integer validation batches.

    Args:
        label_smoothing: Epsilon in [0, 1) (default 0.0: plain cross-entropy).
        from_logits: Whether predictions are logits (default False: probabilities, as
            `build_classifier` outputs).
        reduction: Keras loss reduction (default `"sum_over_batch_size"`).
        name: Loss name (default `"smoothed_crossentropy"`).
        dtype: Loss computation dtype (default None: Keras' float type).

    Returns:
        A Keras loss; `loss(y_true, y_pred)` is a scalar under the default reduction.

    Raises:
        ValueError: `label_smoothing` outside [0, 1) or `from_logits` not a bool.

    Example:
        >>> loss = SmoothedCrossentropy(0.1)
        >>> float(loss([0], [[0.7, 0.2, 0.1]]))  # 0.9333*-ln .7 + 0.0333*(-ln .2 - ln .1)
        0.463...
    """

    def __init__(
        self, label_smoothing=0.0, from_logits=False, reduction="sum_over_batch_size",
        name="smoothed_crossentropy", dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = _check_number("label_smoothing", label_smoothing, 0.0, 1.0)
        if self.label_smoothing >= 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1); Received: label_smoothing={label_smoothing!r}"
            )
        if not isinstance(from_logits, bool):
            raise ValueError(f"from_logits must be a bool; Received: from_logits={from_logits!r}")
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        target = _targets_to_one_hot(y_true, y_pred)
        return keras.losses.categorical_crossentropy(
            target, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }


def mixed_accuracy(y_true, y_pred):
    """Per-sample 1.0/0.0: does argmax(y_pred) equal the (argmax of the) label?"""
    y_pred = ops.convert_to_tensor(y_pred)
    target = _targets_to_indices(y_true, y_pred)
    predicted = ops.cast(ops.argmax(y_pred, axis=-1), target.dtype)
    return ops.cast(ops.equal(ops.reshape(predicted, (-1,)), target), "float32")


def mixed_top_k_accuracy(y_true, y_pred, k=5):
    """Per-sample 1.0/0.0: is the (argmax of the) label among the top-k predictions?"""
    y_pred = ops.convert_to_tensor(y_pred)
    target = _targets_to_indices(y_true, y_pred)
    return ops.cast(ops.in_top_k(ops.cast(target, "int32"), y_pred, k=k), "float32")


@keras.saving.register_keras_serializable(package="recipes")
class MixedAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy (or top-k accuracy) for integer labels and soft/one-hot labels alike.

    Soft labels count as their largest class (for a MixUp/CutMix label, the image that covers
    most of the mix), integer labels as they are.

    Args:
        name: Metric name (default `"accuracy"`, so logs read `accuracy` / `val_accuracy`).
        dtype: Metric dtype (default None).
        k: Count a hit when the label is among the `k` highest predictions (default 1: plain
            accuracy). `MixedTopKAccuracy` is the same with `k=5` and name `"top5_accuracy"`.

    Returns:
        A Keras metric; `result()` is the running mean accuracy.

    Raises:
        ValueError: `k` not an int >= 1.

    Example:
        >>> m = MixedAccuracy(); m.update_state([[0.7, 0.3]], [[0.6, 0.4]]); float(m.result())
        1.0
    """

    def __init__(self, name="accuracy", dtype=None, k=1):
        k = _check_int("k", k, 1)
        if k == 1:
            super().__init__(fn=mixed_accuracy, name=name, dtype=dtype)
        else:
            super().__init__(fn=mixed_top_k_accuracy, name=name, dtype=dtype, k=k)
        self.k = k
        self._direction = "up"

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "k": self.k}


@keras.saving.register_keras_serializable(package="recipes")
class MixedTopKAccuracy(MixedAccuracy):
    """Top-k accuracy for integer labels and soft/one-hot labels alike.

    Args:
        k: How many top predictions count as a hit (default 5).
        name: Metric name (default `"top5_accuracy"`; pass e.g. `"top3_accuracy"` with `k=3`).
        dtype: Metric dtype (default None).

    Returns:
        A Keras metric; `result()` is the running mean top-k accuracy.

    Raises:
        ValueError: `k` not an int >= 1.

    Example:
        >>> m = MixedTopKAccuracy(k=2, name="top2_accuracy")
    """

    def __init__(self, k=5, name="top5_accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype, k=k)


def mixing_setup(
    num_classes, *, mixup=0.0, cutmix=0.0, label_smoothing=0.0, switch_prob=0.5, prob=1.0,
    seed=None,
):
    """The loss, metrics and training-set transform for MixUp / CutMix / label smoothing.

    Args:
        num_classes: Number of classes, at least 2.
        mixup: MixUp Beta alpha (default 0: off; 0.2 is a common value).
        cutmix: CutMix Beta alpha (default 0: off; 1.0 is a common value).
        label_smoothing: Epsilon for `SmoothedCrossentropy` (default 0).
        switch_prob: CutMix probability when both are on (default 0.5).
        prob: Probability that a batch is mixed (default 1.0).
        seed: Optional int seed for the mixing.

    Returns:
        `(loss, metrics, transform)`: a `SmoothedCrossentropy(label_smoothing)`, a list
        `[MixedAccuracy()]` plus `MixedTopKAccuracy(5)` when `num_classes > 5`, and a `MixBatches`
        to apply to the *batched training* dataset (None when mixup and cutmix are both 0).
        Loss and metrics work with integer labels as well, so validation data stays as it is.

    Raises:
        ValueError: Out-of-range numbers (see `mix_batches` and `SmoothedCrossentropy`).

    Example:
        >>> loss, metrics, transform = mixing_setup(10, mixup=0.2, cutmix=1.0, label_smoothing=0.1)
        >>> model.compile("adam", loss=loss, metrics=metrics)
        >>> model.fit(transform(train) if transform else train, validation_data=val, epochs=5)
    """
    num_classes = _check_int("num_classes", num_classes, 2)
    loss = SmoothedCrossentropy(label_smoothing)
    transform = None
    if _check_number("mixup", mixup) > 0 or _check_number("cutmix", cutmix) > 0:
        transform = MixBatches(
            num_classes, mixup=mixup, cutmix=cutmix, switch_prob=switch_prob, prob=prob, seed=seed,
        )
    metrics = [MixedAccuracy()]
    if num_classes > 5:
        metrics.append(MixedTopKAccuracy(5, name="top5_accuracy"))
    return loss, metrics, transform


def exclude_from_weight_decay(optimizer, names=NO_DECAY_NAMES):
    """Turns decoupled weight decay off for biases and normalization scales/offsets.

    Keras decays every trainable variable by default; common practice (timm, BERT) decays only
    kernels. Matching is on the exact variable name (`bias`, `gamma`, `beta`), which Keras 3 gives
    every Dense/Conv bias and every BatchNormalization/LayerNormalization scale and offset. The
    setting is not part of the optimizer's saved config: call this again on a fresh optimizer
    after reloading a model.

    Args:
        optimizer: A `keras.optimizers.Optimizer` that is not built yet (before `fit`).
        names: Exact variable names to exclude (default `NO_DECAY_NAMES`).

    Returns:
        The same optimizer, for chaining.

    Raises:
        ValueError: `optimizer` is not a Keras optimizer, is already built, or `names` is not a
            list of strings.

    Example:
        >>> opt = exclude_from_weight_decay(keras.optimizers.AdamW(1e-3, weight_decay=0.05))
        >>> model.compile(opt, loss=SmoothedCrossentropy(0.1))
    """
    import re

    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            "optimizer must be a keras.optimizers.Optimizer; Received: optimizer of type "
            f"{type(optimizer).__name__}"
        )
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"names must be a list of variable names such as ['bias']; Received: names={names!r}"
        )
    if getattr(optimizer, "built", False):  # Keras refuses later changes with a vaguer message
        raise ValueError(
            "exclude_from_weight_decay must be called before the optimizer is built (before the "
            "first fit/apply); Received: a built optimizer"
        )
    # Keras ORs the patterns into one regex searched in the variable's name, which the TF backend
    # gives as the full "layer/gamma:0"; anchor on the last path part so "beta" does not also
    # match e.g. "beta_1" or a layer called "alphabet".
    optimizer.exclude_from_weight_decay(
        var_names=[rf"(?:^|/){re.escape(n)}(?::\d+)?$" for n in names]
    )
    return optimizer
