"""Decoding and resizing image files inside tf.data: plain `tf.io`/`tf.image` ops, no Python per image.

The ops are TensorFlow's own (the ones `keras.utils.image_dataset_from_directory` runs), written
against `tf` directly rather than `keras.ops` so the pipelines also run when Keras uses the JAX
backend (multi-worker training): tf.data graphs need TensorFlow tensors.
"""

from __future__ import annotations

from .. import validation as v
from ..validation import check_cache  # noqa: F401  (re-exported: the loaders import it from here)

__all__ = ["IMAGE_SUFFIXES", "CROPS", "JPEG_RATIOS", "check_crop", "check_cache", "resize_image",
           "decode_image", "flatten_alpha", "ALPHA_BACKGROUND", "probe_image", "jpeg_ratio",
           "apply_cache"]

#: File suffixes read as images (the formats `tf.io.decode_image` decodes; Keras' list plus WebP).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")

#: How an image of another aspect ratio reaches the pipeline size.
CROPS = ("center", "pad")

#: Scale factors libjpeg can decode at directly (1/2, 1/4, 1/8 of the side), far cheaper than
#: decoding at full size and resizing down.
JPEG_RATIOS = (1, 2, 4, 8)

_JPEG_MAGIC = b"\xff\xd8\xff"


def check_crop(crop):
    """Returns `crop` (None, "center" or "pad") or raises the closest-match ValueError."""
    return v.check_choice("crop", crop, CROPS, allow_none=True)


#: `cache="auto"` keeps a split's decoded images in memory below this size, else streams them:
#: small folders then skip decoding after the first epoch, large ones never grow with the folder.
AUTO_CACHE_BYTES = 256 << 20


def probe_image(raw):
    """`(height, width, channels, is_jpeg)` of an encoded image, fully checked once.

    JPEGs are decoded at 1/8 scale (every byte of the compressed stream is still read, so a
    truncated or corrupt file fails) and measured from their header; other formats are decoded.
    Raises a TensorFlow error (for `ignore_errors`) when the bytes are not a readable image.
    """
    import tensorflow as tf

    is_jpeg = tf.equal(tf.strings.substr(raw, 0, 3), _JPEG_MAGIC)

    def jpeg():
        small = tf.io.decode_jpeg(raw, ratio=8)
        with tf.control_dependencies([small]):
            return tf.image.extract_jpeg_shape(raw, output_type=tf.int32)

    def other():
        return tf.shape(tf.io.decode_image(raw, expand_animations=False), out_type=tf.int32)

    shape = tf.cond(is_jpeg, jpeg, other)
    return shape[0], shape[1], shape[2], is_jpeg


def jpeg_ratio(height, width, size):
    """The largest libjpeg scale `r` in `JPEG_RATIOS` that keeps `(height/r, width/r)` at least
    `size`, so no image is decoded smaller than the pipeline size (numpy arrays in, array out)."""
    import numpy as np

    height, width = np.asarray(height), np.asarray(width)
    ratio = np.ones(height.shape, np.int32)
    for r in JPEG_RATIOS[1:]:
        ratio[(height >= r * size[0]) & (width >= r * size[1])] = r
    return ratio


#: Transparent pixels are composited onto this gray level (white): what a viewer or a browser
#: page shows, rather than whatever colour happens to be stored under alpha = 0.
ALPHA_BACKGROUND = 255


def flatten_alpha(image, channels, composite_alpha=True):
    """Composites an alpha channel onto `ALPHA_BACKGROUND` and returns `channels` channels.

    Args:
        image: uint8 `(H, W, C)` tensor with C of 1 (gray), 2 (gray + alpha), 3 (RGB) or 4
            (RGBA).
        channels: 1 or 3.
        composite_alpha: True (default) or a boolean tensor; False drops the fourth channel
            instead (32-bit BMPs often leave it 0 although nothing is transparent).

    Returns:
        A uint8 `(H, W, channels)` tensor: `color * alpha + 255 * (1 - alpha)`, rounded; gray
        repeated to RGB for `channels=3`, the first channel kept for `channels=1`.
    """
    import tensorflow as tf

    def composite():
        x = tf.cast(image, tf.float32)
        alpha = x[..., -1:] / 255.0
        out = x[..., :-1] * alpha + float(ALPHA_BACKGROUND) * (1.0 - alpha)
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    c = tf.shape(image)[-1]
    has_alpha = tf.logical_and(tf.equal(c % 2, 0), composite_alpha)  # 2 or 4: the last is alpha
    flat = tf.cond(has_alpha, composite, lambda: image)
    if channels == 1:
        return flat[..., :1]
    return tf.cond(tf.equal(tf.shape(flat)[-1], 1), lambda: tf.repeat(flat, 3, axis=-1),
                   lambda: flat[..., :3])


def _alpha_is_transparency(raw):
    """PNG and WebP alpha is transparency; a 32-bit BMP's fourth channel is often just 0."""
    import tensorflow as tf

    png = tf.equal(tf.strings.substr(raw, 0, 4), b"\x89PNG")
    webp = tf.logical_and(tf.equal(tf.strings.substr(raw, 0, 4), b"RIFF"),
                          tf.equal(tf.strings.substr(raw, 8, 4), b"WEBP"))
    return tf.logical_or(png, webp)


def decode_image(raw, channels, ratio=None):
    """Decodes `raw` bytes to a uint8 `(H, W, channels)` tensor; `channels` is 1 or 3.

    Grayscale, palette, RGBA, 16-bit and CMYK inputs all come out as uint8 with `channels`
    channels: 16-bit values are scaled to 8 bits (x * 255 / 65535, TensorFlow's conversion), and
    PNG/WebP transparency is composited onto white (`ALPHA_BACKGROUND`), not dropped (a BMP's
    fourth channel is dropped). GIFs give their
    first frame. With `ratio` (a scalar int32 tensor, 1, 2, 4 or 8; JPEGs only) libjpeg decodes
    at that scale.
    """
    import tensorflow as tf

    def full():
        if channels == 3:
            # JPEG has no alpha and may be CMYK: libjpeg's own conversion to RGB.
            return tf.cond(tf.equal(tf.strings.substr(raw, 0, 3), _JPEG_MAGIC),
                           lambda: tf.io.decode_jpeg(raw, channels=3), lambda: other())
        return other()

    def other():
        image = tf.io.decode_image(raw, channels=0, dtype=tf.uint8, expand_animations=False)
        return flatten_alpha(image, channels, _alpha_is_transparency(raw))

    if ratio is None:
        image = full()
    else:
        branches = [full] + [
            (lambda r=r: tf.io.decode_jpeg(raw, channels=channels, ratio=r)) for r in JPEG_RATIOS[1:]
        ]
        index = tf.cast(tf.math.log(tf.cast(ratio, tf.float32)) / tf.math.log(2.0) + 0.5, tf.int32)
        image = tf.switch_case(index, branches)
    return tf.ensure_shape(image, [None, None, channels])


def resize_image(image, size, crop=None):
    """Resizes one image tensor to `size` (height, width) and returns uint8.

    Args:
        image: `(H, W, C)` tensor, any real dtype with values in 0-255.
        size: `(height, width)`.
        crop: None (default: stretch to `size`), `"center"` (the largest centred region of the
            target aspect ratio, then resize: Keras' `crop_to_aspect_ratio=True`, i.e.
            `keras.preprocessing.image.smart_resize`) or `"pad"` (resize to fit, then pad with
            black: Keras' `pad_to_aspect_ratio=True`, `tf.image.resize_with_pad`).

    Returns:
        A uint8 `(height, width, C)` tensor (bilinear, like Keras' image loaders).

    Example:
        >>> ds = ds.map(lambda image, label: (resize_image(image, (64, 64), "center"), label))
    """
    import tensorflow as tf

    height, width = int(size[0]), int(size[1])
    if crop == "center":
        shape = tf.shape(image)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        crop_h = tf.minimum(h, w * height / width)
        crop_w = tf.minimum(w, h * width / height)
        crop_h = tf.maximum(tf.cast(crop_h, tf.int32), 1)
        crop_w = tf.maximum(tf.cast(crop_w, tf.int32), 1)
        top = (shape[0] - crop_h) // 2
        left = (shape[1] - crop_w) // 2
        image = image[top:top + crop_h, left:left + crop_w]
        out = tf.image.resize(image, (height, width), method="bilinear")
    elif crop == "pad":
        out = tf.image.resize_with_pad(image, height, width, method="bilinear")
    else:
        out = tf.image.resize(image, (height, width), method="bilinear")
    out = tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)
    return tf.ensure_shape(out, [height, width, image.shape[-1]])


def apply_cache(ds, cache, name):
    """`ds.cache()` in memory ("memory"), in files `<cache>_<name>` (a path prefix), or not (None)."""
    if cache == "memory":
        return ds.cache()
    if cache:
        import os

        os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
        return ds.cache(f"{cache}_{name}")
    return ds
