"""`export`: SavedModel (Keras' own `model.export`) and TFLite fp32/fp16/int8, checked after export.

TFLite goes through a SavedModel and `tf.lite.TFLiteConverter.from_saved_model`, not
`from_keras_model`, which fails on Keras 3 models (keras-team/keras#19108). int8 is post-training
quantization with a representative dataset of training images; operators without an int8 kernel
stay float, and the input and output stay float32, so every format takes the same raw 0-255
pixels as the Keras model (preprocessing is inside the graph).

After exporting, the artifact itself (the SavedModel's `serve` endpoint, or a TFLite
interpreter) runs on the test split; `export.json` records its size, top-1 agreement with the
Keras model, the largest absolute probability difference, its accuracy and its latency per image.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import validation as v
from .common import SPLITS, load_run_data, open_model, split_of

__all__ = ["export", "FORMATS", "EXPORT_DIR", "EXPORT_FILE", "artifact_name", "load_artifact"]

#: `export(format=...)` values.
FORMATS = ("savedmodel", "tflite", "tflite-fp16", "tflite-int8")
#: The run's sub-folder for exports, and the summary file in it.
EXPORT_DIR = "export"
EXPORT_FILE = "export.json"

_NAMES = {"savedmodel": "savedmodel", "tflite": "model.tflite",
          "tflite-fp16": "model_fp16.tflite", "tflite-int8": "model_int8.tflite"}


def artifact_name(format: str) -> str:
    """File (or folder) name of a format's artifact inside the export folder."""
    return _NAMES[v.check_choice("format", format, FORMATS)]


def export(model_or_run, format="tflite", *, out=None, data=None, representative_images=300,
           check=True, latency_images=50, batch_size=64) -> dict:
    """Exports a classifier, runs the artifact on the test split and writes `export.json`.

    Args:
        model_or_run: A run folder, a `.keras` file or a `keras.Model`.
        format: `"savedmodel"`, `"tflite"` (fp32), `"tflite-fp16"` (fp16 weights) or
            `"tflite-int8"` (int8 weights and activations, float32 input/output).
        out: Export folder (default `<run>/export`; required for a model in memory).
        data: A `Data`, a source or `(x, y)` (default: the run's dataset with its splits): the
            test split checks the artifact (validation when there is no test split), the
            training split feeds int8 calibration.
        representative_images: Training images for int8 calibration (default 300).
        check: Run the artifact and record agreement, accuracy and latency (default True).
        latency_images: Single-image calls timed for the latency (default 50).
        batch_size: Batch size of the agreement pass (default 64).

    Returns:
        This format's entry of `export.json`: `format`, `path`, `size_bytes`, and with `check`
        `split`, `images`, `top1_agreement`, `max_abs_prob_diff`, `accuracy`, `keras_accuracy`,
        `latency_ms_per_image`, `keras_latency_ms_per_image`.

    Raises:
        ValueError: An unknown format, a bad model or run, int8 without training images, or
            `check` without any held-out split.

    Example:
        >>> recipes.export("runs/digits", "tflite-int8")["top1_agreement"]
        0.99...
    """
    import tensorflow as tf

    v.check_choice("format", format, FORMATS)
    v.check_int("representative_images", representative_images, 1)
    v.check_int("latency_images", latency_images, 1)
    v.check_int("batch_size", batch_size, 1)
    src = open_model(model_or_run)
    folder = src.out_dir(EXPORT_DIR, out)
    loaded = None
    if check or format == "tflite-int8":
        try:
            loaded = load_run_data(src, data)
        except ValueError as exc:
            need = "int8 export needs training images" if format == "tflite-int8" else \
                "checking the export needs held-out images (pass check=False to skip)"
            raise ValueError(f"{need}: {exc}") from None
    if format == "tflite-int8":
        train = split_of(loaded, "train") if loaded.sizes.get("train") else None
        if train is None:
            raise ValueError("int8 export needs training images for its representative dataset; "
                             "Received: data with no train split")
    check_ds = check_split = None
    if check:
        check_split = next((s for s in SPLITS[:2] if loaded.sizes.get(s)), None)
        if check_split is None:
            raise ValueError("Checking the export needs a test or validation split; Received: "
                             "data with neither (pass check=False to skip the check)")
        check_ds = split_of(loaded, check_split)

    target = folder.file(artifact_name(format))
    target.parent.mkdir(parents=True, exist_ok=True)
    model = src.model
    if format == "savedmodel":
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".savedmodel."))
        try:
            model.export(str(tmp / "m"), format="tf_saved_model", verbose=False)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp / "m", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model.export(os.path.join(tmp, "m"), format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "m"))
            if format != "tflite":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if format == "tflite-fp16":
                converter.target_spec.supported_types = [tf.float16]
            if format == "tflite-int8":
                converter.representative_dataset = _representative(model, train, representative_images)
            flat = converter.convert()
        tmp_file = target.with_name(f".{target.name}.tmp")
        tmp_file.write_bytes(flat)
        os.replace(tmp_file, target)

    entry = {"format": format, "path": str(target), "size_bytes": _size(target)}
    if src.run is not None and src.run.model_path.is_file():
        entry["keras_size_bytes"] = _size(src.path or src.run.model_path)
    if check:
        entry.update(_check(model, load_artifact(target, format), check_ds, check_split,
                            latency_images))
    summary = folder.read_json(EXPORT_FILE) if folder.file(EXPORT_FILE).is_file() else {}
    summary[format] = entry
    folder.write_json(EXPORT_FILE, summary)
    return entry


def _size(path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _representative(model, ds, count):
    """int8 calibration batches: `count` training images, one at a time, float32 raw pixels."""
    from .prediction import as_model_input

    def gen():
        seen = 0
        for images, _ in ds:
            for image in as_model_input(np.asarray(images), model):
                if seen >= count:
                    return
                seen += 1
                yield [image[None]]

    return gen


class _SavedModelRunner:
    def __init__(self, path):
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(path))
        self._serve = self._loaded.serve

    def __call__(self, x):
        return np.asarray(self._serve(x))


class _TFLiteRunner:
    def __init__(self, path):
        try:  # LiteRT, TFLite's successor package, when installed; else TF's own interpreter
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        with warnings.catch_warnings():  # TF's interpreter warns that LiteRT replaces it
            warnings.simplefilter("ignore")
            self._interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self._shape = None

    def __call__(self, x):
        x = np.asarray(x, self._input["dtype"])
        if self._shape != x.shape:
            self._interpreter.resize_tensor_input(self._input["index"], list(x.shape))
            self._interpreter.allocate_tensors()
            self._shape = x.shape
        self._interpreter.set_tensor(self._input["index"], x)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]))


def load_artifact(path, format):
    """A callable `images -> probabilities` running an exported artifact (batched float32 raw
    pixels in, `(N, C)` out): the SavedModel's `serve` endpoint or a TFLite interpreter."""
    v.check_choice("format", format, FORMATS)
    return _SavedModelRunner(path) if format == "savedmodel" else _TFLiteRunner(path)


def _check(model, runner, ds, split, latency_images):
    from .prediction import as_model_input

    keras_probs, art_probs, labels, singles = [], [], [], []
    for images, y in ds:
        x = as_model_input(np.asarray(images), model)
        keras_probs.append(np.asarray(model.predict_on_batch(x)))
        art_probs.append(runner(x))
        labels.append(np.asarray(y).reshape(-1))
        if sum(len(s) for s in singles) < latency_images:
            singles.append(x[:latency_images])
    keras_probs, art_probs = np.concatenate(keras_probs), np.concatenate(art_probs)
    labels = np.concatenate(labels)
    singles = np.concatenate(singles)[:latency_images]
    return {
        "split": split, "images": int(len(labels)),
        "top1_agreement": float(np.mean(keras_probs.argmax(1) == art_probs.argmax(1))),
        "max_abs_prob_diff": float(np.max(np.abs(keras_probs - art_probs))),
        "accuracy": float(np.mean(art_probs.argmax(1) == labels)),
        "keras_accuracy": float(np.mean(keras_probs.argmax(1) == labels)),
        "latency_ms_per_image": _latency(runner, singles),
        "keras_latency_ms_per_image": _latency(model.predict_on_batch, singles),
    }


def _latency(fn, images, warmup=3):
    """Median wall time of one single-image call, in milliseconds."""
    for image in images[:warmup]:
        fn(image[None])
    times = []
    for image in images:
        start = time.perf_counter()
        fn(image[None])
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 3)

