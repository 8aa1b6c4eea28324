"""In-memory sources: numpy arrays, scikit-learn's digits, IDX files (MNIST layout).

The images stay in the caller's (or the reader's) numpy array: splits are index arrays and the
pipelines gather one batch at a time from it (`tf.numpy_function`), so there is no per-split copy
and no graph constant (`from_tensor_slices` would copy the array into the graph, which TensorFlow
caps at 2 GB). Uncompressed IDX files are memory-mapped, so they are not even read up front.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

__all__ = ["as_nhwc_uint8", "class_labels", "from_arrays", "from_digits", "from_idx", "from_memory", "make_data",
           "array_pipeline", "read_idx"]


def _as_nhwc(x):
    """`x` as (N, H, W, C) with C in 1|3, a view when it can be (never a copy of uint8 data)."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(
            f"Images must have shape (N, H, W) or (N, H, W, 1|3); Received: shape={x.shape}"
        )
    return x


def _pixel_range(x, where="images"):
    """How `x`'s values map to 0-255: `"uint8"`, `"0-1"`, `"0-255"` or `"16-bit"`.

    Floats: NaN or inf anywhere is an error (one pixel would otherwise decide the scale of every
    image); a maximum of at most 1 means 0-1 images, else the values must lie in [0, 255].
    Integers: uint16 arrays holding values above 255 are 16-bit images (scaled by 255 / 65535);
    other integer arrays must lie in [0, 255]. Two passes over `x` (min and max), no copy.

    Raises:
        ValueError: Non-finite values, or values outside the ranges above (the range found).
    """
    if x.dtype == np.uint8:
        return "uint8"
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{where} must be integer or float pixels; Received: dtype {x.dtype}")
    if x.size == 0:
        return "0-255"
    low, high = x.min(), x.max()
    if np.issubdtype(x.dtype, np.floating) and not (np.isfinite(low) and np.isfinite(high)):
        nan, inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        raise ValueError(
            f"{where} hold non-finite pixel values; Received: {nan} NaN and {inf} inf values in "
            f"an array of shape {x.shape}. Replace them (e.g. np.nan_to_num) before loading."
        )
    if x.dtype == np.uint16 and high > 255:
        return "16-bit"
    if low >= 0 and high <= 1 and np.issubdtype(x.dtype, np.floating):
        return "0-1"
    if low < 0 or high > 255:
        raise ValueError(
            f"{where} must hold pixels in [0, 1] or [0, 255]; Received: values in "
            f"[{low:g}, {high:g}] (dtype {x.dtype}). Rescale them first, e.g. "
            "(x - x.min()) / (x.max() - x.min()) * 255."
        )
    return "0-255"


def _to_uint8(x, where="images"):
    """The function that turns a batch of `x` into uint8 0-255 (identity for uint8 arrays).

    The scale is decided once for the whole array (`_pixel_range`); converting batch by batch
    keeps a float array from being copied whole into uint8.
    """
    scale = _pixel_range(x, where)
    if scale == "uint8":
        return lambda batch: batch
    if scale == "16-bit":
        return lambda batch: np.round(batch * (255.0 / 65535.0)).astype(np.uint8)
    if scale == "0-1":
        return lambda batch: (np.clip(batch, 0, 1) * 255).round().astype(np.uint8)
    return lambda batch: np.clip(np.round(batch), 0, 255).astype(np.uint8)


def class_labels(*label_arrays, where="labels"):
    """Integer labels as 0..K-1 and their class names.

    Labels already 0..K-1 keep their values (names `"0"`, `"1"`, ...). Any other set of integers
    (`y * 1000`, 1..10, negative codes) is remapped in sorted order, with the original values as
    class names, and a warning says so: a classifier over `max(y) + 1` classes would be mostly
    empty classes.

    Args:
        *label_arrays: 1-D integer arrays (e.g. train and test labels), mapped together.
        where: Text for the warning.

    Returns:
        `(list of int32 arrays, class_names)`.

    Example:
        >>> class_labels(np.array([10, 30, 10]))[0][0].tolist()
        [0, 1, 0]
    """
    import warnings

    present = [np.asarray(y) for y in label_arrays if y is not None]
    values = np.unique(np.concatenate([np.unique(y) for y in present] or [np.zeros(0, int)]))
    if not len(values) or (values[0] == 0 and values[-1] == len(values) - 1):
        names = [str(i) for i in range(len(values))]
        return [None if y is None else np.asarray(y).astype(np.int32) for y in label_arrays], names
    names = [str(int(v)) for v in values]
    if len(values) > 1:  # one class is an error the caller raises; no warning before it
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        warnings.warn(
            f"{where}: labels are not 0..{len(values) - 1}; remapped the {len(values)} distinct "
            f"values ({shown}) to 0..{len(values) - 1} in sorted order (Data.class_names holds "
            "the original values)", stacklevel=4)
    mapped = [None if y is None else np.searchsorted(values, y).astype(np.int32)
              for y in label_arrays]
    return mapped, names


def as_nhwc_uint8(x):
    """`x` as a uint8 (N, H, W, C) array, C in 1|3 (a view for uint8 input, else one copy).

    Raises:
        ValueError: Another shape.

    Example:
        >>> as_nhwc_uint8(np.zeros((2, 4, 4), "float32")).shape
        (2, 4, 4, 1)
    """
    x = _as_nhwc(x)
    return _to_uint8(x)(x)


def _arrays(source):
    if len(source) != 2:
        raise ValueError(f"Array source must be (x, y); Received: a sequence of {len(source)} items")
    x, y = _as_nhwc(source[0]), np.asarray(source[1])
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            "y must be a 1-D array of integer labels, one per image; "
            f"Received: x with {len(x)} images, y with shape {y.shape} and dtype {y.dtype}"
        )
    (y,), names = class_labels(y, where="y")
    return x, y, names


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0-16; scale to the 0-255 range every model here expects.
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return x, digits.target.astype(np.int32), [str(n) for n in digits.target_names]


def read_idx(path) -> np.ndarray:
    """Reads an IDX file of uint8 data (MNIST layout, optionally gzipped) into a read-only array.

    An uncompressed file is memory-mapped (pages are read when a batch needs them); a `.gz` file
    is decompressed once and the array is a view of the bytes (no second copy).

    Args:
        path: The `.../*-ubyte` or `.../*-ubyte.gz` file.

    Returns:
        A uint8 array of the shape the header gives, e.g. `(N, 28, 28)` or `(N,)`.

    Raises:
        ValueError: Not an IDX file of uint8 data, or a file cut short (a truncated `.gz` or a
            raw file with fewer bytes than its header says); the message names the file.

    Example:
        >>> read_idx("mnist/t10k-labels-idx1-ubyte.gz").shape
        (10000,)
    """
    path = Path(path)
    gzipped = path.suffix == ".gz"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08":
                raise ValueError(f"Not an IDX file of uint8 data: {path}")
            ndim = head[3]
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"Not an IDX file of uint8 data (truncated header): {path}")
            dims = [int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim)]
            offset = 4 + 4 * ndim
            if gzipped:
                body = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # gzip raises EOFError for a file cut short (an interrupted download or copy).
        raise ValueError(f"IDX file is truncated or not valid gzip ({exc}); Received: {path}. "
                         "Download or copy it again.") from None
    except OSError as exc:
        raise ValueError(f"Cannot read the IDX file ({exc.strerror or exc}); Received: {path}") from None
    expected = int(np.prod(dims))
    have = len(body) if gzipped else path.stat().st_size - offset
    if have < expected:
        raise ValueError(
            f"IDX file is shorter than its header says (truncated?); Received: {path} with "
            f"{max(have, 0)} data bytes, header shape {tuple(dims)} needs {expected}"
        )
    if gzipped:
        return np.frombuffer(body, np.uint8, count=expected).reshape(dims)
    return np.memmap(path, np.uint8, mode="r", offset=offset, shape=tuple(dims))


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
        if x.ndim != 3 or y.ndim != 1:
            raise ValueError(f"Expected (N, H, W) images and (N,) labels; Received: "
                             f"{p[0].name} of shape {x.shape}, {p[1].name} of shape {y.shape}")
        if len(x) != len(y):
            raise ValueError(f"{p[0].name} has {len(x)} images but {p[1].name} has {len(y)} labels")
        return x[..., None], y

    if train and test:
        return (*load(train), *load(test))
    return (*load(pairs[0]), None, None)


def array_pipeline(x, y, indices=None, *, image_size=None, batch_size=32, shuffle=False, seed=0,
                   convert=None):
    """A batched `tf.data` pipeline over `x[indices]`, `y[indices]` that gathers whole batches.

    Only positions (int64) flow through tf.data: they are shuffled (train), batched, and each
    batch is gathered from the numpy arrays in one `tf.numpy_function` call, so the images are
    neither copied per split nor captured as a graph constant (no 2 GB limit; a `np.memmap`
    works and is read batch by batch).

    Args:
        x: `(N, H, W, C)` images (uint8, or floats 0-1 / 0-255: converted per batch).
        y: `(N,)` int32 labels.
        indices: Which examples, in order (default: all).
        image_size: Resize batches to this side (default: keep).
        batch_size: Default 32.
        shuffle: Reshuffle every pass (seeded: a fresh pipeline repeats the same orders).
        seed: Shuffle seed (default 0).
        convert: `batch -> uint8 batch` (default: from `x`'s dtype; for floats that is one pass
            over `x` to find its range, so callers building several pipelines pass it).

    Returns:
        A `tf.data.Dataset` of `(uint8 images, int32 labels)` batches, or None for no examples.

    Example:
        >>> ds = array_pipeline(x, y, np.arange(100), batch_size=10, shuffle=True, seed=1)
    """
    import tensorflow as tf

    indices = np.arange(len(y)) if indices is None else np.asarray(indices, np.int64)
    if len(indices) == 0:
        return None
    to_uint8 = convert or _to_uint8(x)

    def gather(positions):
        rows = indices[positions]
        return to_uint8(x[rows]), y[rows]

    def load(positions):
        images, labels = tf.numpy_function(gather, [positions], (tf.uint8, tf.int32))
        images.set_shape((None, *x.shape[1:]))
        labels.set_shape((None,))
        return images, labels

    ds = tf.data.Dataset.range(len(indices))
    if shuffle:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if image_size is not None and tuple(x.shape[1:3]) != (image_size, image_size):
        ds = ds.map(
            lambda im, lb: (tf.cast(tf.clip_by_value(tf.round(
                tf.image.resize(im, (image_size, image_size))), 0, 255), tf.uint8), lb),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def make_data(parts, class_names, image_size, batch_size, seed, source):
    """A `Data` of in-memory pipelines.

    Args:
        parts: `{"train"|"validation"|"test": (x, y) or (x, y, indices)}`; without `indices` the
            whole arrays. Splits of one array share it (no copy).
        class_names: Names, index = label.
        image_size: Resize to this side in the pipeline (None: keep).
        batch_size: Batch size.
        seed: Shuffle seed of `Data.train` (`Data.make_train(seed)` builds others).
        source: Text for `Data.source`.

    Returns:
        A `Data` whose train pipeline reshuffles every pass.
    """
    from .core import Data

    parts = {name: (p[0], p[1], np.arange(len(p[1])) if len(p) == 2 else np.asarray(p[2]))
             for name, p in parts.items()}
    x_train, y_train, train_idx = parts["train"]
    shape = (image_size, image_size, x_train.shape[-1]) if image_size else tuple(x_train.shape[1:])
    # One range pass per array (splits of one array share it).
    converters = {id(p[0]): _to_uint8(p[0], f"{source} images") for p in parts.values()}

    def pipeline(name, shuffle, pipeline_seed):
        x, y, idx = parts.get(name, (x_train, y_train, train_idx[:0]))
        return array_pipeline(x, y, idx, image_size=image_size, batch_size=batch_size,
                              shuffle=shuffle, seed=pipeline_seed, convert=converters[id(x)])

    return Data(
        train=pipeline("train", True, seed),
        validation=pipeline("validation", False, seed),
        test=pipeline("test", False, seed),
        make_train=lambda train_seed: pipeline("train", True, train_seed),
        class_names=list(class_names),
        input_shape=tuple(int(s) for s in shape),
        source=source,
        sizes={name: int(len(parts[name][2])) if name in parts else 0
               for name in ("train", "validation", "test")},
        class_counts=np.bincount(y_train[train_idx], minlength=len(class_names)).tolist(),
        batch_size=batch_size,
        cache="memory",
    )


def from_memory(x, y, class_names, *, x_test=None, y_test=None, image_size=None, batch_size=32,
                validation_split=0.1, test_split=0.1, seed=0, cache="auto", where="arrays"):
    """A `Data` from in-memory images: stratified splits (the official test set when given).

    Args:
        x: `(N, H, W, C)` images; `y`: `(N,)` int32 labels; `class_names`: index = label.
        x_test, y_test: An official test set, used instead of holding out `test_split`.
        image_size, batch_size, validation_split, test_split, seed: As `load_data`.
        cache: Ignored: the arrays are already in memory (`Data.cache` says "memory").
        where: Text for `Data.source` and messages.

    Returns:
        A `Data`; the splits are index arrays into `x` (no copy).

    Raises:
        ValueError: No images, one class, or splits too small for the classes.
    """
    from .core import check_classes, split

    del cache  # already in memory; nothing is decoded
    check_classes(y, class_names, where)
    splits = split(len(y), y, validation_split, 0.0 if x_test is not None else test_split, seed)
    parts = {k: (x, y, i) for k, i in splits.items()}
    if x_test is not None:
        parts["test"] = (x_test, y_test)
    return make_data(parts, class_names, image_size, batch_size, seed, where)


def from_arrays(source, **opts):
    """`(x, y)` numpy arrays: `x` (N, H, W) or (N, H, W, 1|3), `y` integer labels.

    `x` is used in place (uint8 arrays and `np.memmap`s are never copied whole); float images
    (0-1 or 0-255) are converted to uint8 batch by batch. `opts` are `load_data`'s.
    """
    from .core import describe_source

    x, y, class_names = _arrays(source)
    return from_memory(x, y, class_names, where=describe_source(source), **opts)


def from_digits(**opts):
    """scikit-learn's bundled 8x8 digits, scaled to 0-255 (offline). `opts` are `load_data`'s."""
    x, y, class_names = _digits()
    return from_memory(x, y, class_names, where="digits", **opts)


def from_idx(folder, **opts):
    """IDX files (MNIST layout); `t10k-*` becomes the test split when `train-*` is there too.

    `opts` are `load_data`'s. Uncompressed files are memory-mapped, `.gz` files read once.
    """
    x, y, x_test, y_test = _idx(folder)
    (y, y_test), names = class_labels(y, y_test, where=f"idx:{folder}")
    return from_memory(x, y, names, x_test=x_test, y_test=y_test, where=f"idx:{folder}", **opts)
