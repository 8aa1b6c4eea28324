"""tensorflow-datasets sources, streamed: `builder.as_dataset` per split, decoded and resized in
tf.data, never read into numpy.

The dataset's own `train`/`validation`/`test` splits are used when it has them; a missing
validation or test split is carved from `train` by tfds split slicing (`train[:N]`,
`train[N:M]`, `train[M:]`), which is deterministic: tfds shuffled the examples when it prepared
the dataset, so a contiguous slice is already a random sample, and it does not depend on the order
files are read in. Sizes come from `info.splits`, shapes and class names from `info.features`;
class counts take one pass over the training labels with every other feature left undecoded.
"""

from __future__ import annotations

import re

import numpy as np

from .. import validation as v
from .images import AUTO_CACHE_BYTES, apply_cache, check_cache, check_crop, resize_image

__all__ = ["from_tfds", "plan_splits", "DEFAULT_IMAGE_SIZE", "VALIDATION_SPLIT_NAMES"]

#: Side images of varying size are resized to when no `image_size` is given.
DEFAULT_IMAGE_SIZE = 224
#: Names tfds datasets give their validation split, in order of preference.
VALIDATION_SPLIT_NAMES = ("validation", "valid", "val")
#: `cache="auto"` keeps the decoded images of all splits in memory below this many bytes.
#: Without a memory cache the shuffle buffer holds about this many bytes of decoded images.
_SHUFFLE_BYTES = 256 << 20
_MIN_SHUFFLE = 1024


def _not_prepared(name, data_dir):
    where = data_dir or "~/tensorflow_datasets"
    return ValueError(
        f"tensorflow-datasets dataset {name!r} is not prepared in {where} and cannot be "
        "downloaded here. Prepare it on a machine with internet access, then copy the folder:\n"
        f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
        f"data_dir='{where}').download_and_prepare()\"\n"
        f"and pass data_dir='{where}' (CLI: --data-dir)."
    )


def _builder(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        base = re.split(r"[:/]", name, maxsplit=1)[0]
        raise v.unknown(
            "tensorflow-datasets dataset", base, tfds.list_builders(with_community_datasets=False),
            arg="tfds", allowed="a name from tfds.list_builders() (https://www.tensorflow.org/"
                                "datasets/catalog), optionally with /config and :version",
        ) from None
    except Exception as exc:  # a bad config or version: tfds says which ones exist
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"Cannot load tensorflow-datasets dataset; Received: "
                         f"source='tfds:{name}' ({first})") from None


def _open(builder, name, data_dir, split, **kwargs):
    """`builder.as_dataset(split, ...)`, with tfds' missing-data assertion turned into the clear
    "not prepared" error. Not checked up front with `is_prepared()`, which is False for data
    mocked by `tfds.testing.mock_data` too."""
    try:
        return builder.as_dataset(split=split, **kwargs)
    except AssertionError:
        if not builder.is_prepared():
            raise _not_prepared(name, data_dir) from None
        raise


def _keys(info, name):
    """`(image key, label key)` from `info.supervised_keys`, else the usual "image"/"label"."""
    keys = info.supervised_keys
    if isinstance(keys, (tuple, list)) and len(keys) == 2 and all(isinstance(k, str) for k in keys):
        image_key, label_key = keys
    else:
        image_key, label_key = "image", "label"
    features = info.features
    if image_key not in features or label_key not in features:
        raise ValueError(
            f"tfds:{name} has no (image, label) pair to classify; Received: features "
            f"{list(features)}, supervised_keys {keys}"
        )
    shape = tuple(features[image_key].shape)
    if len(shape) != 3 or shape[-1] is None:
        raise ValueError(f"tfds:{name} feature {image_key!r} is not an (H, W, C) image; "
                         f"Received: shape {shape}")
    return image_key, label_key


def _count(n, fraction):
    return 0 if not fraction else max(1, int(round(n * fraction)))


def plan_splits(available, validation_split=0.1, test_split=0.1):
    """Which tfds split strings make train/validation/test, and their sizes.

    The dataset's own splits win (`VALIDATION_SPLIT_NAMES`, `"test"`); what it lacks is carved
    from the end of `train` by tfds slicing: `train[:N]`, `train[N:M]`, `train[M:]`.

    Args:
        available: `{split name: number of examples}` (from `info.splits`).
        validation_split: Fraction of train held out when there is no validation split.
        test_split: Fraction of train held out when there is no test split.

    Returns:
        `{"train"|"validation"|"test": (split string or None, size)}`.

    Raises:
        ValueError: No non-empty `train` split, or nothing left to train on.

    Example:
        >>> plan_splits({"train": 100, "test": 20}, 0.1)
        {'train': ('train[:90]', 90), 'validation': ('train[90:100]', 10), 'test': ('test', 20)}
    """
    available = {k: int(n) for k, n in available.items() if n}
    if "train" not in available:
        raise ValueError(f"A tfds dataset needs a non-empty 'train' split; Received: splits "
                         f"{sorted(available)}")
    n = available["train"]
    own_val = next((s for s in VALIDATION_SPLIT_NAMES if s in available), None)
    own_test = "test" if "test" in available else None
    n_val = 0 if own_val else _count(n, validation_split)
    n_test = 0 if own_test else _count(n, test_split)
    n_train = n - n_val - n_test
    if n_train < 1:
        raise ValueError(f"Cannot carve validation_split={validation_split}, test_split="
                         f"{test_split} from a train split of {n} examples")
    plan = {"train": ("train" if n_train == n else f"train[:{n_train}]", n_train)}
    if own_val:
        plan["validation"] = (own_val, available[own_val])
    else:
        plan["validation"] = (f"train[{n_train}:{n_train + n_val}]", n_val) if n_val else (None, 0)
    if own_test:
        plan["test"] = ("test", available["test"])
    else:
        plan["test"] = (f"train[{n_train + n_val}:{n}]", n_test) if n_test else (None, 0)
    return plan


def _available(builder, name, data_dir):
    """`{split: examples}` from `info.splits`. A dataset mocked without metadata knows no split
    names; then `train` alone is assumed (its size from the dataset's cardinality)."""
    splits = {s: info.num_examples for s, info in builder.info.splits.items()}
    if splits:
        return splits
    ds = _open(builder, name, data_dir, "train")  # raises the clear error when not prepared
    n = int(ds.cardinality())
    if n < 0:
        raise ValueError(f"tfds:{name} reports no split sizes; Received: cardinality {n}")
    return {"train": n}


def _class_info(builder, name, data_dir, split, label_key):
    """`(class names, training counts)`: names from the `ClassLabel`, counts by one pass over the
    labels only (the image feature is never decoded)."""
    import tensorflow_datasets as tfds

    feature = builder.info.features[label_key]
    names = list(getattr(feature, "names", None) or [])
    ds = _open(builder, name, data_dir, split,
               decoders=tfds.decode.PartialDecoding({label_key: True}),
               read_config=tfds.ReadConfig(try_autocache=False))
    counts = np.zeros(len(names), np.int64)
    for labels in ds.map(lambda ex: ex[label_key]).batch(8192).as_numpy_iterator():
        labels = np.asarray(labels).astype(np.int64).ravel()
        if labels.size and labels.min() < 0:
            raise ValueError(f"Labels must be >= 0; Received: label {labels.min()} in tfds:{name}")
        found = np.bincount(labels, minlength=len(counts))
        counts = np.pad(counts, (0, len(found) - len(counts))) + found
    names = names or [str(i) for i in range(len(counts))]
    return names, counts.tolist()


def _preprocess(dtype, channels, size, crop):
    """`(image, label) -> (uint8 (H, W, 1|3) image at size, int32 label)` for a tf.data map."""
    import tensorflow as tf

    def prep(image, label):
        if dtype != np.uint8:  # 16-bit or float images: tf scales by the dtype's range
            image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
        if channels == 2 or channels > 3:  # drop alpha (gray+alpha, RGBA)
            image = image[..., : 1 if channels == 2 else 3]
        if size is not None:
            image = resize_image(image, size, crop)
        return image, tf.cast(label, tf.int32)

    return prep


def from_tfds(name, *, data_dir=None, crop=None, image_size=None, batch_size=32,
              validation_split=0.1, test_split=0.1, seed=0, cache="auto"):
    """Streams a prepared tensorflow-datasets dataset as train/validation/test pipelines.

    Args:
        name: tfds name, optionally `name/config:version` (e.g. `"mnist"`, `"cifar10"`).
        data_dir: tfds data folder (default: tfds' own, `~/tensorflow_datasets`). Nothing is
            downloaded: an unprepared dataset is a clear error saying how to prepare it.
        crop: How images of another aspect ratio reach the pipeline size: None (default:
            stretch), `"center"` (center crop) or `"pad"` (letterbox).
        image_size: Side of the square pipeline images (default: the dataset's own shape when
            fixed, else `DEFAULT_IMAGE_SIZE`).
        batch_size: Default 32.
        validation_split: Fraction of train held out when the dataset has no validation split
            (default 0.1).
        test_split: Fraction of train held out when it has no test split (default 0.1).
        seed: Seed of the training order (file order and shuffle buffer; default 0).
        cache: `"auto"` (default: in memory when the decoded images of all splits are under
            1 GiB, else decoded every epoch), `"memory"`, a file path prefix, or None.

    Returns:
        A `Data` (`source="tfds:<name>"`; `cache` says which cache was used).

    Raises:
        ValueError: An unknown name (closest matches), a dataset not prepared in `data_dir`,
            one without an (image, label) pair or a train split, a single class, bad `crop` or
            `cache`.

    Example:
        >>> data = from_tfds("mnist", data_dir="~/tensorflow_datasets", image_size=32)
        >>> data.sizes, data.input_shape
        ({'train': 54000, 'validation': 6000, 'test': 10000}, (32, 32, 1))
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    crop, cache = check_crop(crop), check_cache(cache)
    builder = _builder(name, data_dir)
    image_key, label_key = _keys(builder.info, name)
    plan = plan_splits(_available(builder, name, data_dir), validation_split, test_split)
    class_names, class_counts = _class_info(builder, name, data_dir, plan["train"][0], label_key)
    if sum(1 for c in class_counts if c) < 2:
        raise ValueError(f"A classifier needs at least 2 classes; Received: "
                         f"{sum(1 for c in class_counts if c)} class in tfds:{name} "
                         f"({plan['train'][0]})")

    feature = builder.info.features[image_key]
    height, width, channels = tuple(feature.shape)
    out_channels = 1 if channels in (1, 2) else 3
    if image_size is None and height is not None and width is not None:
        size = None  # fixed-size images are kept as they are
        shape = (height, width, out_channels)
    else:
        side = image_size or DEFAULT_IMAGE_SIZE
        size = None if (height, width) == (side, side) else (side, side)
        shape = (side, side, out_channels)
    prep = _preprocess(np.dtype(feature.np_dtype), channels, size, crop)

    example_bytes = int(np.prod(shape))
    if cache == "auto":
        decoded = sum(n for _, n in plan.values()) * example_bytes
        cache = "memory" if decoded < AUTO_CACHE_BYTES else None
    n_train = plan["train"][1]
    buffer = n_train if cache == "memory" else min(
        n_train, max(_MIN_SHUFFLE, batch_size, _SHUFFLE_BYTES // example_bytes))
    decoders = tfds.decode.PartialDecoding({image_key: True, label_key: True})

    def pipeline(role, shuffle, pipeline_seed):
        split = plan[role][0]
        if split is None:
            return None
        # Files are shuffled (seeded) only when streaming: a cache then holds them in one
        # canonical order whatever the seed. tfds' own small-dataset autocache is off: the cache
        # below is the one that is used.
        shuffle_files = shuffle and cache is None
        read_config = tfds.ReadConfig(try_autocache=False,
                                      shuffle_seed=pipeline_seed if shuffle_files else None)
        ds = _open(builder, name, data_dir, split, decoders=decoders, read_config=read_config,
                   shuffle_files=shuffle_files)
        ds = ds.map(lambda ex: prep(ex[image_key], ex[label_key]),
                    num_parallel_calls=tf.data.AUTOTUNE)
        ds = apply_cache(ds, cache, role)
        if shuffle:
            ds = ds.shuffle(buffer, seed=pipeline_seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    from .core import Data

    return Data(
        train=pipeline("train", True, seed),
        validation=pipeline("validation", False, seed),
        test=pipeline("test", False, seed),
        make_train=lambda train_seed: pipeline("train", True, train_seed),
        class_names=class_names,
        input_shape=tuple(int(s) for s in shape),
        source=f"tfds:{name}",
        sizes={role: n for role, (_, n) in plan.items()},
        class_counts=class_counts,
        batch_size=batch_size,
        cache=cache or "none",
    )
