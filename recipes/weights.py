"""Backbone weights: ImageNet through Keras' own download cache, local files, and our own saves."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from .registry import BackboneSpec, backbone_info, validate_alpha

__all__ = [
    "WeightsUnavailableError",
    "keras_cache_dir",
    "imagenet_weights_file",
    "check_weights_arg",
    "build_backbone",
    "find_backbone",
    "save_backbone",
]

_WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".hdf5")


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be downloaded and are not in the Keras cache."""


def keras_cache_dir() -> Path:
    """The folder `keras.utils.get_file` caches application weights in (`$KERAS_HOME/models`).

    Keras reads `KERAS_HOME` once, at import (default `~/.keras`), and falls back to
    `/tmp/.keras` when that folder is not writable; this follows the same rules.
    """
    from .compat import keras_home

    base = os.path.expanduser(keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "models"


class _FileRequest(Exception):
    def __init__(self, fname, origin):
        super().__init__(fname)
        self.fname, self.origin = fname, origin


@contextlib.contextmanager
def _intercept_get_file():
    # keras.applications call file_utils.get_file(fname, origin, ...); intercepting it gives the
    # exact file name Keras would download, without touching the network.
    from .compat import intercept_get_file

    def fake(fname=None, origin=None, *args, **kwargs):
        raise _FileRequest(fname or os.path.basename(origin), origin)

    with intercept_get_file(fake):
        yield


def imagenet_weights_file(backbone, *, alpha=None, image_size=None) -> tuple[str, str]:
    """The file name and URL Keras downloads for a backbone's ImageNet weights (no top).

    Args:
        backbone: Registry name.
        alpha: Width multiplier (default: the family's default).
        image_size: Input size (default: the backbone's default size); MobileNet v1/v2 pick the
            weight file by size.

    Returns:
        `(file_name, url)`.

    Example:
        >>> imagenet_weights_file("resnet50")[0]
        'resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5'
    """
    spec = backbone_info(backbone)
    size = image_size or spec.default_size
    try:
        with _intercept_get_file():
            _call_builder(spec, (size, size, 3), "imagenet", alpha)
    except _FileRequest as request:
        return request.fname, request.origin
    raise RuntimeError(f"keras.applications.{spec.builder} did not request a weights file")


def check_weights_arg(weights) -> None:
    """Validates `weights` before anything is built.

    Raises:
        ValueError: Not None, "imagenet" or an existing weights file.
    """
    if weights is None or weights == "imagenet":
        return
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "weights must be None, 'imagenet' or a path to a weights file; "
            f"Received: weights={weights!r}"
        )
    path = Path(weights)
    if not path.is_file():
        raise ValueError(
            f"Weights file not found; Received: weights={str(weights)!r}. "
            "Pass None (random init), 'imagenet', or an existing .weights.h5/.h5 file."
        )
    if not str(path).endswith(_WEIGHT_SUFFIXES):
        raise ValueError(
            f"Weights file must end in {', '.join(_WEIGHT_SUFFIXES)}; Received: weights={str(weights)!r}"
        )


def _call_builder(spec: BackboneSpec, input_shape, weights, alpha, pooling=None, name=None):
    kwargs = dict(spec.builder_kwargs)
    if spec.alphas:
        kwargs["alpha"] = validate_alpha(spec, alpha)
    model = spec.get_builder()(
        include_top=False, weights=weights, input_shape=tuple(input_shape), pooling=pooling, **kwargs
    )
    # Renamed afterwards: EfficientNetV2 looks its block table up by the `name` argument.
    model.name = name or spec.name
    return model


def _metadata_path(path) -> Path:
    return Path(str(path) + ".json")


def build_backbone(spec, input_shape, *, weights=None, alpha=None, pooling=None):
    """Builds a headless keras.applications backbone and loads its weights.

    Args:
        spec: Registry name or `BackboneSpec`.
        input_shape: `(size, size, 3)`.
        weights: None, "imagenet" (Keras' download cache) or a path to a weights file.
        alpha: Width multiplier for MobileNets.
        pooling: None, "avg" or "max" (passed to keras.applications).

    Returns:
        A functional `keras.Model` named after the registry entry.

    Raises:
        WeightsUnavailableError: "imagenet" requested but neither downloadable nor cached.
        ValueError: A weights file that does not fit this backbone.
    """
    spec = backbone_info(spec)
    check_weights_arg(weights)
    if weights == "imagenet":
        try:
            return _call_builder(spec, input_shape, "imagenet", alpha, pooling)
        except Exception as exc:  # Keras raises a bare Exception("URL fetch failure ...")
            if "fetch failure" not in str(exc).lower() and not isinstance(exc, OSError):
                raise
            fname, url = imagenet_weights_file(spec.name, alpha=alpha, image_size=input_shape[0])
            cache = keras_cache_dir()
            raise WeightsUnavailableError(
                f"Could not download the ImageNet weights for {spec.name} ({exc}).\n"
                f"  Needed file: {fname}\n  From: {url}\n  Keras cache folder: {cache}\n"
                f"Two ways out: (1) copy {fname} into {cache} (run `recipes weights` to see what is "
                "there), or (2) pass a local file: weights='/path/to/file.h5'."
            ) from None
    if weights is None:
        return _call_builder(spec, input_shape, None, alpha, pooling)
    meta_file = _metadata_path(weights)
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        want = {"backbone": spec.name, "alpha": validate_alpha(spec, alpha)}
        got = {"backbone": meta.get("backbone"), "alpha": meta.get("alpha")}
        if got != want:
            raise ValueError(
                f"Weights file {str(weights)!r} was saved from backbone={got['backbone']!r} "
                f"alpha={got['alpha']!r}; it does not fit backbone={want['backbone']!r} "
                f"alpha={want['alpha']!r}."
            )
    model = _call_builder(spec, input_shape, None, alpha, pooling)
    try:
        with warnings.catch_warnings():
            # Keras 3.15 warns about weightless nested containers; the test suite checks that
            # every weight does load.
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(str(weights))
    except Exception as exc:
        raise ValueError(
            f"Weights file {str(weights)!r} does not fit backbone {spec.name!r} "
            f"(alpha={validate_alpha(spec, alpha)!r}): {str(exc).splitlines()[0][:300]}"
        ) from None
    return model


def find_backbone(model):
    """Returns the backbone sub-model of a classifier built by `build_classifier`.

    Every such classifier holds its backbone in a `recipes.layers.Backbone` layer named
    `"backbone"` (by construction, not by guessing); its portable form (`recipes.portable_model`,
    what a run folder's `model.keras` holds) holds the keras.applications model itself, a nested
    model named after its registry entry. A bare registry backbone is returned as is.

    Returns:
        The backbone `keras.Model`; its `.name` is the registry name.

    Raises:
        ValueError: The model holds no such layer (or several registry-named sub-models).

    Example:
        >>> recipes.find_backbone(recipes.build_classifier("mobilenet", 3)).name
        'mobilenet'
    """
    import keras

    from .builder import BACKBONE_LAYER
    from .layers import Backbone
    from .registry import list_backbones

    names = set(list_backbones())
    if model.name in names and hasattr(model, "layers"):
        return model
    try:
        layer = model.get_layer(BACKBONE_LAYER)
    except (ValueError, AttributeError):
        layer = None
    if isinstance(layer, Backbone):
        return layer.backbone
    nested = [sub for sub in getattr(model, "layers", ())
              if isinstance(sub, keras.Model) and sub.name in names]
    if len(nested) == 1:
        return nested[0]
    found = f" (found {len(nested)}: {', '.join(s.name for s in nested)})" if nested else ""
    raise ValueError(
        f"Model {getattr(model, 'name', model)!r} holds no backbone{found}: expected a "
        f"recipes.layers.Backbone layer named {BACKBONE_LAYER!r}, as recipes.build_classifier makes, "
        "or one nested keras.applications model named after its registry entry, as in a "
        "portable model."
    )


def save_backbone(model, path) -> Path:
    """Writes the backbone weights of a trained classifier so `weights=path` can load them.

    A JSON sidecar (`path + ".json"`) records the backbone and alpha, so loading the file into
    another backbone fails with an error naming both.

    Args:
        model: A classifier from `build_classifier`/`train`, or a bare backbone model.
        path: Destination; must end in `.weights.h5`.

    Returns:
        The path written.

    Raises:
        ValueError: Bad suffix, or the model holds no registered backbone.

    Example:
        >>> recipes.save_backbone(result.model, "digits_mobilenet.weights.h5")
        >>> recipes.build_classifier("mobilenet", 5, weights="digits_mobilenet.weights.h5")
    """
    path = Path(path)
    if not str(path).endswith(".weights.h5"):
        raise ValueError(f"Backbone weights path must end in .weights.h5; Received: path={str(path)!r}")
    backbone = find_backbone(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(str(path))
    spec = backbone_info(backbone.name)
    _metadata_path(path).write_text(
        json.dumps({"backbone": spec.name, "alpha": _alpha_of(backbone, spec)}, indent=2)
    )
    return path


def _alpha_of(backbone, spec):
    if not spec.alphas:
        return None
    # A saved model does not record alpha; the width multiplier fixes the parameter count.
    n = backbone.count_params()
    return next((a for a in spec.alphas if spec.count_params(a) == n), spec.default_alpha)
