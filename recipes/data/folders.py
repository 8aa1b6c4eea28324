"""Image-folder sources, streamed: `<folder>/<class name>/<image files>`, or split folders
`<folder>/train|validation|val|test/<class name>/<image files>`.

Files are listed once (`os.scandir`, no decoding); splits are stratified over the *paths*; images
are read, decoded and resized inside a parallel tf.data `map`, batched and prefetched, so memory
holds the path list and a few batches, not the folder. Unreadable files are found once by a
verify pass (complete JPEGs and PNGs are checked and measured from their bytes, see
`headers.read_header`; other files are decoded in a parallel tf.data pass) whose results are kept in a small manifest (see
`manifest_path`) keyed by each file's size and modification time, so later loads decode
nothing up front and only new or changed files are checked again. A file that passes the
header check and still fails to decode is dropped by the pipeline (`ignore_errors`), not a
crash.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .core import Data, split, with_train_shards
from .headers import read_header
from .images import (
    AUTO_CACHE_BYTES,
    IMAGE_SUFFIXES,
    apply_cache,
    check_cache,
    check_crop,
    decode_image,
    jpeg_ratio,
    probe_image,
    resize_image,
)

__all__ = ["from_folder", "scan_folder", "manifest_path", "IMAGE_SUFFIXES", "MANIFEST_NAME",
           "AUTO_CACHE_BYTES", "DEFAULT_MAX_SIDE"]

#: The verify-pass manifest written into the image folder (a hidden file, never read as data).
MANIFEST_NAME = ".recipes_manifest.json"
_MANIFEST_VERSION = 1
#: `cache="auto"` keeps the decoded images in memory below this many bytes (all splits).
#: Without `image_size`, the folder's most common size is used, at most this on its longer side.
DEFAULT_MAX_SIDE = 512
#: With a file cache, the shuffle buffer holds about this many bytes of decoded images.
_FILE_CACHE_SHUFFLE_BYTES = 256 << 20
_SPLIT_DIRS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
_SPLITS = ("train", "validation", "test")

_File = collections.namedtuple("_File", "rel label split size mtime")


# ---------------------------------------------------------------------------------- listing


def _scandir(path):
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise ValueError(f"Cannot read the image folder {path}: {exc.strerror or exc}") from None


def _visible_dirs(path):
    return [e.name for e in _scandir(path) if not e.name.startswith(".") and e.is_dir()]


def _walk(folder, rel):
    """`(relative path, size, mtime_ns)` of every visible file under `folder`, sorted."""
    for entry in _scandir(folder):
        if entry.name.startswith("."):
            continue
        sub = f"{rel}/{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, sub)
        elif entry.is_file():
            try:
                st = entry.stat()
            except OSError as exc:
                raise ValueError(f"Cannot read {entry.path}: {exc.strerror or exc}") from None
            yield sub, st.st_size, st.st_mtime_ns


def _layout(root):
    """`{split: folder name}` when `root` holds split folders (train/ with class folders), else None."""
    names = _visible_dirs(root)
    if "train" not in names or not set(names) <= set(_SPLIT_DIRS) or not _visible_dirs(root / "train"):
        return None
    if "validation" in names and "val" in names:
        raise ValueError(f"Use one validation folder, not both; Received: {root}/validation and "
                         f"{root}/val")
    return {_SPLIT_DIRS[n]: n for n in names}


def scan_folder(root):
    """Lists an image folder without decoding anything.

    Args:
        root: A folder of class sub-folders, or of `train/`, `validation/` (or `val/`) and
            `test/` split folders that each hold the same class sub-folders.

    Returns:
        `(class_names, files, layout)`: `files` are `(rel, label, split, size, mtime)` named
        tuples (`rel` is relative to `root`; `split` is "train"/"validation"/"test" from the
        split folders, or None), `layout` maps split to folder name (None without split folders).

    Raises:
        ValueError: An unreadable folder, or split folders that disagree on the classes.
    """
    root = Path(root)
    layout = _layout(root)
    if layout is None:
        parts = {None: ""}
    else:
        parts = {split_name: layout[split_name] + "/" for split_name in _SPLITS if split_name in layout}
    classes = {s: _visible_dirs(root / prefix) if prefix else _visible_dirs(root)
               for s, prefix in parts.items()}
    class_names = sorted(set().union(*classes.values()))
    if layout is not None:
        for s, names in classes.items():
            missing = sorted(set(class_names) - set(names))
            if missing:
                others = [layout[o] + "/" for o in classes if o != s and set(missing) & set(classes[o])]
                raise ValueError(
                    f"Split folders must hold the same class folders; Received: "
                    f"{root / layout[s]} has no {missing} (found in {', '.join(others)})"
                )
    files = []
    for s, prefix in parts.items():
        for label, name in enumerate(class_names):
            for rel, size, mtime in _walk(root / prefix / name, f"{prefix}{name}"):
                files.append(_File(rel, label, s, size, mtime))
    return class_names, files, layout


# --------------------------------------------------------------------------------- manifest


def manifest_path(root) -> Path:
    """Where the verify-pass manifest of `root` lives.

    `<root>/.recipes_manifest.json` when the folder is writable; otherwise
    `<Keras home>/recipes/manifests/<hash of the folder's absolute path>.json` (Keras home is
    `$KERAS_HOME`, default `~/.keras`, or `/tmp/.keras` when that is not writable).
    """
    root = Path(root)
    if os.access(root, os.W_OK):
        return root / MANIFEST_NAME
    from ..compat import keras_home

    base = os.path.expanduser(keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return Path(base) / "recipes" / "manifests" / f"{digest}.json"


def _read_manifest(path):
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != _MANIFEST_VERSION:
        return {}
    entries = data.get("files")
    return entries if isinstance(entries, dict) else {}


def _write_manifest(path, entries):
    """Atomic write; a folder that refuses it only costs a verify pass next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": _MANIFEST_VERSION, "files": entries},
                                  separators=(",", ":")))
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"Could not write the image manifest {path} ({exc}); unreadable files "
                      "will be looked for again next time", stacklevel=4)


def _verify(root, rels):
    """One parallel decode pass: `{rel: [height, width, channels, is_jpeg]}` for readable files."""
    import tensorflow as tf

    if not rels:
        return {}
    prefix = os.path.join(str(root), "")  # str + rel: 10x cheaper than a Path per file
    paths = np.asarray([prefix + rel for rel in rels])

    @tf.autograph.experimental.do_not_convert  # plain tf ops: autograph would only cost time
    def probe(index, path):
        return (index, *probe_image(tf.io.read_file(path)))

    ds = (tf.data.Dataset.from_tensor_slices((np.arange(len(rels)), paths))
          .map(probe, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
          .ignore_errors(log_warning=False)
          .batch(4096))
    parts = [np.stack(batch, axis=1) for batch in ds.as_numpy_iterator()]
    if not parts:
        return {}
    rows = np.concatenate(parts).astype(np.int64).tolist()  # [index, h, w, c, is_jpeg]
    return {rels[row[0]]: row[1:] for row in rows}


def _measure(root, files):
    """`{rel: [h, w, c, is_jpeg]}` of the readable `files`: complete JPEGs and PNGs from their
    headers (`headers.read_header`), the rest by TensorFlow's decode probe (`_verify`).
    Decoding every file at 1/8 scale took 3-6 s for a cold 40k-JPEG folder, which made its
    first load slower than Keras'."""
    prefix = os.path.join(str(root), "")
    found, rest = {}, []
    for f in files:
        header = read_header(prefix + f.rel, f.size)
        if header is None:
            rest.append(f.rel)
        else:
            found[f.rel] = header
    found.update(_verify(root, rest))
    return found


def _probe_all(root, files):
    """`({rel: (h, w, c, is_jpeg)} of readable files, [(rel, reason)] of skipped files)`."""
    skipped, candidates = [], []
    for f in files:
        if not f.rel.lower().endswith(IMAGE_SUFFIXES):
            skipped.append((f.rel, "not an image file type"))
        elif f.size == 0:
            skipped.append((f.rel, "empty file"))
        else:
            candidates.append(f)
    where = manifest_path(root)
    old = _read_manifest(where)
    entries, todo = {}, []  # rel: [size, mtime, h, w, c, is_jpeg]; c == 0: unreadable
    for f in candidates:
        entry = old.get(f.rel)
        if type(entry) is list and len(entry) == 6 and entry[0] == f.size and entry[1] == f.mtime:
            entries[f.rel] = entry
        else:
            todo.append(f)
    if todo:
        fresh = _measure(root, todo)
        for f in todo:
            entries[f.rel] = [f.size, f.mtime, *(fresh.get(f.rel) or [0, 0, 0, 0])]
    if todo or len(old) != len(entries):  # without todo, entries are a subset of old
        _write_manifest(where, entries)
    readable = {}
    for f in candidates:
        entry = entries[f.rel]
        if entry[4]:
            readable[f.rel] = entry[2:]
        else:
            skipped.append((f.rel, "cannot be decoded (corrupt, truncated or not an image)"))
    return readable, sorted(skipped)


# ----------------------------------------------------------------------------------- loader


@contextlib.contextmanager
def _no_gc():
    """The listing and the manifest are ~10 small objects per file and hold no cycles: the
    collector's passes over them were a third of the time of a 40k folder's listing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _check_listing(root, class_names, files, layout):
    images = [f for f in files if f.rel.lower().endswith(IMAGE_SUFFIXES)]
    if not images:
        raise ValueError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found in class sub-folders of {root}; "
            "expected <folder>/<class name>/<image files> or <folder>/train/<class name>/..."
        )
    if len(class_names) < 2:
        raise ValueError(f"A classifier needs at least 2 classes; Received: 1 class "
                         f"({class_names}) in {root}")
    _check_every_class(root, class_names, images, "no image files")


def _check_every_class(root, class_names, files, what):
    have = {(f.split, f.label) for f in files}
    splits = sorted({f.split for f in files}, key=str)
    for s in splits:
        empty = [class_names[k] for k in range(len(class_names)) if (s, k) not in have]
        if empty:
            where = root / s if s else root
            raise ValueError(f"Every class folder needs images; Received: {what} in "
                             f"{', '.join(str(where / n) for n in empty)}")


def _default_size(sizes):
    """The most common (height, width), ties to the smaller (the fewest images get resized),
    scaled down to `DEFAULT_MAX_SIDE` on its longer side (a folder of camera photos must not
    make 4000 px batches)."""
    counts = collections.Counter(sizes)
    h, w = min(counts, key=lambda hw: (-counts[hw], hw[0] * hw[1], hw))
    scale = min(1.0, DEFAULT_MAX_SIDE / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def _split_indices(files, layout, validation_split, test_split, seed):
    labels = np.asarray([f.label for f in files], np.int32)
    if layout is None:
        return split(len(files), labels, validation_split, test_split, seed)
    given = {s: np.flatnonzero([f.split == s for f in files]) for s in _SPLITS}
    train = given["train"]
    carve_val = 0.0 if "validation" in layout else validation_split
    carve_test = 0.0 if "test" in layout else test_split
    if carve_val or carve_test:
        parts = split(len(train), labels[train], carve_val, carve_test, seed)
        given["train"] = train[parts["train"]]
        for s in ("validation", "test"):
            if s not in layout:
                given[s] = train[parts[s]]
    return given


def _resolve_cache(cache, n_images, size, channels):
    if cache == "auto":
        decoded = n_images * size[0] * size[1] * channels
        return "memory" if decoded < AUTO_CACHE_BYTES else None
    return cache


def _make_pipeline(paths, labels, ratios, *, size, channels, crop, batch_size, cache, shuffle,
                   seed, name, shard=None):
    """The batched pipeline of one split; with `shard=(index, count)`, one worker's share of it
    (see `_keep_share`): batches of `batch_size // count`."""
    import tensorflow as tf

    n = len(labels)
    if n == 0:
        return None

    @tf.autograph.experimental.do_not_convert  # no Python control flow on tensors: ~1 s saved
    def load(path, label, ratio):
        image = decode_image(tf.io.read_file(path), channels, ratio)
        return resize_image(image, size, crop), label

    ds = tf.data.Dataset.from_tensor_slices((paths, labels, ratios))
    if shuffle and not cache:  # shuffle paths, not images: the buffer stays a list of strings
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if shard and not cache:  # before decoding: each worker decodes only its own images
        ds = _keep_share(ds, n, batch_size, *shard)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    # A file that changed after the verify pass is dropped, not a crash hours into training.
    ds = ds.ignore_errors(log_warning=True)
    if cache:
        ds = apply_cache(ds, cache, name)
        if shuffle:
            buffer = n if cache == "memory" else max(
                batch_size, _FILE_CACHE_SHUFFLE_BYTES // (size[0] * size[1] * channels))
            ds = ds.shuffle(min(n, buffer), seed=seed, reshuffle_each_iteration=True)
        if shard:  # the cache holds decoded images, shuffled after it: nothing to save there
            ds = _keep_share(ds, n, batch_size, *shard)
    if shard:
        return ds.batch(batch_size // shard[1], drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _keep_share(ds, n, batch_size, index, count):
    """Worker `index` of `count`'s elements of an unbatched, shuffled split of `n` elements.

    The same as batching by `batch_size`, dropping the last partial batch, and keeping the
    `index`-th of `count` equal slices of every batch (what `Cluster.shard_train` does with
    the batches), but before decoding. Every worker shuffles with the same seed, so they all
    see the same order each epoch and their shares together are exactly the global batches.
    `enumerate` restarts with every pass, so `k` is the position within the epoch.
    """
    if batch_size % count:
        raise ValueError(f"batch_size must be a multiple of the number of workers, so that each "
                         f"gets the same share; Received: batch_size={batch_size}, {count} workers")
    part = batch_size // count
    ds = ds.take(n // batch_size * batch_size).enumerate()
    return ds.filter(lambda k, _: k % batch_size // part == index).map(lambda _, element: element)


def from_folder(root, *, image_size=None, batch_size=32, validation_split=0.1, test_split=0.1,
                seed=0, crop=None, cache="auto"):
    """Streams an image folder as train/validation/test tf.data pipelines.

    Layouts: `<root>/<class>/<images>` (split here, stratified and seeded, over the paths), or
    `<root>/train|validation|val|test/<class>/<images>` (the given splits are kept; a missing
    validation or test folder is carved from train with `validation_split`/`test_split`).
    Sub-folders of a class folder are included; hidden files and folders are ignored.

    Every image comes out uint8 at one size, with 3 channels (grayscale, palette, RGBA, 16-bit
    inputs converted: 16-bit scaled to 8 bits, PNG/WebP transparency composited onto white,
    `images.ALPHA_BACKGROUND`) or 1 channel when every image is grayscale. Files that are
    not images, empty, corrupt or truncated are skipped, named in `Data.skipped` and in a
    warning; they are found once, by a verify pass remembered in the manifest (see
    `manifest_path`): the headers of JPEGs and the chunk CRCs of PNGs, a decode of other
    files. JPEGs much larger than the pipeline size are decoded at 1/2, 1/4 or 1/8
    scale by libjpeg itself (never below the pipeline size), the cheapest way to shrink them.

    Args:
        root: The folder.
        image_size: Side of the square pipeline images (default: the folder's most common
            height and width, ties to the smaller, scaled to at most 512 px on the longer side;
            never "the first file's").
        batch_size: Default 32.
        validation_split: Fraction held out for validation (default 0.1).
        test_split: Fraction held out for test (default 0.1).
        seed: Seed of the split and of the shuffle (default 0).
        crop: None (default: stretch), "center" (centre crop to the aspect ratio, then resize)
            or "pad" (letterbox).
        cache: "auto" (default: in memory when the decoded images of all splits at the
            pipeline size are under 1 GiB, else none), "memory", None (decode every epoch), or a
            file path prefix (tf.data cache files `<prefix>_train`, ...; shuffling then uses a
            buffer of about 256 MB of images). `Data.cache` says which was used.

    Returns:
        A `Data`; `class_counts` are training images per class.

    Raises:
        ValueError: An unreadable folder, no images, one class, a class folder without images
            (or without readable ones), split folders with different classes, every file
            unreadable, a bad `crop` or `cache`.

    Example:
        >>> data = from_folder(Path("photos"), image_size=64, crop="center")
        >>> data.class_counts, len(data.skipped), data.cache
        ([412, 388], 2, 'memory')
    """
    crop = check_crop(crop)
    cache = check_cache(cache)
    root = Path(root)
    with _no_gc():
        class_names, files, layout = scan_folder(root)
        _check_listing(root, class_names, files, layout)
        readable, skipped = _probe_all(root, files)
    kept = [f for f in files if f.rel in readable]
    if not kept:
        raise ValueError(
            f"All {len(skipped)} files in {root} are unreadable as images; Received: e.g. "
            + ", ".join(f"{rel} ({why})" for rel, why in skipped[:3])
        )
    _check_every_class(root, class_names, kept, "no readable images")
    if skipped:
        shown = "; ".join(f"{rel} ({why})" for rel, why in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"Skipped {len(skipped)} unreadable file(s) in {root}: {shown}{more} "
                      "(all listed in Data.skipped)", stacklevel=3)

    probes = np.asarray([readable[f.rel] for f in kept], np.int64).reshape(-1, 4)
    size = (image_size, image_size) if image_size else _default_size(
        list(zip(probes[:, 0].tolist(), probes[:, 1].tolist())))
    channels = 1 if np.isin(probes[:, 2], (1, 2)).all() else 3
    ratios = np.where(probes[:, 3] == 1, jpeg_ratio(probes[:, 0], probes[:, 1], size), 1)
    ratios = ratios.astype(np.int32)
    prefix = os.path.join(str(root), "")
    paths = np.asarray([prefix + f.rel for f in kept])
    labels = np.asarray([f.label for f in kept], np.int32)
    index = _split_indices(kept, layout, validation_split, test_split, seed)
    used = _resolve_cache(cache, len(kept), size, channels)

    def pipeline(name, pipeline_seed, shard=None):
        idx = index[name]
        return _make_pipeline(
            paths[idx], labels[idx], ratios[idx], size=size, channels=channels, crop=crop,
            batch_size=batch_size, cache=used, shuffle=name == "train", seed=pipeline_seed,
            name=name, shard=shard,
        )

    def make_train(train_seed):
        # Several workers (`Cluster.shard_train`) each build their share from the paths, so
        # that each decodes only its own images rather than all of them.
        ds = pipeline("train", train_seed)
        return ds if ds is None else with_train_shards(
            ds, batch_size, lambda i, count: pipeline("train", train_seed, shard=(i, count)))

    return Data(
        train=pipeline("train", seed),
        validation=pipeline("validation", seed),
        test=pipeline("test", seed),
        make_train=make_train,
        class_names=list(class_names),
        input_shape=(int(size[0]), int(size[1]), channels),
        source=str(root),
        sizes={name: int(len(index[name])) for name in _SPLITS},
        class_counts=np.bincount(labels[index["train"]], minlength=len(class_names)).tolist(),
        batch_size=batch_size,
        skipped=[str(root / rel) for rel, _ in skipped],
        cache=used or "none",
    )
