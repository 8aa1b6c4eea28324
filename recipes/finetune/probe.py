"""Linear probe: a scikit-learn logistic regression on frozen features, written into the head.

`linear_probe` runs the classifier up to its `"logits"` layer in inference mode (dropout off,
BatchNorm on its moving statistics), fits `sklearn.linear_model.LogisticRegression` on those
features of (up to `max_images`) training images, and writes the fitted weights into the
`"logits"` Dense layer. On small data this gives phase 2 of fine-tuning a head that already
separates the classes instead of a random one, so the first unfrozen steps do not send large
random-head gradients into the backbone (as in "LP-FT", Kumar et al., 2022).

The features are standardized for the fit (so one grid of `C` values suits any backbone's
feature scale) and the scaling is folded back into the kernel and bias, so the Keras layer
computes sklearn's decision function exactly: the model's probabilities on the probe images
equal `predict_proba` up to float rounding.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..validation import check_int, check_number

__all__ = ["linear_probe", "PROBE_C_GRID", "LOGITS_LAYER"]

#: The values of `C` (inverse L2 strength) `linear_probe` tries when a validation split exists.
PROBE_C_GRID = (0.01, 0.1, 1.0, 10.0)

#: Name of the classifier's final Dense layer (see `recipes.build_classifier`).
LOGITS_LAYER = "logits"

# A class without training images gets this many nats below the smallest top logit seen on the
# probe images: its probability is < e^-20 (2e-9) there, yet the logit stays finite and moderate,
# so a phase 2 with label smoothing (which gives every class a small target) sees a bounded loss
# and float16 logits under mixed precision do not overflow.
_MISSING_CLASS_MARGIN = 20.0


def linear_probe(model, data, *, max_images=20000, C=None, seed=0, verbose=True) -> dict:
    """Fits a linear classifier on the frozen features and writes it into the `"logits"` layer.

    Features are the input of the `"logits"` Dense layer, computed in inference mode (after
    pooling and any head BatchNorm; dropout off). A multinomial `LogisticRegression` (lbfgs,
    `max_iter=1000`) is fitted on standardized features; the standardization is folded into the
    weights written back (`W' = W / std`, `b' = b - (mean / std) @ W`), so the model's
    probabilities on the probe images equal sklearn's `predict_proba`. Only the `"logits"`
    layer's kernel and bias change; the optimizer state, if any, is untouched.

    Classes without training images (possible with `max_images` smaller than the training split,
    or with a split that lacks a rare class) get a zero kernel column and a bias 20 nats below
    the smallest top logit on the probe images: they are never predicted on those images, and
    the logits stay finite (safe for label smoothing and float16).

    Args:
        model: A classifier from `recipes.build_classifier` without hidden dense layers
            (`dense_units=()`), e.g. right after phase 1 of `fine_tune`, or freshly built.
        data: A `recipes.data.Data`. Training images come from `data.train_pipeline(seed)`
            (shuffled with `seed`, so a smaller `max_images` is a random sample, the same for
            the same seed); `data.validation`, when there is one, chooses `C`.
        max_images: Use at most this many training images, and as many validation images
            (default 20000).
        C: Inverse L2 regularization strength of the logistic regression. None (default): the
            value of `PROBE_C_GRID` (0.01, 0.1, 1, 10) with the best validation accuracy (ties:
            the smaller, stronger-regularized one); 1.0 without a validation split.
        seed: Seed of the training pipeline's shuffle (default 0).
        verbose: Print one summary line (default True).

    Returns:
        A dict: `probe_train_accuracy` and `probe_validation_accuracy` (None without a
        validation split) of the fitted probe, `C` (the value used), `images` (training images
        fitted on), `features` (feature dimension) and `seconds` (wall time, features included).

    Raises:
        ValueError: No Dense layer named `"logits"`, a head with hidden dense layers, bad
            `max_images`/`C`/`seed`, a logits layer whose width is not `data.num_classes`, or
            probe images of a single class.

    Example:
        >>> from recipes.finetune.probe import linear_probe
        >>> model = recipes.build_classifier("mobilenet_v3_small", 5, weights="imagenet",
        ...                                  trainable_backbone=False)
        >>> result = linear_probe(model, recipes.load_data("flowers/"))  # prints one line:
        linear probe: C=<chosen> on <n> images x 576 features: train <acc>, validation <acc> (<t> s)
        >>> sorted(result)
        ['C', 'features', 'images', 'probe_train_accuracy', 'probe_validation_accuracy', 'seconds']
    """
    import keras

    max_images = check_int("max_images", max_images, 1)
    C = check_number("C", C, 0, low_open=True, allow_none=True)
    seed = check_int("seed", seed, 0)
    logits = _logits_layer(model)
    num_classes = int(logits.units)
    if num_classes != data.num_classes:
        raise ValueError(
            f"The model's logits layer must have one unit per class of the data; Received: "
            f"{num_classes} units for data with {data.num_classes} classes"
        )
    start = time.perf_counter()
    # The layer's input, not the backbone's output: any head BatchNorm/Flatten is part of the
    # features, so the probe is exactly what the logits layer sees at inference.
    extractor = keras.Model(model.input, logits.input, name="probe_features")
    x_train, y_train = _features(extractor, data.train_pipeline(seed), max_images)
    present = np.unique(y_train)
    if len(present) < 2:
        which = f"all of class {data.class_names[int(present[0])]!r}" if len(present) else "none"
        raise ValueError(
            "A linear probe needs training images of at least 2 classes; Received: "
            f"{len(y_train)} images, {which}. Use a larger max_images."
        )
    validation = None
    if data.validation is not None:
        validation = _features(extractor, data.validation, max_images)
        if not len(validation[1]):
            validation = None

    mean, scale = _standardization(x_train)
    z_train = (x_train - mean) / scale
    z_val = None if validation is None else (validation[0] - mean) / scale
    if C is None and validation is not None:
        best = None
        for value in PROBE_C_GRID:  # ascending, so a strict ">" keeps the smaller C on ties
            clf = _fit(z_train, y_train, value, seed)
            score = clf.score(z_val, validation[1])
            if best is None or score > best[0]:
                best = (score, value, clf)
        val_acc, C, clf = best
    else:
        C = 1.0 if C is None else float(C)
        clf = _fit(z_train, y_train, C, seed)
        val_acc = None if validation is None else clf.score(z_val, validation[1])
    train_acc = clf.score(z_train, y_train)

    kernel, bias = _dense_weights(clf, mean, scale, num_classes, x_train)
    logits.kernel.assign(kernel.astype(logits.kernel.dtype))
    logits.bias.assign(bias.astype(logits.bias.dtype))
    seconds = time.perf_counter() - start
    result = {
        "probe_train_accuracy": float(train_acc),
        "probe_validation_accuracy": None if val_acc is None else float(val_acc),
        "C": float(C),
        "images": int(len(y_train)),
        "features": int(x_train.shape[1]),
        "seconds": float(seconds),
    }
    if verbose:
        val = "" if val_acc is None else f", validation {val_acc:.3f}"
        print(f"linear probe: C={C:g} on {len(y_train)} images x {x_train.shape[1]} features: "
              f"train {train_acc:.3f}{val} ({seconds:.1f} s)", flush=True)
    return result


def _logits_layer(model):
    import keras

    layers = {layer.name: layer for layer in getattr(model, "layers", [])}
    logits = layers.get(LOGITS_LAYER)
    if not isinstance(logits, keras.layers.Dense) or not logits.use_bias:
        found = "none" if logits is None else type(logits).__name__
        raise ValueError(
            "linear_probe needs a classifier whose last Dense layer (with bias) is named "
            f"'logits', as recipes.build_classifier makes; Received: {found} layer named "
            f"'logits' in model {getattr(model, 'name', type(model).__name__)!r}"
        )
    # A probe onto the last hidden layer of a random MLP fits random features; any Dense layer
    # beside the logits at the top level is a hidden head layer (the backbone is one layer).
    hidden = tuple(int(layer.units) for layer in model.layers
                   if isinstance(layer, keras.layers.Dense) and layer is not logits)
    if hidden:
        raise ValueError(
            "linear_probe needs a head without hidden dense layers (dense_units=()); "
            f"Received: dense_units={hidden}"
        )
    return logits


def _features(extractor, dataset, limit):
    """Features and labels of the first `limit` examples of `dataset`, paired batch by batch."""
    feats, labels, count, width = [], [], 0, None
    for images, y in dataset:
        images = np.asarray(images)
        take = min(limit - count, len(images))
        width = width or len(images)
        if len(images) < width:
            # Pad a short last batch to the first one's size: one more shape would trace the
            # predict function again (seconds), padding costs a few wasted rows.
            pad = np.zeros((width - len(images), *images.shape[1:]), images.dtype)
            images = np.concatenate([images, pad])
        # predict_on_batch: the compiled inference step (training=False), one batch at a time so
        # each batch's labels stay with its features whatever order the pipeline yields.
        out = np.asarray(extractor.predict_on_batch(images), np.float64)[:take]
        feats.append(out.reshape(take, -1))
        labels.append(np.asarray(y[:take]).astype(np.int64))
        count += take
        if count >= limit:
            break
    if not feats:
        return np.zeros((0, 0)), np.zeros((0,), np.int64)
    return np.concatenate(feats), np.concatenate(labels)


def _standardization(x):
    mean, std = x.mean(axis=0), x.std(axis=0)
    # The written kernel is W / scale: a feature that barely varies would get a huge weight, one
    # that overflows float16 under mixed precision. A floor at 1e-3 of the median spread bounds it
    # (the fit sees the same scale, so the head still equals sklearn's). Constant features (dead
    # ReLU units) are only centred, as StandardScaler does; their weight is 0 anyway.
    positive = std[std > 1e-12]
    floor = 1e-3 * float(np.median(positive)) if len(positive) else 0.0
    scale = np.maximum(std, floor)
    scale[std <= 1e-12] = 1.0
    return mean, scale


def _fit(z, y, C, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=1000, random_state=seed)
    with warnings.catch_warnings():
        # Large C on separable features keeps growing the weights until max_iter; the head it
        # stops at still separates the classes, which is all a starting point needs.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(z, y)
    return clf


def _dense_weights(clf, mean, scale, num_classes, x_train):
    """The `(features, K)` kernel and `(K,)` bias that compute `clf`'s decision on raw features."""
    coef, intercept = np.asarray(clf.coef_, np.float64), np.asarray(clf.intercept_, np.float64)
    if len(clf.classes_) == 2:
        # Binary sklearn keeps one decision function f (p1 = sigmoid(f)); softmax over
        # (-f/2, f/2) gives the same probabilities.
        coef = np.stack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    w = (coef / scale).T  # fold the standardization: ((x - mean) / scale) @ W + b
    b = intercept - mean @ w
    classes = np.asarray(clf.classes_, np.int64)
    kernel = np.zeros((w.shape[0], num_classes))
    kernel[:, classes] = w
    bias = np.zeros(num_classes)
    bias[classes] = b
    missing = np.setdiff1d(np.arange(num_classes), classes)
    if len(missing):
        top = (x_train @ w + b).max(axis=1).min()
        bias[missing] = top - _MISSING_CLASS_MARGIN
    return kernel, bias
