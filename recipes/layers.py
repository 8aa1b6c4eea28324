"""Serializable layers that turn raw 0-255 pixels into what a backbone expects."""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["ToRGB", "Resize", "BackbonePreprocessing", "InferenceModeBackbone"]

# The constants keras.applications.imagenet_utils uses, so outputs match preprocess_input exactly.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="recipes")
class ToRGB(keras.layers.Layer):
    """Casts images to the compute dtype and repeats a single grayscale channel to three.

    Three-channel input passes through unchanged, so one model serves gray and colour data.

    Example:
        >>> ToRGB()(np.zeros((2, 8, 8, 1), "uint8")).shape
        (2, 8, 8, 3)
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels not in (1, 3):
            raise ValueError(
                f"Images must have 1 (grayscale) or 3 (RGB) channels; Received: {channels} "
                f"channels (input shape {tuple(input_shape)})"
            )
        self._channels = channels

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self._channels == 1:
            x = ops.repeat(x, 3, axis=-1)
        return x

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

        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"Unknown preprocessing mode; Received: mode={mode!r}. "
                f"Allowed: {', '.join(PREPROCESSING_MODES)}"
            )
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1)
            return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="recipes")
class InferenceModeBackbone(keras.layers.Layer):
    """Runs a backbone with `training=False` always, so BatchNorm keeps its moving statistics.

    Keras 3 functional models pass the outer `training` flag to every layer they call, overriding
    a `training=False` written at graph-construction time, and `backbone.trainable = True` makes
    BatchNorm layers trainable again. Wrapping the backbone makes inference-mode BatchNorm survive
    both: its weights can still be unfrozen and trained (fine-tuning), its statistics never move.

    Args:
        backbone: The (built) backbone model.

    Example:
        >>> x = InferenceModeBackbone(keras.applications.MobileNet(weights=None, include_top=False))(x)
    """

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, inputs, training=None):
        return self.backbone(inputs, training=False)

    def compute_output_shape(self, input_shape):
        return self.backbone.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "backbone": keras.saving.serialize_keras_object(self.backbone)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        return cls(backbone, **config)


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
