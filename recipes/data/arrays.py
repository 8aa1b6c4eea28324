"""In-memory sources: numpy arrays, scikit-learn's digits, IDX files (MNIST layout)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

__all__ = ["as_nhwc_uint8", "from_arrays", "from_digits", "from_idx", "from_memory", "read_idx"]


def as_nhwc_uint8(x):
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"Images must have shape (N, H, W) or (N, H, W, 1|3); Received: shape={x.shape}"
        )
    if x.dtype != np.uint8:
        x = np.clip(x, 0, 255).astype(np.uint8) if x.max(initial=0) > 1.0 else (
            np.clip(x, 0, 1) * 255).round().astype(np.uint8)
    return x


def _arrays(source):
    if len(source) != 2:
        raise ValueError(f"Array source must be (x, y); Received: a sequence of {len(source)} items")
    x, y = as_nhwc_uint8(source[0]), np.asarray(source[1])
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            "y must be a 1-D array of integer labels, one per image; "
            f"Received: x with {len(x)} images, y with shape {y.shape} and dtype {y.dtype}"
        )
    if y.min() < 0:
        raise ValueError(f"Labels must be >= 0; Received: min label {y.min()}")
    return x, y.astype(np.int32), [str(i) for i in range(int(y.max()) + 1)]


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0-16; scale to the 0-255 range every model here expects.
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return x, digits.target.astype(np.int32), [str(n) for n in digits.target_names]


def read_idx(path) -> np.ndarray:
    """Reads an IDX file of uint8 data (MNIST layout, optionally gzipped) into an array.

    Raises:
        ValueError: Not an IDX file of uint8 data.

    Example:
        >>> read_idx("mnist/t10k-labels-idx1-ubyte.gz").shape
        (10000,)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"Not an IDX file of uint8 data: {path}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx(folder):
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"IDX folder not found; Received: 'idx:{folder}'")
    files = sorted(p for p in root.iterdir() if "-ubyte" in p.name)
    images = [p for p in files if "idx3" in p.name]
    labels = [p for p in files if "idx1" in p.name]

    def pair(prefix):
        im = [p for p in images if p.name.startswith(prefix)]
        lb = [p for p in labels if p.name.startswith(prefix)]
        return (im[0], lb[0]) if im and lb else None

    train, test = pair("train"), pair("t10k")
    pairs = [p for p in (train, test) if p]
    if not pairs:
        raise ValueError(
            f"No IDX image/label files (*-images-idx3-ubyte[.gz], *-labels-idx1-ubyte[.gz]) in {root}"
        )

    def load(p):
        x, y = read_idx(p[0]), read_idx(p[1]).astype(np.int32)
        if len(x) != len(y):
            raise ValueError(f"{p[0].name} has {len(x)} images but {p[1].name} has {len(y)} labels")
        return x[..., None], y

    if train and test:
        return (*load(train), *load(test))
    return (*load(pairs[0]), None, None)


def from_memory(x, y, class_names, *, x_test=None, y_test=None, image_size=None, batch_size=32,
                validation_split=0.1, test_split=0.1, seed=0, cache="auto", where="arrays"):
    """A `Data` from in-memory images: stratified splits (the official test set when given)."""
    from .core import check_classes, make_data, split

    check_classes(y, class_names, where)
    splits = split(len(y), y, validation_split, 0.0 if x_test is not None else test_split, seed)
    parts = {k: (x[i], y[i]) for k, i in splits.items()}
    if x_test is not None:
        parts["test"] = (x_test, y_test)
    return make_data(parts, class_names, image_size, batch_size, seed, where)


def from_arrays(source, **opts):
    """`(x, y)` numpy arrays: `x` (N, H, W) or (N, H, W, 1|3), `y` integer labels."""
    from .core import describe_source

    x, y, class_names = _arrays(source)
    return from_memory(x, y, class_names, where=describe_source(source), **opts)


def from_digits(**opts):
    """scikit-learn's bundled 8x8 digits, scaled to 0-255 (offline)."""
    x, y, class_names = _digits()
    return from_memory(x, y, class_names, where="digits", **opts)


def from_idx(folder, **opts):
    """IDX files (MNIST layout); `t10k-*` becomes the test split when `train-*` is there too."""
    x, y, x_test, y_test = _idx(folder)
    top = int(max(y.max(), -1 if y_test is None else y_test.max()))
    return from_memory(x, y, [str(i) for i in range(top + 1)], x_test=x_test, y_test=y_test,
                       where=f"idx:{folder}", **opts)
