"""`ensemble`: combine classifiers into one saveable model (average, vote or stack).

Every method gives one `keras.Model` from raw 0-255 pixels to class probabilities that saves and
reloads with `keras.models.load_model` (no custom_objects: `VoteShare`, the one layer core Keras
lacks, is registered when `recipes` is imported). Members keep their own preprocessing and input
size, so classifiers of different backbones and resolutions combine freely.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from . import validation as v

__all__ = ["ensemble", "METHODS", "VoteShare", "predict_split"]

#: How `ensemble` combines its members.
METHODS = ("average", "vote", "stack")

#: Weight of the mean probability in a vote's output: small enough never to change who has more
#: votes, large enough to break ties.
_TIE_WEIGHT = 1e-3


@keras.saving.register_keras_serializable(package="recipes")
class VoteShare(keras.layers.Layer):
    """Hard majority vote of members' probabilities, returned as the vote share per class.

    Output `(votes + t * mean_probability) / (total + t)` with votes the (weighted) count of
    members whose argmax is the class and `t` = `tie_weight`: it sums to 1, its argmax is the
    majority class, and a tie goes to the class with the higher mean probability.

    Args:
        vote_weights: One vote weight per member (default: 1 each).
        tie_weight: See above (default 1e-3).
    """

    def __init__(self, vote_weights=None, tie_weight=_TIE_WEIGHT, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.vote_weights = None if vote_weights is None else [float(w) for w in vote_weights]
        self.tie_weight = float(tie_weight)

    def call(self, inputs):
        probs = ops.stack([ops.cast(p, "float32") for p in inputs], axis=1)  # (N, M, C)
        classes = int(inputs[0].shape[-1])
        votes = ops.one_hot(ops.argmax(probs, axis=-1), classes, dtype="float32")
        w = self.vote_weights or [1.0] * len(inputs)
        w_col = ops.reshape(ops.convert_to_tensor(w, "float32"), (1, -1, 1))
        counts = ops.sum(votes * w_col, axis=1)
        mean = ops.sum(probs * w_col, axis=1) / sum(w)
        return (counts + self.tie_weight * mean) / (sum(w) + self.tie_weight)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "vote_weights": self.vote_weights,
                "tie_weight": self.tie_weight}


def predict_split(models, dataset):
    """Every model's probabilities on a batched `(images, labels)` dataset, and the labels.

    Returns:
        `(probabilities, labels)`: a list of `(N, C)` arrays (one per model) and `(N,)` ints.
    """
    xs, ys = [], []
    for x, y in dataset:
        xs.append(np.asarray(x))
        ys.append(np.asarray(y))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return [np.asarray(m.predict(x, batch_size=256, verbose=0)) for m in models], y.astype(int)


def ensemble(models, method="average", *, weights=None, data=None, input_shape=None,
             name="ensemble"):
    """Combines classifiers into one model: mean probability, majority vote, or a stacked learner.

    - `"average"`: the (weighted) mean of the members' probabilities.
    - `"vote"`: each member votes for its argmax (weighted by `weights`); the output is the vote
      share per class (sums to 1), ties broken by the mean probability (`VoteShare`).
    - `"stack"`: scikit-learn's `LogisticRegression` fitted on the members' probabilities for
      `data.validation` (never the test split), written into a Dense + softmax layer, so the
      output is exactly the fitted regression's `predict_proba`.

    Members sharing a name (two runs of one backbone) are renamed `<name>_<index>`.

    Args:
        models: Two or more `keras.Model`s with the same number of classes.
        method: `"average"` (default), `"vote"` or `"stack"`.
        weights: Non-negative weight per model (default: equal); normalized to sum to 1. Not
            for `"stack"` (it learns its own).
        data: A `recipes.Data` with a validation split (`"stack"` only).
        input_shape: Shape of the shared raw input (default: the first model's input shape).
        name: Model name (default "ensemble").

    Returns:
        A `keras.Model` that saves and reloads like any other.

    Raises:
        ValueError: Fewer than two models, differing class counts, an unknown method, bad
            weights, or `"stack"` without validation data.

    Example:
        >>> both = recipes.ensemble([run_a.model, run_b.model], weights=[2, 1])
        >>> stacked = recipes.ensemble(models, "stack", data=data)
    """
    import keras

    models = list(models)
    v.check_choice("method", method, METHODS)
    if len(models) < 2:
        raise ValueError(f"An ensemble needs at least 2 models; Received: {len(models)}")
    classes = {m.output_shape[-1] for m in models}
    if len(classes) != 1:
        raise ValueError(f"Models must predict the same number of classes; Received: {sorted(classes)}")
    if method == "stack":
        if weights is not None:
            raise ValueError("method='stack' learns its own member weights; Received: "
                             f"weights={weights}")
        if data is None or getattr(data, "validation", None) is None:
            raise ValueError("method='stack' fits its meta-learner on data.validation; Received: "
                             + ("data=None" if data is None else "data without a validation split"))
    if weights is None:
        weights = [1.0] * len(models)
    weights = [float(w) for w in weights]
    if len(weights) != len(models) or min(weights) < 0 or sum(weights) == 0:
        raise ValueError(
            f"weights must be {len(models)} non-negative numbers, not all 0; Received: {weights}"
        )
    total = sum(weights)
    seen = set()
    for i, m in enumerate(models):
        if m.name in seen:  # e.g. two runs of one backbone; Keras needs unique layer names
            m.name = f"{m.name}_{i}"
        seen.add(m.name)
    inputs = keras.Input(shape=input_shape or models[0].input_shape[1:], name="image")
    outputs = [m(inputs) for m in models]
    if method == "vote":
        out = VoteShare(weights, name="vote_share")(outputs)
    elif method == "stack":
        out = _stack_head(models, outputs, data, classes.pop())
    else:
        scaled = [
            keras.layers.Rescaling(w / total, name=f"weight_{i}", dtype="float32")(o)
            for i, (w, o) in enumerate(zip(weights, outputs))
        ]
        out = keras.layers.Add(name="mean_probabilities", dtype="float32")(scaled)
    return keras.Model(inputs, out, name=name)


def fit_stacker(member_probabilities, labels):
    """The meta-learner `"stack"` uses: a `LogisticRegression` on the concatenated probabilities.

    Returns:
        The fitted `sklearn.linear_model.LogisticRegression`.
    """
    from sklearn.linear_model import LogisticRegression

    features = np.concatenate(member_probabilities, axis=1)
    return LogisticRegression(max_iter=2000).fit(features, labels)


def _stack_head(models, outputs, data, num_classes):
    """Dense + softmax whose output equals the fitted LogisticRegression's `predict_proba`."""
    import keras

    probs, labels = predict_split(models, data.validation)
    if len(np.unique(labels)) < 2:
        raise ValueError("method='stack' needs at least 2 classes in data.validation; Received: "
                         f"labels {sorted(set(labels.tolist()))}")
    meta = fit_stacker(probs, labels)
    features = sum(p.shape[1] for p in probs)
    kernel = np.zeros((features, num_classes), "float32")
    # A class the validation split lacks can never be predicted by the regression either.
    bias = np.full((num_classes,), -1e4, "float32")
    cls = meta.classes_.astype(int)
    if len(cls) == 2:  # binary: predict_proba = [1 - sigmoid(z), sigmoid(z)] = softmax([0, z])
        kernel[:, cls[1]] = meta.coef_[0]
        bias[cls] = [0.0, meta.intercept_[0]]
    else:
        kernel[:, cls] = meta.coef_.T
        bias[cls] = meta.intercept_
    joined = keras.layers.Concatenate(name="member_probabilities", dtype="float32")(outputs)
    dense = keras.layers.Dense(num_classes, activation="softmax", name="stacker", dtype="float32")
    out = dense(joined)
    dense.set_weights([kernel, bias])
    return out
