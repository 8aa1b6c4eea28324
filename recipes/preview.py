"""`recipes augment-preview`: a PNG grid of images next to augmented copies of themselves."""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

__all__ = ["augment_preview", "add_preview_parser"]

_MIN_TILE = 64  # digits are 8x8: blow small images up so the grid is readable


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; Received: {name}={value!r}")
    return int(value)


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

    n = _check_count("n", n)
    repeats = _check_count("repeats", repeats)
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
    return _write_grid(columns, Path(path))


def _write_grid(columns, path):
    from PIL import Image

    n, height, width, channels = columns[0].shape
    scale = max(1, -(-_MIN_TILE // min(height, width)))
    pad = 2
    tile_h, tile_w = height * scale, width * scale
    grid = np.full(
        (n * (tile_h + pad) + pad, len(columns) * (tile_w + pad) + pad, channels), 255, "uint8"
    )
    for c, batch in enumerate(columns):
        tiles = np.clip(np.rint(batch), 0, 255).astype("uint8")
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        for r in range(n):
            top, left = pad + r * (tile_h + pad), pad + c * (tile_w + pad)
            grid[top:top + tile_h, left:left + tile_w] = tiles[r]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path, format="PNG")
    return path


def _take_images(dataset, n):
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


def _run_preview(args):
    from .augment import augmentation
    from .data import load_data

    _check_count("--n", args.n)
    _check_count("--repeats", args.repeats)
    layer = augmentation(args.augment, flip=not args.no_flip, seed=args.seed)
    if layer is None:
        raise ValueError(f"Nothing to preview: --augment {args.augment!r} builds no layer")
    data = load_data(args.dataset)
    images = _take_images(data.train, args.n)
    n = min(args.n, len(images))
    path = augment_preview(images, layer, args.out, n=n, repeats=args.repeats)
    print(f"Wrote {path} ({len(images)} images x {args.repeats} augmented copies)")
    return 0


def add_preview_parser(subparsers):
    """Registers the `augment-preview` subcommand on an argparse subparsers object.

    Args:
        subparsers: What `ArgumentParser.add_subparsers()` returned.

    Returns:
        The new subparser; its `func` default is the handler, which returns an exit code.

    Example:
        >>> sub = parser.add_subparsers(dest="command")
        >>> add_preview_parser(sub)
        >>> args = parser.parse_args(["augment-preview", "--augment", "heavy"]); args.func(args)
    """
    parser = subparsers.add_parser(
        "augment-preview",
        help="write a PNG grid of training images and augmented copies",
        description="Writes a PNG grid: each row an image from the training set, first the "
        "original, then augmented copies.",
    )
    parser.add_argument(
        "--dataset", default="digits", help="source for recipes.data.load_data (default: digits)"
    )
    parser.add_argument(
        "--augment", default="medium",
        help="preset (light, medium, heavy, randaugment) or list such as "
        "'rotation:0.1,zoom:0.2' (default: medium)",
    )
    parser.add_argument(
        "--out", default="augment_preview.png", help="output PNG (default: augment_preview.png)"
    )
    parser.add_argument("--n", type=int, default=8, help="number of images (rows, default 8)")
    parser.add_argument(
        "--repeats", type=int, default=4, help="augmented copies per image (default 4)"
    )
    parser.add_argument("--no-flip", action="store_true", help="drop flips (digits, text)")
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed (default 0)")
    parser.set_defaults(func=_run_preview)
    return parser
