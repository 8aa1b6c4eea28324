"""MixUp / CutMix on integer-labelled tf.data batches, label smoothing, and metrics for soft labels.

Keras' own `MixUp`/`CutMix` layers want dict inputs and one-hot labels, and
`SparseCategoricalCrossentropy` has no label smoothing. Here:

- `mix_batches(dataset, num_classes, mixup=0.2, cutmix=1.0)` mixes batches of
  `(images, integer labels)` into `(mixed images, soft labels (batch, num_classes))`.
- `SmoothedCrossentropy(label_smoothing)` takes integer *or* soft labels, so one compiled loss
  serves soft-labelled training batches and integer-labelled validation batches.
- `MixedAccuracy` (top-1, or top-k with `k=5`) likewise takes both label kinds.
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from . import validation as v

__all__ = ["mix_batches", "SmoothedCrossentropy", "MixedAccuracy"]


def _sample_beta(alpha, seed):
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
    # Beta(alpha, alpha) as a ratio of gammas; the epsilon avoids 0/0 for tiny alphas.
    return a / tf.maximum(a + b, 1e-12)


def mix_batches(
    dataset, num_classes, *, mixup=0.2, cutmix=1.0, switch_prob=0.5, prob=1.0, seed=None,
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

    num_classes = v.check_int("num_classes", num_classes, 2)
    mixup = float(v.check_number("mixup", mixup, 0))
    cutmix = float(v.check_number("cutmix", cutmix, 0))
    switch_prob = float(v.check_number("switch_prob", switch_prob, 0, 1, high_open=False))
    prob = float(v.check_number("prob", prob, 0, 1, high_open=False))
    if mixup == 0 and cutmix == 0:
        raise ValueError(
            "mix_batches needs mixup > 0 or cutmix > 0 (Beta alphas); Received: mixup=0, cutmix=0"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an int or None; Received: seed={seed!r}")
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
        self.label_smoothing = float(v.check_number("label_smoothing", label_smoothing, 0, 1))
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
            accuracy; `MixedAccuracy(k=5, name="top5_accuracy")` for top-5).

    Returns:
        A Keras metric; `result()` is the running mean accuracy.

    Raises:
        ValueError: `k` not an int >= 1.

    Example:
        >>> m = MixedAccuracy(); m.update_state([[0.7, 0.3]], [[0.6, 0.4]]); float(m.result())
        1.0
    """

    def __init__(self, name="accuracy", dtype=None, k=1):
        k = v.check_int("k", k, 1)
        if k == 1:
            super().__init__(fn=mixed_accuracy, name=name, dtype=dtype)
        else:
            super().__init__(fn=mixed_top_k_accuracy, name=name, dtype=dtype, k=k)
        self.k = k
        from .compat import set_metric_direction

        set_metric_direction(self, "up")  # KerasTuner maximizes it

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "k": self.k}
