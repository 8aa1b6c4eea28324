"""Macro precision and recall for single-label multi-class models, from a confusion matrix.

Keras' Precision/Recall are binary (or micro-averaged, which equals accuracy for single-label
data); these accept integer labels or one-hot/soft labels (MixUp/CutMix) alike.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["MacroPrecision", "MacroRecall"]


class _ConfusionMetric(keras.metrics.Metric):
    def __init__(self, num_classes, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2; Received: num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros", name="confusion"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.argmax(y_pred, axis=-1)
        if len(y_true.shape) >= 2 and y_true.shape[-1] not in (None, 1):
            y_true = ops.argmax(y_true, axis=-1)  # one-hot or soft (mixed) labels
        y_true = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        y_pred = ops.cast(ops.reshape(y_pred, (-1,)), "int32")
        # Row = true class, column = predicted class.
        pairs = ops.one_hot(y_true * self.num_classes + y_pred, self.num_classes**2)
        if sample_weight is not None:
            pairs = pairs * ops.reshape(ops.cast(sample_weight, pairs.dtype), (-1, 1))
        counts = ops.reshape(ops.sum(pairs, axis=0), (self.num_classes, self.num_classes))
        self.confusion.assign_add(ops.cast(counts, self.confusion.dtype))

    def reset_state(self):
        # ops.zeros_like(variable) fails on JAX (numpy cannot read a Keras variable's dtype).
        self.confusion.assign(ops.zeros(self.confusion.shape, dtype=self.confusion.dtype))

    def _macro(self, axis):
        diag = ops.diagonal(self.confusion)
        totals = ops.sum(self.confusion, axis=axis)
        present = ops.cast(totals > 0, diag.dtype)
        per_class = diag / ops.maximum(totals, 1.0)
        return ops.sum(per_class * present) / ops.maximum(ops.sum(present), 1.0)

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}


@keras.saving.register_keras_serializable(package="recipes")
class MacroPrecision(_ConfusionMetric):
    """Precision averaged over the classes that were predicted at least once.

    Args:
        num_classes: Number of classes.
        name: Default `"precision"`.

    Example:
        >>> m = MacroPrecision(3); m.update_state([0, 1, 2], np.eye(3)); float(m.result())
        1.0
    """

    def __init__(self, num_classes, name="precision", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        return self._macro(axis=0)


@keras.saving.register_keras_serializable(package="recipes")
class MacroRecall(_ConfusionMetric):
    """Recall averaged over the classes present in the labels.

    Args:
        num_classes: Number of classes.
        name: Default `"recall"`.
    """

    def __init__(self, num_classes, name="recall", dtype=None):
        super().__init__(num_classes, name=name, dtype=dtype)

    def result(self):
        return self._macro(axis=1)
