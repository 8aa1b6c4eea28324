"""What every after-training command shares: opening a run or model, its data, reading images.

A command takes a run folder, a `.keras` file or a built `keras.Model`. A run folder (or a `.keras`
file inside one) brings its `recipe.json`, so the data source, splits and seed are the run's own:
`load_split` then yields exactly the images the run held out.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from .. import validation as v
from ..run import RunFolder

__all__ = [
    "Source", "open_model", "load_run_data", "split_of", "collect", "class_names_for",
    "model_image_shape", "list_images", "read_images", "logits_layer", "SPLITS",
]

#: Splits a command can run on.
SPLITS = ("test", "validation", "train")


@dataclasses.dataclass
class Source:
    """A model and where it came from.

    Attributes:
        model: The `keras.Model`.
        run: The `RunFolder` it belongs to (None for a bare model or a `.keras` file outside one).
        path: The `.keras` file read (None for a model given in memory).
    """

    model: object
    run: RunFolder | None = None
    path: Path | None = None

    @property
    def recipe(self):
        """The run's `Recipe`, or None without a run (or without its recipe.json)."""
        if self.run is None or not self.run.recipe_path.is_file():
            return None
        return self.run.recipe()

    def out_dir(self, name: str, out=None) -> RunFolder:
        """Where a command writes: `out`, else `<run>/<name>`, else `<model file's folder>/<name>`.

        Raises:
            ValueError: A model given in memory with no `out`.
        """
        if out is not None:
            return RunFolder(out)
        if self.run is not None:
            return self.run.sub(name)
        if self.path is not None:
            return RunFolder(self.path.parent / name)
        raise ValueError(f"A model given in memory has no run folder to write {name}/ into; "
                         "pass out=<folder>")


def open_model(model_or_run, *, model_file=None) -> Source:
    """Opens a run folder, a `.keras` file or a built model.

    Args:
        model_or_run: A `keras.Model`, a `RunFolder`, a run folder path or a `.keras` file path.
        model_file: Which model of a run folder to read (default its `model.keras`).

    Returns:
        A `Source`.

    Raises:
        ValueError: A path that does not exist, a run folder without `model.keras`, or a file
            that is not a readable Keras model (truncated, another format).

    Example:
        >>> open_model("runs/digits").model.input_shape
        (None, 8, 8, 1)
    """
    import keras

    if isinstance(model_or_run, Source):
        return model_or_run
    if isinstance(model_or_run, keras.Model):
        return Source(model_or_run)
    if not isinstance(model_or_run, (str, os.PathLike, RunFolder)):
        raise ValueError("Expected a run folder, a .keras file or a keras.Model; "
                         f"Received: {type(model_or_run).__name__}")
    path = Path(os.fspath(model_or_run))
    if path.is_dir():
        run = RunFolder(path)
        file = run.file(model_file) if model_file else run.model_path
        if not file.is_file():
            raise ValueError(f"Run folder has no {file.name} (not a finished run?); "
                             f"Received: {str(path)!r}")
    elif path.is_file():
        file = path
        run = RunFolder(path.parent) if RunFolder(path.parent).recipe_path.is_file() else None
    else:
        raise ValueError(f"No such run folder or model file; Received: {str(path)!r}")
    if file.suffix != ".keras":
        raise ValueError(f"A model file must be a .keras file; Received: {str(file)!r}")
    try:
        model = keras.models.load_model(file)
    except Exception as exc:  # zip, JSON or weight errors alike: one message for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"Not a readable Keras model (truncated or not a model?); Received: "
                         f"{str(file)!r} ({type(exc).__name__}: {first[:200]})") from None
    return Source(model, run, file)


def load_run_data(source: Source, data=None, *, data_dir=None):
    """The `Data` a command runs on: `data` (a Data, source or `(x, y)`), else the run's dataset.

    The run's recipe supplies splits, seed and batch size, so a source given by name is split as
    the run split it.

    Raises:
        ValueError: No data given and no recipe to read it from, or a source that cannot load.
    """
    from ..config import Recipe
    from ..data import Data
    from ..training import prepare_data

    if isinstance(data, Data):
        return data
    recipe = source.recipe
    if data is None and recipe is None:
        raise ValueError("No data: the model has no run folder with a recipe.json to read the "
                         "dataset from; pass data (a Data, a source such as 'digits', or (x, y))")
    if data is None and recipe.dataset.startswith("arrays("):
        raise ValueError(f"The run was trained on in-memory arrays ({recipe.dataset}), which its "
                         "recipe cannot reload; pass the data (or --dataset)")
    _, loaded = prepare_data(recipe or Recipe(), data, data_dir=data_dir)
    return loaded


def split_of(data, split: str):
    """`data.<split>`, checked to exist and hold images.

    Raises:
        ValueError: An unknown split, or one the data does not have (e.g. `test_split=0`).
    """
    v.check_choice("split", split, SPLITS)
    ds = getattr(data, split)
    if ds is None or not data.sizes.get(split, 0):
        have = [s for s in SPLITS if getattr(data, s) is not None and data.sizes.get(s, 0)]
        raise ValueError(f"The data has no {split} split; Received: split={split!r} "
                         f"(available: {', '.join(have) or 'none'})")
    return ds


def logits_layer(model):
    """The layer whose output feeds the final softmax: `logits` in models built here.

    Returns:
        `(logits_tensor, temperature)`: the symbolic pre-softmax tensor of the *uncalibrated*
        model and the temperature already applied (1.0 when none).

    Raises:
        ValueError: A model whose output is not a softmax over a named or findable input.
    """
    from .calibration import TEMPERATURE_LAYER

    names = [layer.name for layer in model.layers]
    if TEMPERATURE_LAYER in names:
        layer = model.get_layer(TEMPERATURE_LAYER)
        return layer.input, 1.0 / float(layer.scale)
    if "logits" in names:
        return model.get_layer("logits").output, 1.0
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    if getattr(activation, "__name__", "") == "softmax" and type(last).__name__ == "Activation":
        return last.input, 1.0
    raise ValueError("Needs a classifier whose last layer is a softmax over logits (as "
                     f"build_classifier makes); Received: model {model.name!r} ending in "
                     f"{type(last).__name__} {last.name!r}")


def logits_model(model):
    """A model sharing `model`'s layers that returns `(logits, probabilities)`, plus the
    temperature the probabilities already include."""
    import keras

    logits, temperature = logits_layer(model)
    return keras.Model(model.inputs, [logits, model.outputs[0]]), temperature


def collect(model, ds, *, keep=0, transform=None):
    """Runs `model` over a batched `(images, labels)` dataset.

    Args:
        model: A classifier (or a `logits_model`, whose two outputs are both kept).
        ds: Batched tf.data of `(images, labels)`.
        keep: Keep the `keep` images with the largest loss (top losses), default none.
        transform: Optional function applied to each image batch first (test-time augmentation).

    Returns:
        `dict(outputs=[arrays...], labels=(N,), worst=(indices, images))`.
    """
    outs, labels, worst_idx, worst_img, worst_loss = None, [], [], [], []
    seen = 0
    predict = _predict_fn(model)
    declared = tuple(model.inputs[0].shape[1:])
    for images, y in ds:
        x = images if transform is None else transform(images)
        if not _fits(x.shape[1:], declared):  # another source than the run's: gray <-> RGB, size
            from .prediction import as_model_input

            x = as_model_input(np.asarray(x), model)
        result = predict(x)
        result = [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]
        outs = [[] for _ in result] if outs is None else outs
        for acc, r in zip(outs, result):
            acc.append(r)
        y = np.asarray(y).reshape(-1)
        labels.append(y)
        if keep:
            probs = result[-1]
            loss = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))
            worst_idx.extend(range(seen, seen + len(y)))
            worst_img.extend(np.asarray(images))
            worst_loss.extend(loss)
            order = np.argsort(worst_loss)[::-1][:keep]  # keep memory at `keep` images
            worst_idx = [worst_idx[i] for i in order]
            worst_img = [worst_img[i] for i in order]
            worst_loss = [worst_loss[i] for i in order]
        seen += len(y)
    if outs is None:
        raise ValueError("The dataset yielded no images")
    return dict(outputs=[np.concatenate(o) for o in outs], labels=np.concatenate(labels),
                worst=(np.asarray(worst_idx, int), np.asarray(worst_img)))


def _fits(shape, declared):
    return len(shape) == len(declared) and all(d is None or d == s for s, d in zip(shape, declared))


def _predict_fn(model):
    # predict_on_batch traces once per input shape; a fixed-shape model sees one shape per run.
    return model.predict_on_batch


def class_names_for(source: Source, num_classes: int, data=None) -> list[str]:
    """Class names: the data's, else a run's image-folder classes, else `"0"`, `"1"`, ...

    Reading class names from a folder lists its sub-folders only (no image is opened).
    """
    if data is not None and len(getattr(data, "class_names", ())) == num_classes:
        return [str(c) for c in data.class_names]
    recipe = source.recipe
    if recipe is not None and Path(recipe.dataset).is_dir():
        try:
            names = _folder_classes(Path(recipe.dataset))
            if len(names) == num_classes:
                return names
        except ValueError:
            pass
    return [str(i) for i in range(num_classes)]


def _folder_classes(root):
    from ..data.folders import _layout, _visible_dirs

    layout = _layout(root)
    base = root / layout["train"] if layout else root
    return sorted(_visible_dirs(base))


def model_image_shape(model) -> tuple[int | None, int | None, int]:
    """`(height, width, channels)` the model declares (height/width None when any size goes)."""
    shape = tuple(model.inputs[0].shape)[1:]
    if len(shape) != 3:
        raise ValueError(f"Needs an image model (inputs of shape (H, W, C)); Received: input shape "
                         f"{tuple(model.inputs[0].shape)}")
    h, w, c = shape
    return h, w, int(c or 3)


def _target_size(model, height, width):
    """The size images are resized to: the declared one, else the model's own Resize target."""
    if height and width:
        return int(height), int(width)
    for layer in model.layers:
        if layer.name == "resize" and hasattr(layer, "height"):
            return int(layer.height), int(layer.width)
    return None


def list_images(paths) -> list[str]:
    """Image files from files and folders (folders searched recursively, sorted, hidden skipped).

    Files named explicitly are kept whatever their suffix (a broken one gets an error row); in
    folders only image suffixes count.

    Raises:
        ValueError: A path that does not exist, or no image at all.
    """
    from ..data.images import IMAGE_SUFFIXES

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(str(Path(root) / f) for f in sorted(files)
                             if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES))
        elif p.is_file():
            found.append(str(p))
        else:
            raise ValueError(f"No such image file or folder; Received: {str(p)!r}")
    if not found:
        raise ValueError(f"No images found (looked for {', '.join(IMAGE_SUFFIXES)}); Received: "
                         f"paths={[str(p) for p in paths]!r}")
    return found


def read_image(path, size, channels, crop=None):
    """One image file as a uint8 `(H, W, channels)` array at `size` (None: kept as is).

    Raises:
        ValueError: The file cannot be read or decoded as an image.
    """
    import tensorflow as tf

    from ..data.images import decode_image, resize_image

    try:
        raw = tf.io.read_file(str(path))
        image = decode_image(raw, channels)
        if size is not None:
            image = resize_image(image, size, crop)
        return image.numpy()
    except (tf.errors.OpError, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise ValueError(f"cannot read image: {message.strip().splitlines()[0][:200]}") from None


def read_images(paths, model, *, batch_size=64, crop=None):
    """Yields `(indices, images, errors)` per batch of files, decoded in parallel threads.

    `images` is a uint8 array at the model's input size and channels; `errors` maps an index of
    an unreadable file to its message. Only one batch of images is in memory at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    h, w, channels = model_image_shape(model)
    size = _target_size(model, h, w)
    workers = min(8, os.cpu_count() or 1)

    def load(path):
        try:
            return read_image(path, size, channels, crop), None
        except ValueError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            indices, images, errors = [], [], {}
            for i, (image, error) in enumerate(pool.map(load, chunk), start):
                if error is not None:
                    errors[i] = error
                    continue
                if images and image.shape != images[0].shape:  # any-size model: one per batch
                    yield np.asarray(indices), np.stack(images), {}
                    indices, images = [], []
                indices.append(i)
                images.append(image)
            yield np.asarray(indices, int), (np.stack(images) if images else None), errors
