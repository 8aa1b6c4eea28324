"""`Data` and `load_data`: the dispatcher, stratified splits and the tf.data pipelines."""

from __future__ import annotations

import dataclasses
import numbers
import os
from pathlib import Path

import numpy as np

__all__ = ["Data", "load_data", "DEFAULT_DATASET", "describe_source", "split", "check_classes",
           "with_train_shards", "train_shard"]

#: The embedded default: scikit-learn's bundled 8x8 digits (1,797 real images, offline).
DEFAULT_DATASET = "digits"


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
        class_counts: Training examples per class (index = label).
        batch_size: Batch size of the datasets.
        skipped: Files left out because they cannot be read as images (paths; image
            folders: corrupt, truncated, empty or non-image files).
        cache: Where decoded images are cached: "memory", "none" (decoded every
            epoch) or a file path prefix; "" when the source does not say.
    """

    train: object
    validation: object
    test: object
    class_names: list
    input_shape: tuple
    source: str = ""
    sizes: dict = dataclasses.field(default_factory=dict)
    class_counts: list = dataclasses.field(default_factory=list)
    batch_size: int = 32
    make_train: object = dataclasses.field(default=None, repr=False)
    skipped: list = dataclasses.field(default_factory=list)
    cache: str = ""

    def train_pipeline(self, seed=None):
        """A fresh training pipeline whose shuffle order depends only on `seed`.

        `train` reuses one dataset object, whose reshuffle state advances with every pass; runs
        that must repeat exactly (same seed, same metrics) ask for a fresh one. A source may
        mark the fresh one with `with_train_shards`, so that each of several workers builds
        its own share of it (`train_shard`; image folders then decode only that share).
        """
        if self.make_train is None or seed is None:
            return self.train
        return self.make_train(seed)

    def class_weights(self) -> dict:
        """`{label: weight}` that balances the training classes (scikit-learn's "balanced":
        `n_samples / (n_classes * count)`), for `fit(class_weight=...)`.

        Raises:
            ValueError: A class has no training example.
        """
        from sklearn.utils.class_weight import compute_class_weight

        counts = np.asarray(self.class_counts)
        if len(counts) != self.num_classes or (counts == 0).any():
            missing = [self.class_names[i] for i in range(self.num_classes)
                       if i >= len(counts) or counts[i] == 0]
            raise ValueError(f"class_weight='balanced' needs every class in the training split; "
                             f"Received: no training images for {missing}")
        labels = np.repeat(np.arange(self.num_classes), counts)
        weights = compute_class_weight("balanced", classes=np.arange(self.num_classes), y=labels)
        return {i: float(w) for i, w in enumerate(weights)}

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one pass of `train`, the last one possibly partial (`recipes.train`
        drops it and re-batches to the recipe's size: `recipes.training.whole_batches`)."""
        return max(1, -(-self.sizes.get("train", 0) // self.batch_size))


#: The attribute by which a training dataset carries the builder of one worker's share of it.
_SHARD_HOOK = "_recipes_train_shard"


def with_train_shards(dataset, batch_size: int, make_shard):
    """Marks a training pipeline as able to build each worker's share of itself.

    The mark lives on this very dataset object, not on `Data`: a pipeline derived from it
    (re-batched, joined with validation, a bootstrap sample) is a new object without the mark,
    so `train_shard` can never hand out the share of a different pipeline.

    Args:
        dataset: The training pipeline, batches of `batch_size`, reshuffled every epoch.
        batch_size: Its (global) batch size.
        make_shard: `(index, count) -> dataset`: worker `index` of `count`'s share, batches of
            `batch_size // count` that are, step by step, the `index`-th slice of each whole
            global batch of `dataset` (same shuffle order every epoch; the last, partial global
            batch dropped).

    Returns:
        `dataset` itself, marked.

    Example:
        >>> ds = with_train_shards(ds, 32, lambda index, count: shard_of(ds, index, count))
    """
    setattr(dataset, _SHARD_HOOK, (int(batch_size), make_shard))
    return dataset


def train_shard(dataset, batch_size: int, index: int, count: int):
    """Worker `index` of `count`'s share of `dataset`, built by its source (`with_train_shards`).

    Args:
        dataset: A training pipeline.
        batch_size: The global batch size the share is cut from.
        index: The worker's index, in `[0, count)`.
        count: Number of workers; divides `batch_size`.

    Returns:
        Batches of `batch_size // count` (see `with_train_shards`), or None when `dataset`
        carries no mark or was marked for another batch size (cut it batch by batch instead).

    Example:
        >>> share = train_shard(data.train_pipeline(0), data.batch_size, 1, 2)
    """
    hook = getattr(dataset, _SHARD_HOOK, None)
    if hook is None or hook[0] != batch_size:
        return None
    return hook[1](index, count)


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
    crop=None,
    cache="auto",
) -> Data:
    """Loads images and labels and splits them into train/validation/test pipelines.

    Sources:
        - `"digits"`: scikit-learn's 8x8 digits, scaled to 0-255 (offline; the default).
        - a folder with one sub-folder of images per class, or with `train/`, `validation/` (or
          `val/`) and `test/` split folders: streamed (listed once, decoded in a parallel map);
          unreadable files are skipped and named in `Data.skipped`.
        - `(x, y)` numpy arrays (or memmaps): `x` of shape (N, H, W) or (N, H, W, C), `y` integer
          labels; gathered batch by batch (no copies, no 2 GB limit).
        - `"idx:<folder>"`: IDX files (MNIST / Fashion-MNIST / KMNIST layout, `.gz` or not). When
          the folder has both `train-*` and `t10k-*` files the official test set becomes `test`.
        - `"tfds:<name>"`: a tensorflow-datasets dataset prepared under `data_dir`, streamed with
          its own splits (missing ones carved from the end of `train`).

    Splits are deterministic for a seed (stratified where the labels are known up front). The
    pipelines shuffle (train), batch and prefetch with AUTOTUNE; no Python runs per example.

    Args:
        source: One of the above (default `"digits"`).
        image_size: Resize images to this side in the pipeline (default: arrays keep their size,
            the model resizes; folders use their most common size, at most 512 px; tfds 224).
        batch_size: Default 32.
        validation_split: Fraction held out for validation (default 0.1).
        test_split: Fraction held out for test (default 0.1), unless the source has its own.
        seed: Seed for the split and the shuffle (default 0).
        data_dir: tensorflow-datasets data folder (default: tfds' own, `~/tensorflow_datasets`).
        crop: How decoded images of another aspect ratio reach `image_size` (folders, tfds):
            None (default: stretch), `"center"` (center crop) or `"pad"` (letterbox).
        cache: `"auto"` (default: in memory when the decoded split is small), `"memory"`, a file
            path prefix, or None (decode every epoch).

    Returns:
        A `Data`.

    Raises:
        ValueError: Unknown source, bad split fractions, sizes or seed, an empty folder or a
            single class, a class folder without readable images, mismatched arrays, NaN/inf or
            out-of-range pixels (the range found), an IDX folder without image/label files or
            with a truncated file, or a tfds dataset that is not prepared (the message says how
            to prepare it). Labels that are not 0..K-1 are remapped (a warning says so).

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
    from ..validation import check_int

    # scikit-learn's split takes seeds in [0, 2**32): checked here, so the error names the seed.
    seed = check_int("seed", seed, 0, high=2**32, allow_none=False)

    from . import arrays, folders, tfds

    opts = dict(image_size=image_size, batch_size=batch_size, validation_split=validation_split,
                test_split=test_split, seed=seed, cache=cache)
    if isinstance(source, (tuple, list)):
        return arrays.from_arrays(source, **opts)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "source must be 'digits', a folder, (x, y) arrays, 'idx:<folder>' or 'tfds:<name>'; "
            f"Received: source of type {type(source).__name__}"
        )
    text = str(source)
    if text == "digits":
        return arrays.from_digits(**opts)
    if text.startswith("idx:"):
        return arrays.from_idx(text[4:], **opts)
    if text.startswith("tfds:"):
        return tfds.from_tfds(text[5:], data_dir=data_dir, crop=crop, **opts)
    if Path(source).is_dir():
        return folders.from_folder(Path(source), crop=crop, **opts)
    raise ValueError(
        f"Unknown data source; Received: source={text!r}. Allowed: 'digits', a folder of "
        "class sub-folders, (x, y) arrays, 'idx:<folder>', 'tfds:<name>'."
    )


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; Received: {name}={value!r}")
    return int(value)


def check_classes(y, class_names, where):
    if len(y) == 0:
        raise ValueError(f"No images found in {where}")
    if len(np.unique(y)) < 2:
        raise ValueError(
            f"A classifier needs at least 2 classes; Received: 1 class ({class_names}) in {where}"
        )


def split(n, y, validation_split, test_split, seed):
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

