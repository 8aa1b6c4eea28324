"""`load_data`: one entry point for digits, image folders, numpy arrays, IDX files and tfds."""

from __future__ import annotations

import dataclasses
import gzip
import numbers
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["Data", "load_data", "DEFAULT_DATASET", "describe_source", "read_idx"]

#: The embedded default: scikit-learn's bundled 8x8 digits (1,797 real images, offline).
DEFAULT_DATASET = "digits"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclasses.dataclass
class Data:
    """Train/validation/test splits as batched, prefetched `tf.data` datasets.

    Attributes:
        train: Shuffled each epoch; yields `(images, integer labels)`; images are uint8 0-255.
        validation: Fixed order; may be None when `validation_split=0`.
        test: Fixed order; may be None when `test_split=0`.
        class_names: Names, index = label.
        input_shape: `(height, width, channels)` of one image.
        source: What was loaded (recorded in `recipe.json`).
        sizes: Number of examples per split.
        batch_size: Batch size of the datasets.
    """

    train: object
    validation: object
    test: object
    class_names: list
    input_shape: tuple
    source: str = ""
    sizes: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 32
    make_train: object = dataclasses.field(default=None, repr=False)

    def train_pipeline(self, seed=None):
        """A fresh training pipeline whose shuffle order depends only on `seed`.

        `train` reuses one dataset object, whose reshuffle state advances with every pass; runs
        that must repeat exactly (same seed, same metrics) ask for a fresh one.
        """
        if self.make_train is None or seed is None:
            return self.train
        return self.make_train(seed)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch."""
        return max(1, -(-self.sizes.get("train", 0) // self.batch_size))


def describe_source(source) -> str:
    """A short text naming a data source, for run folders and messages."""
    if isinstance(source, (tuple, list)):
        return f"arrays{tuple(np.shape(source[0]))}"
    return str(source)


def load_data(
    source=DEFAULT_DATASET,
    *,
    image_size=None,
    batch_size=32,
    validation_split=0.1,
    test_split=0.1,
    seed=0,
    data_dir=None,
) -> Data:
    """Loads images and labels and splits them into train/validation/test pipelines.

    Sources:
        - `"digits"`: scikit-learn's 8x8 digits, scaled to 0-255 (offline; the default).
        - a folder with one sub-folder of images per class (corrupt files are skipped with a warning).
        - `(x, y)` numpy arrays: `x` of shape (N, H, W) or (N, H, W, C), `y` integer labels.
        - `"idx:<folder>"`: IDX files (MNIST / Fashion-MNIST / KMNIST layout, `.gz` or not). When
          the folder has both `train-*` and `t10k-*` files the official test set becomes `test`.
        - `"tfds:<name>"`: a tensorflow-datasets dataset already prepared under `data_dir`.

    Splits are stratified and deterministic for a seed. The pipeline caches, shuffles (train),
    batches and prefetches with AUTOTUNE; no Python runs per example.

    Args:
        source: One of the above (default `"digits"`).
        image_size: Resize images to this side in the pipeline (default: keep; the model resizes
            anyway, and image folders use the size of their first image).
        batch_size: Default 32.
        validation_split: Fraction held out for validation (default 0.1).
        test_split: Fraction held out for test (default 0.1), unless the source has its own.
        seed: Seed for the split and the shuffle (default 0).
        data_dir: tensorflow-datasets data folder (default: tfds' own, `~/tensorflow_datasets`).

    Returns:
        A `Data`.

    Raises:
        ValueError: Unknown source, bad split fractions or sizes, an empty folder or a single class,
            mismatched arrays, an IDX folder without image/label files, or a tfds dataset that is
            not prepared (the message says how to prepare it).

    Example:
        >>> data = recipes.load_data("digits", batch_size=64)
        >>> data.num_classes, data.input_shape
        (10, (8, 8, 1))
    """
    batch_size = _positive_int("batch_size", batch_size)
    for name, value in (("validation_split", validation_split), ("test_split", test_split)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a fraction in [0, 1); Received: {name}={value!r}")
    if validation_split + test_split >= 1:
        raise ValueError(
            "validation_split + test_split must leave data to train on; "
            f"Received: validation_split={validation_split}, test_split={test_split}"
        )
    if image_size is not None:
        image_size = _positive_int("image_size", image_size)

    x_test = y_test = None
    if isinstance(source, (tuple, list)):
        x, y, class_names = _from_arrays(source)
    elif not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "source must be 'digits', a folder, (x, y) arrays, 'idx:<folder>' or 'tfds:<name>'; "
            f"Received: source of type {type(source).__name__}"
        )
    elif str(source) == "digits":
        x, y, class_names = _digits()
    elif str(source).startswith("idx:"):
        x, y, x_test, y_test = _idx(str(source)[4:])
        class_names = [str(i) for i in range(int(max(y.max(), -1 if y_test is None else y_test.max())) + 1)]
    elif str(source).startswith("tfds:"):
        x, y, x_test, y_test, class_names = _tfds(str(source)[5:], data_dir)
    elif Path(source).is_dir():
        return _from_folder(
            Path(source), image_size, batch_size, validation_split, test_split, seed
        )
    else:
        raise ValueError(
            f"Unknown data source; Received: source={str(source)!r}. Allowed: 'digits', a folder of "
            "class sub-folders, (x, y) arrays, 'idx:<folder>', 'tfds:<name>'."
        )
    _check_classes(y, class_names, describe_source(source))
    splits = _split(len(y), y, validation_split, 0.0 if x_test is not None else test_split, seed)
    parts = {k: (x[idx], y[idx]) for k, idx in splits.items()}
    if x_test is not None:
        parts["test"] = (x_test, y_test)
    return _make_data(parts, class_names, image_size, batch_size, seed, describe_source(source))


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; Received: {name}={value!r}")
    return int(value)


def _check_classes(y, class_names, where):
    if len(y) == 0:
        raise ValueError(f"No images found in {where}")
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"A classifier needs at least 2 classes; Received: 1 class ({class_names}) in {where}"
        )


def _as_nhwc_uint8(x):
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


def _from_arrays(source):
    if len(source) != 2:
        raise ValueError(f"Array source must be (x, y); Received: a sequence of {len(source)} items")
    x, y = _as_nhwc_uint8(source[0]), np.asarray(source[1])
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


def _tfds(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:
        raise ValueError(f"Unknown tensorflow-datasets dataset; Received: 'tfds:{name}' ({exc})") from None
    if not builder.is_prepared():
        where = data_dir or "~/tensorflow_datasets"
        raise ValueError(
            f"tensorflow-datasets dataset {name!r} is not prepared in {where} and cannot be "
            "downloaded here. Prepare it on a machine with internet access, then copy the folder:\n"
            f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
            f"data_dir='{where}').download_and_prepare()\"\n"
            f"and pass data_dir='{where}' (CLI: --data-dir)."
        )
    info = builder.info
    keys = list(info.supervised_keys or ("image", "label"))
    label_feature = info.features[keys[1]]
    class_names = list(getattr(label_feature, "names", None) or [])
    splits = list(info.splits)

    def arrays(split):
        ds = builder.as_dataset(split=split, as_supervised=True)
        xs, ys = zip(*tfds.as_numpy(ds)) if len(info.splits[split].filenames) else ((), ())
        return _as_nhwc_uint8(np.stack(xs)), np.asarray(ys, np.int32)

    main = "train" if "train" in splits else splits[0]
    x, y = arrays(main)
    x_test = y_test = None
    if "test" in splits and main != "test":
        x_test, y_test = arrays("test")
    if not class_names:
        class_names = [str(i) for i in range(int(y.max()) + 1)]
    return x, y, x_test, y_test, class_names


def _split(n, y, validation_split, test_split, seed):
    try:
        return _stratified_split(n, y, validation_split, test_split, seed)
    except ValueError as exc:  # e.g. fewer held-out images than classes
        raise ValueError(
            f"Cannot split {n} images of {len(np.unique(y))} classes with "
            f"validation_split={validation_split}, test_split={test_split}: {exc}. Use larger "
            "fractions, more images, or 0 for a split you don't need."
        ) from None


def _stratified_split(n, y, validation_split, test_split, seed):
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    out = {}
    held = validation_split + test_split
    if held == 0:
        return {"train": idx, "validation": idx[:0], "test": idx[:0]}
    train_idx, rest = train_test_split(idx, test_size=held, stratify=_stratify(y), random_state=seed)
    if test_split == 0:
        return {"train": train_idx, "validation": rest, "test": idx[:0]}
    if validation_split == 0:
        return {"train": train_idx, "validation": idx[:0], "test": rest}
    val_idx, test_idx = train_test_split(
        rest, test_size=test_split / held, stratify=_stratify(y[rest]), random_state=seed
    )
    out.update(train=train_idx, validation=val_idx, test=test_idx)
    return out


def _stratify(y):
    # Classes with a single example cannot be stratified; fall back to a plain shuffle split.
    counts = np.bincount(y)
    return y if counts[counts > 0].min() >= 2 else None


def _pipeline(x, y, *, image_size, batch_size, shuffle, seed):
    import tensorflow as tf

    if len(y) == 0:
        return None
    ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if image_size is not None and x.shape[1:3] != (image_size, image_size):
        ds = ds.map(
            lambda im, lb: (tf.cast(tf.image.resize(im, (image_size, image_size)), tf.uint8), lb),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def _make_data(parts, class_names, image_size, batch_size, seed, source):
    x_train = parts["train"][0]
    size = image_size
    shape = (size, size, x_train.shape[-1]) if size else tuple(x_train.shape[1:])
    datasets = {
        name: _pipeline(
            *parts[name], image_size=image_size, batch_size=batch_size,
            shuffle=name == "train", seed=seed,
        )
        for name in ("train", "validation", "test")
    }
    def make_train(train_seed):
        return _pipeline(
            *parts["train"], image_size=image_size, batch_size=batch_size, shuffle=True,
            seed=train_seed,
        )

    return Data(
        make_train=make_train,
        train=datasets["train"],
        validation=datasets["validation"],
        test=datasets["test"],
        class_names=list(class_names),
        input_shape=tuple(int(s) for s in shape),
        source=source,
        sizes={k: int(len(v[1])) for k, v in parts.items()},
        batch_size=batch_size,
    )


def _from_folder(root, image_size, batch_size, validation_split, test_split, seed):
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels, bad = [], [], 0
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES:
                files.append(path)
                labels.append(label)
    if not files:
        raise ValueError(
            f"No images ({', '.join(_IMAGE_SUFFIXES)}) found in class sub-folders of {root}; "
            "expected <folder>/<class name>/<image files>"
        )
    images, kept = [], []
    target = None
    for path, label in zip(files, labels):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if target is None:
                    target = (image_size, image_size) if image_size else im.size
                if im.size != target:
                    im = im.resize(target, Image.BILINEAR)
                images.append(np.asarray(im, np.uint8))
                kept.append(label)
        except Exception:  # unreadable or corrupt: skipped and counted, never a crash
            bad += 1
    if bad:
        warnings.warn(f"Skipped {bad} unreadable or corrupt image file(s) in {root}", stacklevel=3)
    y = np.asarray(kept, np.int32)
    _check_classes(y, classes, str(root))
    if len(np.unique(y)) < 2:
        raise ValueError(f"A classifier needs at least 2 classes; Received: 1 in {root}")
    x = np.stack(images)
    splits = _split(len(y), y, validation_split, test_split, seed)
    parts = {k: (x[idx], y[idx]) for k, idx in splits.items()}
    return _make_data(parts, classes, None, batch_size, seed, str(root))
