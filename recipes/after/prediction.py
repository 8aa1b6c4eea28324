"""`predict`: class probabilities for image files, folders or arrays, streamed in batches."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .. import validation as v
from ..run import RunFolder
from .common import class_names_for, list_images, model_image_shape, open_model, read_images

__all__ = ["Predictions", "predict", "as_model_input"]


@dataclasses.dataclass
class Predictions:
    """What `predict` returns.

    Attributes:
        probabilities: `(N, C)` float32; rows of unreadable files are NaN.
        class_names: Names, index = label.
        paths: The image files, in order (None for arrays).
        errors: `{index: message}` of the files that could not be read.
    """

    probabilities: np.ndarray
    class_names: list
    paths: list | None = None
    errors: dict = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.probabilities)

    def top(self, k: int = 1):
        """`(indices, probabilities)` of the `k` most likely classes, each `(N, k)`, best first
        (index -1 and NaN for unreadable files)."""
        k = _check_top_k(k, len(self.class_names))
        p = np.nan_to_num(self.probabilities, nan=-1.0)
        idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
        probs = np.take_along_axis(self.probabilities, idx, axis=1)
        idx[list(self.errors)] = -1
        return idx, probs

    @property
    def labels(self) -> list:
        """Predicted class name per image (None for unreadable files)."""
        idx = self.top(1)[0][:, 0]
        return [None if i < 0 else self.class_names[i] for i in idx]

    def rows(self, top_k: int = 1) -> list[dict]:
        """CSV rows: `path` (or `index`), `label`, `probability`, then `label_2`,
        `probability_2`, ... up to `top_k`; `error` for files that could not be read."""
        idx, probs = self.top(top_k)
        rows = []
        for n in range(len(self)):
            row = {"path": self.paths[n]} if self.paths is not None else {"index": n}
            for j in range(idx.shape[1]):
                suffix = "" if j == 0 else f"_{j + 1}"
                ok = n not in self.errors
                row[f"label{suffix}"] = self.class_names[idx[n, j]] if ok else ""
                row[f"probability{suffix}"] = f"{probs[n, j]:.6f}" if ok else ""
            if self.errors:
                row["error"] = self.errors.get(n, "")
            rows.append(row)
        return rows

    def to_csv(self, path, top_k: int = 1) -> Path:
        """Writes `rows(top_k)` as CSV (atomically) and returns the path."""
        path = Path(path)
        return RunFolder(path.parent).write_csv(path.name, self.rows(top_k))


def _check_top_k(top_k, num_classes):
    return v.check_number("top_k", top_k, 1, num_classes, integer=True, high_open=False)


def as_model_input(images, model):
    """Array images as the model takes them: its declared channels (gray <-> RGB) and size.

    Args:
        images: `(N, H, W)` or `(N, H, W, 1|3|4)` array, uint8 or float 0-255 (alpha dropped).
        model: The classifier.

    Returns:
        A float32 `(N, H', W', C')` array.

    Raises:
        ValueError: Another shape.
    """
    import tensorflow as tf

    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Images must have shape (N, H, W) or (N, H, W, 1|3|4); Received: "
                         f"shape={x.shape}")
    x = x[..., :3].astype("float32") if x.shape[-1] == 4 else x.astype("float32")
    h, w, channels = model_image_shape(model)
    if channels == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    elif channels == 1 and x.shape[-1] == 3:
        x = tf.image.rgb_to_grayscale(x).numpy()
    if h and w and x.shape[1:3] != (h, w):
        x = tf.image.resize(x, (h, w)).numpy()
    return x


def predict(model_or_run, inputs, *, top_k=1, batch_size=64, out=None, class_names=None,
            crop=None) -> Predictions:
    """Class probabilities for images: files, folders (recursive) or an array.

    Files of any size and channel count are decoded and resized to what the model takes, one
    batch at a time (a folder of 100k images is never in memory at once); files that cannot be
    read get an error instead of stopping the run.

    Args:
        model_or_run: A run folder, a `.keras` file or a `keras.Model`.
        inputs: An image file, a folder, a list of them, or an `(N, H, W[, C])` array.
        top_k: Classes per image in `rows` and the CSV (default 1).
        batch_size: Images per batch (default 64).
        out: Write the predictions as CSV here (default: no file).
        class_names: Names (default: the run's image-folder classes, else "0", "1", ...).
        crop: How files of another aspect ratio reach the model's size: None (stretch, the
            default), "center" or "pad" (default: the run's recipe `crop`).

    Returns:
        `Predictions`.

    Raises:
        ValueError: A bad model or run, a path that does not exist, no images, `top_k` outside
            1..number of classes.

    Example:
        >>> preds = recipes.predict("runs/digits", "new_images/", top_k=3, out="preds.csv")
        >>> preds.labels[:3], len(preds.errors)
    """
    src = open_model(model_or_run)
    model = src.model
    num_classes = int(model.outputs[0].shape[-1])
    top_k = _check_top_k(top_k, num_classes)
    v.check_int("batch_size", batch_size, 1)
    names = list(class_names) if class_names is not None else class_names_for(src, num_classes)
    if len(names) != num_classes:
        raise ValueError(f"class_names must name all {num_classes} classes; Received: "
                         f"{len(names)} names")
    if isinstance(inputs, np.ndarray):
        x = as_model_input(inputs, model)
        probs = model.predict(x, batch_size=batch_size, verbose=0).astype("float32")
        preds = Predictions(probs, names)
    else:
        if crop is None and src.recipe is not None:
            crop = src.recipe.crop
        paths = list_images(inputs)
        probs = np.full((len(paths), num_classes), np.nan, "float32")
        errors = {}
        for indices, images, bad in read_images(paths, model, batch_size=batch_size, crop=crop):
            errors.update(bad)
            if images is not None:
                probs[indices] = np.asarray(model.predict_on_batch(images.astype("float32")))
        preds = Predictions(probs, names, [os.fspath(p) for p in paths], errors)
    if out is not None:
        preds.to_csv(out, top_k)
    return preds
