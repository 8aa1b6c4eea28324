"""Image augmentation from a preset or a list of named Keras layers, for raw 0-255 pixels.

`augmentation("medium")` returns an `AugmentationPipeline` (a `keras.layers.Pipeline`) of Keras'
own preprocessing layers. It is random only when called with `training=True` (`model.fit`) and the
identity otherwise (`model.predict`, a bare `model(x)`). Put it inside the model
(`build_classifier(..., augmentation="medium")`, the default placement) or in the tf.data pipeline
(`apply_augmentation(dataset, layer)`, faster on CPU because it runs in parallel with training).
"""

from __future__ import annotations

import numbers

import keras
from keras import ops

from .augment_spec import OPS, PRESETS, parse_augmentation

__all__ = [
    "PRESETS",
    "OPS",
    "AugmentationPipeline",
    "PixelNoise",
    "augmentation",
    "apply_augmentation",
    "parse_augmentation",
]

@keras.saving.register_keras_serializable(package="recipes")
class PixelNoise(keras.layers.GaussianNoise):
    """Gaussian noise whose standard deviation is a fraction of the pixel value range.

    Keras' `GaussianNoise` only accepts `stddev <= 1`, which cannot express noise on 0-255 pixels;
    this subclass keeps its validation, seeding and serialization and scales the noise by
    `value_range[1] - value_range[0]`. Active in training only.

    Args:
        stddev: Noise standard deviation as a fraction of the value range, in [0, 1].
        value_range: `(low, high)` of the incoming pixels (default `(0, 255)`).
        seed: Optional int seed.

    Returns:
        A layer returning `inputs + N(0, (stddev * (high - low))^2)` in training, else `inputs`.

    Raises:
        ValueError: `stddev` outside [0, 1] or a malformed `value_range`.

    Example:
        >>> PixelNoise(0.05)(np.zeros((1, 4, 4, 3)), training=True)  # stddev 12.75
    """

    def __init__(self, stddev, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(stddev, seed=seed, **kwargs)
        self.value_range = _check_value_range(value_range)

    def call(self, inputs, training=False):
        x = ops.cast(inputs, self.compute_dtype)
        if training and self.stddev > 0:
            low, high = self.value_range
            return x + keras.random.normal(
                ops.shape(x), stddev=self.stddev * (high - low), dtype=self.compute_dtype,
                seed=self.seed_generator,
            )
        return x

    def get_config(self):
        return {**super().get_config(), "value_range": list(self.value_range)}


@keras.saving.register_keras_serializable(package="recipes")
class AugmentationPipeline(keras.layers.Pipeline):
    """A `keras.layers.Pipeline` that only augments when called with `training=True`.

    Keras' preprocessing layers (and `Pipeline`) default to `training=True`, and Keras 3 hands
    a layer's resolved `training` value on to every layer called after it in the same model call.
    A plain Pipeline inside a model therefore makes a bare `model(x)` run augmentation *and* the
    backbone's Dropout/BatchNorm in training mode. Here an unspecified `training` means inference,
    as for `Dropout`; `model.fit` and `apply_augmentation` pass `training=True` explicitly.

    Args:
        layers: The Keras layers to apply in order.
        name: Layer name (default None: generated).

    Returns:
        A layer mapping images to images of the same shape (float, compute dtype).

    Example:
        >>> aug = AugmentationPipeline([keras.layers.RandomFlip("horizontal")])
        >>> np.array_equal(aug(x), x)  # training=True would flip about half the images
        True
    """

    def call(self, inputs, training=None, mask=None):
        # Pass False explicitly: sublayers would otherwise fall back to their own True default.
        return super().call(inputs, training=False if training is None else training, mask=mask)


def _check_value_range(value_range):
    ok = (
        isinstance(value_range, (tuple, list))
        and len(value_range) == 2
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value_range)
        and value_range[0] < value_range[1]
    )
    if not ok:
        raise ValueError(
            "value_range must be (low, high) with low < high, e.g. (0, 255); "
            f"Received: value_range={value_range!r}"
        )
    return (float(value_range[0]), float(value_range[1]))


def _make_layer(name, strength, value_range, seed):
    layers = keras.layers
    if name == "flip":
        return layers.RandomFlip(strength, seed=seed)
    if name == "rotation":
        return layers.RandomRotation(strength, seed=seed)
    if name == "zoom":
        return layers.RandomZoom(strength, seed=seed)
    if name == "translation":
        return layers.RandomTranslation(strength, strength, seed=seed)
    if name == "brightness":
        return layers.RandomBrightness(strength, value_range=value_range, seed=seed)
    if name == "contrast":
        return layers.RandomContrast(strength, value_range=value_range, seed=seed)
    if name == "noise":
        return PixelNoise(strength, value_range=value_range, seed=seed)
    if name == "erasing":
        return layers.RandomErasing(strength, value_range=value_range, seed=seed)
    if name == "randaugment":
        return layers.RandAugment(value_range=value_range, num_ops=2, factor=strength, seed=seed)
    if name == "augmix":
        return layers.AugMix(value_range=value_range, factor=strength, seed=seed)
    raise AssertionError(name)  # parse_augmentation only lets OPS names through


def augmentation(
    preset_or_list, *, flip=True, seed=None, value_range=(0, 255), name="augmentation"
):
    """Builds an augmentation layer from a preset or a list of named Keras layers.

    Presets (applied in this order; strengths as in the list syntax below):

    | preset        | layers                                                              |
    |---------------|---------------------------------------------------------------------|
    | `light`       | flip, translation 0.1, zoom 0.1                                     |
    | `medium`      | flip, rotation 0.05, translation 0.1, zoom 0.15, brightness 0.2,    |
    |               | contrast 0.2                                                        |
    | `heavy`       | flip, rotation 0.1, translation 0.15, zoom 0.25, brightness 0.3,    |
    |               | contrast 0.3, noise 0.03, erasing 0.5                               |
    | `randaugment` | flip, RandAugment (2 ops, factor 0.5)                               |

    List items are `"name"` or `"name:strength"`:

    | name          | default | Keras layer: what the strength means                             |
    |---------------|---------|------------------------------------------------------------------|
    | `flip`        | -       | RandomFlip("horizontal"); also `flip:vertical`,                  |
    |               |         | `flip:horizontal_and_vertical`                                   |
    | `rotation`    | 0.1     | RandomRotation: +-strength of a full turn (0.1 = +-36 degrees)   |
    | `zoom`        | 0.1     | RandomZoom: zoom in or out by up to strength                     |
    | `translation` | 0.1     | RandomTranslation: shift by up to strength of height and width   |
    | `brightness`  | 0.2     | RandomBrightness: add up to +-strength x (high - low)            |
    | `contrast`    | 0.2     | RandomContrast: contrast factor in [1 - strength, 1 + strength]  |
    | `noise`       | 0.02    | PixelNoise: Gaussian, stddev = strength x (high - low) of        |
    |               |         | `value_range`: 0.05 on 0-255 pixels is 12.75 (not clipped)       |
    | `erasing`     | 0.25    | RandomErasing: erase a patch; per-image probability drawn from   |
    |               |         | [0, strength]                                                    |
    | `randaugment` | 0.5     | RandAugment(num_ops=2): magnitude factor                         |
    | `augmix`      | 0.3     | AugMix: magnitude factor of its operations                       |

    Presets `light`, `medium`, `heavy` may also appear as list items (they expand in place); in a
    list, `randaugment` is the single layer, without the preset's flip.

    Args:
        preset_or_list: A preset name, `"none"`/None, a comma-separated string
            (`"rotation:0.1,zoom:0.2"`, what the CLI passes) or a list of items (Keras layers are
            allowed as items and kept as they are).
        flip: False removes every flip, listed ones included (default True); use it for digits,
            text and anything where mirror images mean something else.
        seed: Int seed for reproducible augmentation (default None: random). The i-th layer gets
            `seed + i` so the layers are not correlated. Exception: Keras' AugMix picks its
            operations with Python's `random` module, so `augmix` is not reproducible by `seed`
            (and inside a traced graph its picks are fixed at trace time; magnitudes still vary).
        value_range: `(low, high)` of the pixels the layer receives (default `(0, 255)`: raw
            pixels, which is what `build_classifier` and `apply_augmentation` feed it).
        name: Name of the returned layer (default `"augmentation"`).

    Returns:
        An `AugmentationPipeline` (a registered `keras.layers.Pipeline` subclass) that augments
        only when called with `training=True` (as `model.fit` and `apply_augmentation` do) and is
        the identity otherwise, including a bare `layer(x)`/`model(x)` call; or None for
        `"none"`/None/an empty list or when nothing is left after `flip=False`.

    Raises:
        ValueError: Unknown name or preset (the message lists the closest matches), a strength
            that is not a number or out of range, bad `value_range`, `seed` or `flip`.

    Example:
        >>> aug = augmentation("rotation:0.1,zoom:0.2", seed=0)
        >>> aug(np.zeros((2, 32, 32, 3)), training=False).shape
        TensorShape([2, 32, 32, 3])
    """
    if isinstance(preset_or_list, keras.layers.Layer):
        return preset_or_list
    value_range = _check_value_range(value_range)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ValueError(f"seed must be an int or None; Received: seed={seed!r}")
    items = parse_augmentation(preset_or_list, flip=flip)
    layers = []
    for i, (op, strength) in enumerate(items):
        if isinstance(op, keras.layers.Layer):
            layers.append(op)
        else:
            layer_seed = None if seed is None else seed + i
            layers.append(_make_layer(op, strength, value_range, layer_seed))
    if not layers:
        return None
    return AugmentationPipeline(layers, name=name)


def apply_augmentation(dataset, layer, *, num_parallel_calls=None):
    """Maps an augmentation layer over a batched tf.data dataset (placement "data").

    Runs on the CPU in parallel with training, which is usually faster than augmenting inside
    the model on CPU-only machines. Use it *instead of* `build_classifier(augmentation=...)`,
    not with it. Apply it to the training set only, after batching and before `mix_batches`.

    Args:
        dataset: A batched `tf.data.Dataset` of `(images, labels)` or
            `(images, labels, sample_weights)`; images `(batch, height, width, channels)` in the
            layer's value range (0-255 by default), any numeric dtype.
        layer: A Keras layer, or anything `augmentation()` accepts (a preset name, a list, ...);
            None or "none" returns `dataset` unchanged.
        num_parallel_calls: Passed to `Dataset.map` (default `tf.data.AUTOTUNE`).

    Returns:
        The mapped dataset: images as float32 (same shape), the rest untouched. Random in every
        epoch (the layer is called with `training=True`).

    Raises:
        ValueError: `dataset` is not a `tf.data.Dataset` of batched `(images, labels, ...)` tuples.

    Example:
        >>> train = apply_augmentation(train.batch(32), "medium")
    """
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(
            f"dataset must be a tf.data.Dataset; Received: dataset of type {type(dataset).__name__}"
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            "dataset must yield (images, labels) or (images, labels, sample_weights) tuples; "
            f"Received: element_spec={spec!r}"
        )
    if spec[0].shape.rank != 4:
        raise ValueError(
            "dataset must be batched images of shape (batch, height, width, channels) (call "
            f".batch() first); Received: images with shape {spec[0].shape}"
        )
    if not isinstance(layer, keras.layers.Layer):
        layer = augmentation(layer)
    if layer is None:
        return dataset

    def augment(images, *rest):
        # Some Keras layers (GaussianNoise arithmetic) cannot take uint8 input.
        images = tf.cast(images, tf.float32)
        return (layer(images, training=True), *rest)

    if num_parallel_calls is None:
        num_parallel_calls = tf.data.AUTOTUNE
    return dataset.map(augment, num_parallel_calls=num_parallel_calls)
