"""Serializable layers that turn raw 0-255 pixels into what a backbone expects."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["ToRGB", "Resize", "BackbonePreprocessing", "Backbone", "InferenceModeBackbone",
           "to_rgb", "preprocess"]

# The constants keras.applications.imagenet_utils uses, so outputs match preprocess_input exactly.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_NUMPY_FLOATS = ("float16", "float32", "float64")


def _constant(values, dtype):
    # A numpy constant: the same value whether `x` is a backend tensor (inside a layer) or a
    # KerasTensor (a functional graph of Keras ops, which Keras saves and reloads by itself).
    return np.asarray(values, dtype)


def to_rgb(x, channels, dtype="float32"):
    """Casts images to `dtype` and makes them 3-channel, with Keras ops only.

    The arithmetic of `ToRGB`, usable on a KerasTensor to build a model that needs no custom
    layer (`recipes.portable_model`).

    Args:
        x: `(..., channels)` images.
        channels: 1 (repeated to three), 3 (unchanged) or None (known only when called: 1 or 3
            channels both work, by broadcasting against a zero RGB vector; other counts fail).
        dtype: Compute dtype (default float32).

    Returns:
        `(..., 3)` images of `dtype`.

    Example:
        >>> to_rgb(np.zeros((2, 8, 8, 1)), 1).shape
        (2, 8, 8, 3)
    """
    x = ops.cast(x, dtype)
    if channels == 1:
        return ops.repeat(x, 3, axis=-1)
    if channels is None:
        if dtype in _NUMPY_FLOATS:
            return x + _constant((0.0, 0.0, 0.0), dtype)
        return ops.cast(ops.cast(x, "float32") + _constant((0.0, 0.0, 0.0), "float32"), dtype)
    return x


def preprocess(x, mode, dtype="float32"):
    """A backbone's ImageNet preprocessing (`BackbonePreprocessing`) with Keras ops only.

    Args:
        x: RGB pixels in [0, 255].
        mode: One of `"caffe"`, `"tf"`, `"torch"`, `"embedded"` (see `BackbonePreprocessing`).
        dtype: Compute dtype (default float32). Dtypes numpy lacks (bfloat16) compute in
            float32 and cast back.

    Returns:
        The preprocessed tensor of `dtype`.

    Example:
        >>> preprocess(np.full((1, 2, 2, 3), 255.0), "tf")  # all ones
    """
    x = ops.cast(x, dtype)
    if mode == "embedded":
        return x
    work = dtype if dtype in _NUMPY_FLOATS else "float32"
    y = ops.cast(x, work)
    if mode == "caffe":
        y = ops.flip(y, axis=-1) - _constant(_CAFFE_MEAN_BGR, work)
    elif mode == "tf":
        y = y / 127.5 - 1.0
    elif mode == "torch":
        y = (y / 255.0 - _constant(_TORCH_MEAN, work)) / _constant(_TORCH_STD, work)
    else:
        from .registry import PREPROCESSING_MODES
        from .validation import check_choice

        check_choice("mode", mode, PREPROCESSING_MODES, kind="preprocessing mode")
    return y if work == dtype else ops.cast(y, dtype)


@keras.saving.register_keras_serializable(package="recipes")
class ToRGB(keras.layers.Layer):
    """Casts images to the compute dtype and repeats a single grayscale channel to three.

    Three-channel input passes through unchanged. Built on an input whose channel count is
    unknown (`(None, None, None)`, `build_classifier`'s default), it takes 1 or 3 channels at
    call time, so one model serves gray and colour data.

    Example:
        >>> ToRGB()(np.zeros((2, 8, 8, 1), "uint8")).shape
        (2, 8, 8, 3)
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels not in (1, 3, None):
            raise ValueError(
                f"Images must have 1 (grayscale) or 3 (RGB) channels; Received: {channels} "
                f"channels (input shape {tuple(input_shape)})"
            )
        self._channels = channels

    def call(self, inputs):
        return to_rgb(inputs, self._channels, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package="recipes")
class BackbonePreprocessing(keras.layers.Layer):
    """Applies a backbone's ImageNet preprocessing to RGB float pixels in [0, 255].

    The same arithmetic as `keras.applications.<family>.preprocess_input`, inside the graph:

    - `"caffe"`: RGB -> BGR, subtract the ImageNet BGR mean (103.939, 116.779, 123.68).
    - `"tf"`: `x / 127.5 - 1`.
    - `"torch"`: `x / 255`, subtract mean (0.485, 0.456, 0.406), divide by std (0.229, 0.224, 0.225).
    - `"embedded"`: identity; the backbone rescales itself (EfficientNet, EfficientNetV2,
      MobileNetV3). Normalizing here too would double-normalize.

    Args:
        mode: One of `"caffe"`, `"tf"`, `"torch"`, `"embedded"`.

    Raises:
        ValueError: Unknown mode.

    Example:
        >>> BackbonePreprocessing("tf")(np.full((1, 2, 2, 3), 255.0))  # all ones
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        from .registry import PREPROCESSING_MODES
        from .validation import check_choice

        self.mode = check_choice("mode", mode, PREPROCESSING_MODES, kind="preprocessing mode")

    def call(self, inputs):
        return preprocess(inputs, self.mode, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="recipes")
class Backbone(keras.layers.Layer):
    """The backbone of a classifier: one named, findable sub-model (keras-hub's `task.backbone`).

    `build_classifier` always puts the keras.applications model inside this layer, named
    `"backbone"`; `recipes.find_backbone(model)` returns `model.get_layer("backbone").backbone`,
    whose `.name` is the registry name. With `bn_inference=True` the backbone always runs with
    `training=False`, so BatchNorm keeps its moving statistics: Keras 3 functional models pass the
    outer `training` flag to every layer, overriding a `training=False` written at construction,
    and `backbone.trainable = True` makes BatchNorm trainable again; the wrapper survives both, so
    weights can be unfrozen and fine-tuned while the statistics never move.

    Args:
        backbone: The (built) backbone model.
        bn_inference: Run the backbone in inference mode always (default False: follow the
            outer `training` flag, as a from-scratch backbone must).

    Example:
        >>> x = Backbone(keras.applications.MobileNet(weights=None, include_top=False),
        ...              bn_inference=True, name="backbone")(x)
    """

    def __init__(self, backbone, bn_inference=False, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.bn_inference = bool(bn_inference)

    def call(self, inputs, training=None):
        return self.backbone(inputs, training=False if self.bn_inference else training)

    def compute_output_shape(self, input_shape):
        return self.backbone.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "bn_inference": self.bn_inference,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone, **config)


@keras.saving.register_keras_serializable(package="recipes")
class InferenceModeBackbone(Backbone):
    """`Backbone` with `bn_inference=True` fixed: BatchNorm always in inference mode.

    Args:
        backbone: The (built) backbone model.

    Example:
        >>> x = InferenceModeBackbone(keras.applications.MobileNet(weights=None, include_top=False))(x)
    """

    def __init__(self, backbone, **kwargs):
        kwargs.pop("bn_inference", None)
        super().__init__(backbone, bn_inference=True, **kwargs)


@keras.saving.register_keras_serializable(package="recipes")
class Resize(keras.layers.Resizing):
    """`keras.layers.Resizing` without a `training` argument.

    Keras' preprocessing layers default to `training=True`, and a functional model hands the first
    layer's resolved flag to every later one: a bare `model(x)` on small inputs would then run
    augmentation, Dropout and BatchNorm in training mode. Without the argument the flag stays
    unset and later layers default to inference, as with `predict`.
    """

    def call(self, inputs):
        return super().call(inputs)
