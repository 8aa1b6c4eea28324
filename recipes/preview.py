"""A PNG grid of images next to augmented copies of themselves (`recipes augment-preview`)."""

from __future__ import annotations

import numpy as np

from . import validation as v
from .plotting import image_grid

__all__ = ["augment_preview", "take_images"]


def augment_preview(images, layer, path, *, n=8, repeats=4, seed=0, flip=True):
    """Writes a PNG grid: one row per image, the original first, then `repeats` augmented copies.

    Args:
        images: Array-like `(count, height, width)` or `(count, height, width, 1 or 3)` of raw
            0-255 pixels (numpy, tf tensor).
        layer: An augmentation layer, or anything `recipes.augment.augmentation` accepts (preset,
            list, comma-separated string), built with `seed` and `flip`.
        path: Output file (`.png`); parent folders are created.
        n: How many images (rows), at most `count` (default 8).
        repeats: Augmented copies per image (columns after the original, default 4).
        seed: Seed for a layer built from a spec (default 0); a layer object keeps its own seed.
        flip: False drops flips when `layer` is a spec (default True).

    Returns:
        The `pathlib.Path` written. Small images are enlarged (nearest neighbour) to at least
        64 px per tile; augmented pixels are clipped to 0-255 for display.

    Raises:
        ValueError: Images of the wrong rank or channel count, fewer images than `n`, `n` or
            `repeats` < 1, or a spec that builds no layer (e.g. `"none"`).

    Example:
        >>> augment_preview(x_train[:8], "medium", "grid.png", repeats=4)
        PosixPath('grid.png')
    """
    import keras

    from .augment import augmentation

    n = v.check_int("n", n, 1)
    repeats = v.check_int("repeats", repeats, 1)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            "images must have shape (count, height, width) or (count, height, width, 1 or 3); "
            f"Received: images with shape {images.shape}"
        )
    if len(images) < n:
        raise ValueError(f"Need at least n={n} images; Received: {len(images)} images")
    if not isinstance(layer, keras.layers.Layer):
        spec = layer
        layer = augmentation(spec, seed=seed, flip=flip)
        if layer is None:
            raise ValueError(f"Nothing to preview: augmentation={spec!r} builds no layer")
    originals = images[:n].astype("float32")
    columns = [originals]
    for _ in range(repeats):
        columns.append(np.asarray(layer(originals, training=True)))
    return image_grid(columns, path)


def take_images(dataset, n):
    """The first `n` images of a dataset of images or `(images, labels)`, batched or not.

    Returns:
        A numpy array of at most `n` images.

    Raises:
        ValueError: A dataset that yields no images.
    """
    taken, count = [], 0
    for batch in dataset:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images = np.asarray(images)
        if images.ndim == 3:  # an unbatched dataset yields single images
            images = images[None]
        taken.append(images)
        count += len(images)
        if count >= n:
            break
    if not taken:
        raise ValueError("The dataset yielded no images")
    return np.concatenate(taken)[:n]
