"""`build_classifier`: one call from a backbone name to a model that takes raw 0-255 pixels."""

from __future__ import annotations

import numbers

from .config import POOLINGS
from .registry import backbone_info, validate_alpha
from .weights import build_backbone, check_weights_arg

__all__ = ["build_classifier", "POOLINGS", "BACKBONE_LAYER"]

#: Name of the layer that holds the backbone in every classifier `build_classifier` makes.
BACKBONE_LAYER = "backbone"


def _check_int(name, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int; Received: {name}={value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; Received: {name}={value!r}")
    return int(value)


def _check_rate(name, value, upper=1.0):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < upper:
        raise ValueError(f"{name} must be a number in [0, {upper}); Received: {name}={value!r}")
    return float(value)


def _check_nonneg(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"{name} must be a number >= 0; Received: {name}={value!r}")
    return float(value)


def _resolve_shapes(spec, image_size, input_shape, weights):
    if image_size is None:
        image_size = spec.default_size
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (height, width); Received: image_size={image_size!r}")
        size = tuple(_check_int("image_size", s) for s in image_size)
    else:
        size = (_check_int("image_size", image_size),) * 2
    from .validation import check_image_size

    check_image_size(spec, size if isinstance(image_size, (tuple, list)) else size[0])
    if min(size) < spec.min_size:
        why = " with pretrained weights" if weights is not None else ""
        raise ValueError(
            f"Input size must be at least {spec.min_size}x{spec.min_size} for {spec.name}{why}; "
            f"Received: image_size={image_size!r}. (Smaller images are fine as *input*: the model "
            "resizes them up to image_size.)"
        )
    if input_shape is None:
        input_shape = (None, None, None)  # any size, 1 or 3 channels (ToRGB decides per call)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels); Received: input_shape={input_shape!r}"
        )
    h, w, c = input_shape
    for dim_name, dim in (("height", h), ("width", w)):
        if dim is not None:
            _check_int(f"input_shape {dim_name}", dim, 1)
    if c not in (1, 3, None):
        raise ValueError(f"input_shape must have 1 or 3 channels (or None: either); "
                         f"Received: input_shape={tuple(input_shape)!r}")
    return size, tuple(input_shape)


def build_classifier(
    backbone,
    num_classes,
    *,
    image_size=None,
    input_shape=None,
    weights=None,
    pooling="avg",
    dropout=0.2,
    dense_units=(),
    l1=0.0,
    l2=0.0,
    augmentation=None,
    trainable_backbone=True,
    alpha=None,
    name=None,
    bn_momentum=None,
    bn_inference=None,
    head_batchnorm=False,
    regularize_backbone=False,
    drop_connect_rate=None,
):
    """Builds an image classifier on a keras.applications backbone that takes raw pixels.

    Inside the graph: cast to float, grayscale to RGB, resize to `image_size`, augmentation
    (training only, on 0-255 pixels), the backbone's own preprocessing, the backbone, pooling,
    [BatchNorm], dropout, optional dense layers, and a float32 softmax (safe under mixed precision).

    Args:
        backbone: Registry name, e.g. `"resnet50"` (see `recipes.list_backbones()`).
        num_classes: Number of classes, at least 2.
        image_size: Side the backbone sees (default: the backbone's default size). Any value from
            the backbone's minimum up to `recipes.validation.max_image_size` (1024, or twice the
            ImageNet size when that is larger); the model resizes its input to it.
        input_shape: Shape of the raw images, `(height, width, channels)` with 1 or 3 channels;
            any of them may be None (default `(None, None, None)`: any size, grayscale or RGB).
        weights: None (random init, default), `"imagenet"` (Keras' download cache), or a path to
            a weights file for this backbone (e.g. one written by `recipes.save_backbone`).
        pooling: `"avg"` (default), `"max"` or `"flatten"`.
        dropout: Dropout rate before the classifier (default 0.2).
        dense_units: Hidden dense layer sizes in the head (default none).
        l1: L1 penalty on head kernels (default 0).
        l2: L2 penalty on head kernels (default 0).
        augmentation: None, a Keras layer, a preset name (`"light"`, `"medium"`, ...) or a list of
            augmentation names (see `recipes.augmentation`); active in training only.
        trainable_backbone: False freezes the backbone (default True).
        alpha: Width multiplier for MobileNet families (default 1.0).
        name: Model name (default `"<backbone>_classifier"`).
        bn_momentum: Momentum for every backbone BatchNormalization layer. Default: 0.9 when
            training from scratch (`weights=None`) so moving statistics keep up on short runs,
            untouched for pretrained weights.
        bn_inference: Run the backbone in inference mode (`Backbone(bn_inference=True)`): BatchNorm
            keeps its moving statistics even when layers are unfrozen for fine-tuning (default:
            True with pretrained weights, False from scratch).
        head_batchnorm: BatchNormalization after pooling (default False).
        regularize_backbone: Also apply `l1`/`l2` to the backbone's conv kernels (default False).
        drop_connect_rate: EfficientNet/EfficientNetV2 stochastic-depth rate of the deepest block,
            shallower blocks scaled linearly (default: Keras' own schedule, whose base rate 0.2
            leaves the last block slightly below 0.2).

    Returns:
        An uncompiled `keras.Model` mapping raw images to class probabilities.

    Raises:
        ValueError: Unknown backbone/pooling, `num_classes < 2`, non-int or too small sizes,
            rates out of range, a weights file that is missing or does not fit, unsupported alpha.
        WeightsUnavailableError: ImageNet weights requested offline and not cached.

    Example:
        >>> model = recipes.build_classifier("mobilenet_v2", 10, image_size=96, alpha=0.35)
        >>> model.predict(np.zeros((1, 28, 28, 1), "uint8")).shape
        (1, 10)
    """
    import keras

    spec = backbone_info(backbone)
    num_classes = _check_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; Received: num_classes={num_classes}")
    check_weights_arg(weights)
    size, input_shape = _resolve_shapes(spec, image_size, input_shape, weights)
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling; Received: pooling={pooling!r}. Allowed: {', '.join(POOLINGS)}")
    dropout = _check_rate("dropout", dropout)
    l1, l2 = _check_nonneg("l1", l1), _check_nonneg("l2", l2)
    if isinstance(dense_units, numbers.Integral):
        dense_units = (dense_units,)
    dense_units = tuple(_check_int("dense_units", u, 1) for u in dense_units)
    alpha = validate_alpha(spec, alpha)
    if bn_momentum is not None:
        bn_momentum = _check_rate("bn_momentum", bn_momentum)
    if drop_connect_rate is not None:
        drop_connect_rate = _check_rate("drop_connect_rate", drop_connect_rate)
        if spec.family not in ("efficientnet", "efficientnet_v2"):
            raise ValueError(
                f"drop_connect_rate applies to EfficientNet backbones only; Received: backbone={spec.name!r}"
            )
    if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
        from .augment import augmentation as make_augmentation

        augmentation = make_augmentation(augmentation)
    from .layers import Backbone, BackbonePreprocessing, Resize, ToRGB

    net = build_backbone(
        spec, (*size, 3), weights=weights, alpha=alpha,
        pooling=pooling if pooling != "flatten" else None,
    )
    pretrained = weights is not None
    if bn_momentum is None and not pretrained:
        bn_momentum = 0.9
    regularizer = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    for layer in net.layers:
        if bn_momentum is not None and isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
        if regularize_backbone and regularizer is not None:
            _regularize(layer, regularizer)
    if drop_connect_rate is not None:
        _set_drop_connect(net, drop_connect_rate)
    net.trainable = bool(trainable_backbone)

    inputs = keras.Input(shape=input_shape, dtype="float32", name="image")
    x = ToRGB(name="to_rgb")(inputs)
    if tuple(input_shape[:2]) != size:
        x = Resize(*size, name="resize")(x)
    if augmentation is not None:
        x = augmentation(x)
    x = BackbonePreprocessing(spec.preprocessing, name="preprocess")(x)
    if bn_inference is None:
        bn_inference = pretrained
    x = Backbone(net, bn_inference=bn_inference, name=BACKBONE_LAYER)(x)
    if pooling == "flatten":
        x = keras.layers.Flatten(name="flatten")(x)
    if head_batchnorm:
        x = keras.layers.BatchNormalization(name="head_bn")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    for i, units in enumerate(dense_units):
        x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"head_dense_{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
    x = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, name="logits")(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name or f"{spec.name}_classifier")


def _regularize(layer, regularizer):
    import keras

    # (kernel variable, config attribute) per conv type: DepthwiseConv2D keeps its kernel in
    # `kernel` but saves the penalty as `depthwise_regularizer`; SeparableConv2D has two kernels.
    if isinstance(layer, keras.layers.SeparableConv2D):
        pairs = (("depthwise_kernel", "depthwise_regularizer"), ("pointwise_kernel", "pointwise_regularizer"))
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        pairs = (("kernel", "depthwise_regularizer"),)
    else:
        pairs = (("kernel", "kernel_regularizer"),)
    for variable_name, attribute in pairs:
        variable = getattr(layer, variable_name, None)
        if variable is None or not hasattr(layer, attribute):
            continue
        # The layer is already built: the penalty lives on the variable (what Layer.losses reads);
        # the attribute keeps it in the config so a reloaded model has it too.
        setattr(layer, attribute, regularizer)
        variable.regularizer = regularizer


def _set_drop_connect(net, rate):
    # EfficientNet's per-block Dropout(noise_shape=(None, 1, 1, 1)) layers grow linearly with depth
    # from 0 to Keras' default 0.2; rescale them so the deepest block gets `rate`.
    drops = [layer_ for layer_ in net.layers if layer_.name.endswith("drop") and hasattr(layer_, "rate")]
    top = max((layer_.rate for layer_ in drops), default=0.0)
    for layer in drops:
        layer.rate = layer.rate / top * rate if top else rate
