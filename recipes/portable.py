"""`portable_model`: a classifier's inference graph from Keras core layers and ops only.

A model from `build_classifier` holds this package's layers (`ToRGB`, `Resize`,
`BackbonePreprocessing`, the `Backbone` wrapper, augmentation), and `train` compiles it with its
own loss and metrics; such a file only loads where `recipes` is imported. `portable_model`
rebuilds the same inference computation from what Keras itself can load: the layers' arithmetic
as Keras ops (`recipes.layers.to_rgb`, `preprocess`) and Keras' `Resizing`, augmentation
left out (it is the identity at inference), the keras.applications backbone as the nested
functional model it is, and copies of the head's layers. The weights are the model's own (copied),
in the same order, so `model.set_weights(portable.get_weights())` works both ways.

What the portable model does not carry: the compile state (optimizer and its moments, the loss
with label smoothing or MixUp/CutMix, the metrics; it is saved uncompiled), the augmentation,
and `bn_inference` (fine-tuned with `fit`, its BatchNorm layers follow Keras' `training` flag).
A run's `backup/` and the in-memory model keep all of that for resuming.
"""

from __future__ import annotations

import json

import keras

__all__ = ["portable_model", "custom_objects_in", "load_model_file"]


def custom_objects_in(model, *, compiled=True) -> list[str]:
    """Names of the objects in `model`'s saved config that plain Keras cannot load.

    Everything registered by a package (`recipes>ToRGB`, `callbacks>...`) or defined outside
    Keras counts; Keras layers, ops and numpy constants do not.

    Args:
        model: A `keras.Model`.
        compiled: Also look at the compile config (loss, metrics, optimizer; default True).

    Returns:
        Sorted registered names, e.g. `["recipes>Backbone", "recipes>ToRGB"]`; empty when
        `keras.models.load_model` needs nothing but Keras.

    Example:
        >>> custom_objects_in(recipes.portable_model(model))
        []
    """
    configs = [keras.saving.serialize_keras_object(model)]
    if compiled and getattr(model, "compiled", False):
        try:
            configs.append(keras.saving.serialize_keras_object(model.get_compile_config()))
        except Exception:  # an unserializable compile state cannot be loaded either
            return ["<compile config>"]
    found = set()

    def walk(node):
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and "class_name" in node and not module.startswith("keras"):
                found.add(node.get("registered_name") or f"{module}.{node['class_name']}")
            for value in node.values():
                walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value)

    walk(json.loads(json.dumps(configs, default=str)))
    return sorted(found)


def portable_model(model, *, strict=True):
    """The inference model of a classifier, loadable by `keras.models.load_model` anywhere.

    Args:
        model: A model from `build_classifier` (or `train`, `fine_tune`, an `ensemble` of them
            averaging probabilities), or any functional Keras model.
        strict: Raise when the result would still need custom objects (default True); with
            False, return `model` itself instead (it then loads only where its package is
            imported).

    Returns:
        A `keras.Model` with the same inputs, outputs, name and weights (copied), built from
        Keras core layers and ops only, uncompiled. A model that needs nothing custom is
        returned as is (compiled state included).

    Raises:
        ValueError: `strict` and the model holds custom layers that have no core equivalent
            (the message names them).

    Example:
        >>> portable = recipes.portable_model(result.model)
        >>> portable.save("digits.keras")  # loads in a process that never imports recipes
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"portable_model takes a keras.Model; Received: {type(model).__name__}")
    if not custom_objects_in(model):
        return model
    portable = _rebuild(model) if _is_functional(model) else model
    left = custom_objects_in(portable, compiled=False)
    if left:
        if not strict:
            return model
        raise ValueError(
            f"Model {model.name!r} holds layers that plain Keras cannot load and that have no "
            f"core-layer equivalent; Received: {', '.join(left)}. Save it with model.save() and "
            "load it where the package that defines them is imported."
        )
    return portable


def _is_functional(model):
    # Functional models only: Sequential and subclassed models have no graph to rewire.
    return type(model).__name__ == "Functional"


def _augmentation_slot(model):
    """Names of the layers between the input conversion and the preprocessing: augmentation
    (names, since clone_model hands `call_function` the copies)."""
    from .layers import BackbonePreprocessing, Resize, ToRGB

    slot, inside = set(), False
    for layer in model.layers:
        if isinstance(layer, (ToRGB, Resize)):
            inside = True
        elif isinstance(layer, BackbonePreprocessing):
            inside = False
        elif inside and not isinstance(layer, keras.layers.InputLayer):
            slot.add(layer.name)
    return slot


def _resize(layer, x):
    # Keras' own Resizing (what `Resize` subclasses), still named "resize". Called with an
    # explicit training=False: its signature defaults to True, and a bare `model(x)` would hand
    # that on to Dropout and BatchNorm (fit and predict pass their own flag, which wins).
    config = {k: v for k, v in layer.get_config().items() if k != "registered_name"}
    return keras.layers.Resizing.from_config(config)(x, training=False)


def _rebuild(model):
    from .layers import Backbone, BackbonePreprocessing, Resize, ToRGB, preprocess, to_rgb

    augmentation = _augmentation_slot(model)

    def call(layer, *args, **kwargs):
        x = args[0] if args else None
        if isinstance(layer, ToRGB):
            return to_rgb(x, x.shape[-1], layer.compute_dtype)
        if isinstance(layer, Resize):
            return _resize(layer, x)
        if layer.name in augmentation:
            return x  # random layers are the identity at inference
        if isinstance(layer, BackbonePreprocessing):
            return preprocess(x, layer.mode, layer.compute_dtype)
        if isinstance(layer, Backbone):
            # The application model itself: a bare call (training unset) is inference.
            return keras.models.clone_model(layer.backbone)(x, training=False)
        if isinstance(layer, keras.Model) and custom_objects_in(layer, compiled=False):
            return portable_model(layer, strict=False)(*args, **kwargs)  # ensemble members
        return layer(*args, **kwargs)

    # Copies, not the model's own layers: calling those again would give each a second inbound
    # node, and `layer.output` (which code such as calibration reads) would stop working.
    # The copy is made from an uncompiled view of the graph, or clone_model would recompile it
    # with the original's (custom) loss and build an optimizer.
    # The layers `call` replaces are handed to it as they are: Keras' default clone would first
    # rebuild each from its config (for `Backbone`, the whole application: ~0.9 s of a run's end).
    def clone(layer):
        replaced = (isinstance(layer, (ToRGB, Resize, BackbonePreprocessing, Backbone))
                    or layer.name in augmentation
                    or (isinstance(layer, keras.Model) and custom_objects_in(layer, compiled=False)))
        return layer if replaced else layer.__class__.from_config(layer.get_config())  # Keras' default

    view = keras.Model(model.input, model.output, name=model.name)
    portable = keras.models.clone_model(view, clone_function=clone, call_function=call)
    portable.set_weights(model.get_weights())
    return portable


def load_model_file(path, **kwargs):
    """`keras.models.load_model` with one clear error for a file that is not a Keras model.

    Keras answers a truncated or non-zip `.keras` file with "File not found", although the file
    exists; this names the file and says what is wrong with it.

    Args:
        path: A `.keras` file.
        **kwargs: Passed to `keras.models.load_model` (`compile=False`, ...).

    Returns:
        The loaded model.

    Raises:
        ValueError: No such file, or a file that is not a readable `.keras` archive (truncated,
            empty, or something else under that name).

    Example:
        >>> model = load_model_file("runs/digits/model.keras")
    """
    import os
    import zipfile
    from pathlib import Path

    path = Path(os.fspath(path))
    if not path.is_file():
        raise ValueError(f"Model file not found; Received: {str(path)!r}")
    size = path.stat().st_size
    problem = None
    if not zipfile.is_zipfile(path):
        problem = "not a zip archive"
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                if "config.json" not in archive.namelist():
                    problem = "a zip archive without config.json"
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            problem = str(exc) or type(exc).__name__
    if problem is None:
        try:
            return keras.models.load_model(path, **kwargs)
        except (zipfile.BadZipFile, EOFError) as exc:
            problem = str(exc) or type(exc).__name__
    raise ValueError(
        f"{str(path)!r} is not a valid Keras model file ({problem}; {size} bytes): it may be "
        "truncated by an interrupted save or copy. Copy it again, or re-run the training that "
        "wrote it."
    )
