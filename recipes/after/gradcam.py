"""Grad-CAM (Selvaraju et al. 2017): which part of the image drove a class score.

The heat map is the ReLU of the backbone's last convolutional feature map weighted by the
spatially averaged gradient of the class logit. The feature map is the layer the registry names
(`BackboneSpec.cam_layer`, default the backbone's last 4-D output) inside the classifier's
keras.applications model (`recipes.find_backbone`), reached by replaying the classifier's graph
with the backbone returning (feature map, features). Gradients use `tf.GradientTape` (the
TensorFlow backend).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import validation as v
from .common import class_names_for, list_images, logits_layer, open_model, read_images

__all__ = ["grad_cam", "explain", "cam_layer_name", "EXPLAIN_DIR"]

#: The run's sub-folder for heat-map PNGs.
EXPLAIN_DIR = "explain"


def cam_layer_name(backbone_model) -> str:
    """The Grad-CAM layer of a keras.applications model: the registry's `cam_layer`, else the
    last layer with a 4-D output.

    Raises:
        ValueError: The named layer is missing, or the model has no 4-D output at all.
    """
    from ..registry import backbone_info

    try:
        name = backbone_info(backbone_model.name).cam_layer
    except ValueError:  # not a registry backbone (custom): fall back to the shape rule
        name = None
    names = [layer.name for layer in backbone_model.layers]
    if name is not None:
        if name not in names:
            raise ValueError(f"The registry's Grad-CAM layer is not in the backbone; Received: "
                             f"cam_layer={name!r} for {backbone_model.name!r}")
        return name
    for layer in reversed(backbone_model.layers):
        if len(layer.output.shape) == 4:
            return layer.name
    raise ValueError(f"The backbone has no 4-D (feature map) layer; Received: {backbone_model.name!r}")


def _parts(model, layer=None):
    """A model `images -> (feature map, logits)` sharing `model`'s layers and weights.

    The classifier's graph is replayed (`keras.models.clone_model` with the layers themselves)
    with its backbone called as a two-output model, so the feature map and the logits come from
    one pass and the gradient flows between them. The backbone is the `backbone` layer's model
    (in memory) or the nested registry-named model (a saved run's portable `model.keras`).
    """
    import keras

    from ..layers import Backbone
    from ..weights import find_backbone

    try:
        inner = find_backbone(model)
    except ValueError:
        raise ValueError(f"Grad-CAM needs a classifier with a 'backbone' layer or a registry "
                         f"backbone inside (as build_classifier makes); Received: model "
                         f"{model.name!r}") from None
    names = [layer_.name for layer_ in inner.layers]
    name = layer or cam_layer_name(inner)
    if name not in names:
        raise v.unknown("backbone layer", name, names, arg="layer")
    fmap = inner.get_layer(name).output
    if len(fmap.shape) != 4:
        raise ValueError(f"The Grad-CAM layer must output a 4-D feature map; Received: "
                         f"layer={name!r} with output shape {tuple(fmap.shape)}")
    body = keras.Model(inner.inputs, [fmap, inner.outputs[0]])
    captured = {}

    def call(layer_, *args, **kwargs):
        is_backbone = layer_ is inner or (isinstance(layer_, Backbone) and layer_.backbone is inner)
        if is_backbone:
            captured["fmap"], out = body(args[0], training=False)
            return out
        return layer_(*args, **kwargs)

    logits, _ = logits_layer(model)
    view = keras.Model(model.inputs, logits)
    replay = keras.models.clone_model(view, clone_function=lambda layer_: layer_, call_function=call)
    return keras.Model(replay.inputs, [captured["fmap"], replay.outputs[0]])


def _grad_cam(model, images, class_index=None, layer=None, cam_model=None):
    """`(heat (N, H, W) in [0, 1], class indices (N,), probabilities of those classes (N,))`."""
    import tensorflow as tf

    from .prediction import as_model_input

    x = as_model_input(images, model)
    num_classes = int(model.outputs[0].shape[-1])
    if class_index is not None:
        class_index = v.check_number("class_index", class_index, 0, num_classes, integer=True)
    cam_model = cam_model or _parts(model, layer)
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        fmap, logits = cam_model([x], training=False)
        fmap = tf.cast(fmap, tf.float32)
        logits = tf.cast(logits, tf.float32)
        classes = (tf.argmax(logits, axis=1, output_type=tf.int32) if class_index is None
                   else tf.fill([tf.shape(x)[0]], int(class_index)))
        score = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    heat = tf.nn.relu(tf.reduce_sum(fmap * weights, axis=-1))
    top = tf.reduce_max(heat, axis=(1, 2), keepdims=True)
    heat = tf.math.divide_no_nan(heat, top)
    heat = tf.image.resize(heat[..., None], tuple(np.asarray(x).shape[1:3]), "bilinear")[..., 0]
    probs = tf.nn.softmax(logits / logits_layer(model)[1], axis=1)
    chosen = tf.gather(probs, classes, axis=1, batch_dims=1)
    return np.clip(heat.numpy(), 0, 1), classes.numpy(), chosen.numpy()


def grad_cam(model, images, class_index=None, *, layer=None) -> np.ndarray:
    """Grad-CAM heat maps of a classifier for a batch of images.

    Args:
        model: A classifier built by `build_classifier` (or a run folder / `.keras` file).
        images: `(N, H, W[, C])` raw 0-255 images (converted to the model's channels and size).
        class_index: The class to explain (default: each image's predicted class).
        layer: The backbone layer to use (default: the registry's `cam_layer`).

    Returns:
        `(N, H', W')` float heat maps in [0, 1] (1 = the most important place of each image) at
        the model's input size (the images' size when the model takes any size).

    Raises:
        ValueError: A model without a backbone layer or logits, an unknown layer, a class index
            out of range.

    Example:
        >>> heat = recipes.grad_cam(model, x_test[:4])
        >>> heat.shape
        (4, 8, 8)
    """
    if not hasattr(model, "layers"):
        model = open_model(model).model
    return _grad_cam(model, images, class_index, layer)[0]


def explain(model_or_run, images, *, out=None, class_index=None, layer=None) -> dict:
    """Writes one PNG per image file: the image, its Grad-CAM overlay, class and probability.

    Args:
        model_or_run: A run folder, a `.keras` file or a `keras.Model`.
        images: Image files or folders (recursive).
        out: Output folder (default `<run>/explain`).
        class_index: Class to explain, an index or a class name (default: the predicted one).
        layer: The backbone layer (default: the registry's `cam_layer`).

    Returns:
        `{"written": [PNG paths, one per readable image: <stem>_gradcam.png], "errors":
        {unreadable file: message}}`.

    Raises:
        ValueError: A bad model, no images, an unknown class, no image readable at all.
    """
    from ..plotting import plot_grad_cam

    src = open_model(model_or_run)
    model = src.model
    num_classes = int(model.outputs[0].shape[-1])
    names = class_names_for(src, num_classes)
    if isinstance(class_index, str) and class_index in names:
        class_index = names.index(class_index)  # a name first: folder classes may be digits
    elif isinstance(class_index, str) and not class_index.isdigit():
        raise v.unknown("class", class_index, names, arg="class_index")
    elif class_index is not None:
        class_index = v.check_number("class_index", int(class_index), 0, num_classes, integer=True)
    cam_model = _parts(model, layer)  # built once; a model it cannot explain fails here
    paths = list_images(images)
    folder = src.out_dir(EXPLAIN_DIR, out)
    written, failed, used = [], {}, set()
    for indices, batch, errors in read_images(paths, model, batch_size=16):
        failed.update(errors)
        if batch is None:
            continue
        heat, classes, probs = _grad_cam(model, batch, class_index, layer, cam_model)
        for i, image, h, c, p in zip(indices, batch, heat, classes, probs):
            stem = Path(paths[i]).stem
            name = f"{stem}_gradcam.png" if stem not in used else f"{stem}_{i}_gradcam.png"
            used.add(stem)
            written.append(plot_grad_cam(image, h, f"{names[c]} ({p:.2f})",
                                         folder.file(name)))
    if not written:
        raise ValueError(f"No image could be read; Received: {len(paths)} file(s), e.g. "
                         f"{paths[0]}: {next(iter(failed.values()))}")
    return {"written": written, "errors": {paths[i]: m for i, m in failed.items()}}
