"""Augmentation specs (`"medium"`, `"rotation:0.1,zoom:0.2"`) parsed and checked without Keras.

`Recipe` validates its `augmentation` field with `parse_augmentation` when it is created, and the
`recipes` command builds a Recipe before TensorFlow is imported (`recipes.startup` chooses the CPU
kernels first), so this module imports neither. `recipes.augment` builds the layers.
"""

from __future__ import annotations

import sys

from .validation import closest_matches

__all__ = ["PRESETS", "OPS", "parse_augmentation"]

#: Layers (as `name:strength` items, see `OPS`) of each preset, in the order they are applied.
#: "flip" is dropped by `flip=False`.
PRESETS = {
    "light": ("flip", "translation:0.1", "zoom:0.1"),
    "medium": (
        "flip", "rotation:0.05", "translation:0.1", "zoom:0.15", "brightness:0.2", "contrast:0.2",
    ),
    "heavy": (
        "flip", "rotation:0.1", "translation:0.15", "zoom:0.25", "brightness:0.3",
        "contrast:0.3", "noise:0.03", "erasing:0.5",
    ),
    "randaugment": ("flip", "randaugment:0.5"),
}

_NONE = ("none", "off", "")
_FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

#: name -> (default strength, upper bound of the strength, what the strength means).
OPS = {
    "flip": (None, None, "RandomFlip; optional mode horizontal (default), vertical, "
             "horizontal_and_vertical, e.g. 'flip:vertical'"),
    "rotation": (0.1, 0.5, "RandomRotation(factor): +-factor of a full turn (0.1 = +-36 deg)"),
    "zoom": (0.1, 0.9, "RandomZoom(factor): zoom in or out by up to factor"),
    "translation": (0.1, 0.9, "RandomTranslation(factor, factor): shift by up to factor of a side"),
    "brightness": (0.2, 1.0, "RandomBrightness(factor): add up to +-factor of the value range"),
    "contrast": (0.2, 1.0, "RandomContrast(factor): scale contrast by 1 +- factor"),
    "noise": (0.02, 1.0, "PixelNoise(stddev): Gaussian noise, stddev as a fraction of the value "
              "range (0.05 on 0-255 pixels = 12.75)"),
    "erasing": (0.25, 1.0, "RandomErasing(factor): erase a random patch; per-image probability "
                "drawn from [0, factor]"),
    "randaugment": (0.5, 1.0, "RandAugment(num_ops=2, factor): magnitude factor"),
    "augmix": (0.3, 1.0, "AugMix(factor): magnitude factor of its operations"),
}


def _closest(name, choices):
    hint = closest_matches(name, choices)
    return f" Did you mean: {', '.join(hint)}?" if hint else ""


def parse_augmentation(spec, *, flip=True):
    """Turns a preset name, a comma-separated string or a list into `(name, strength)` pairs.

    Args:
        spec: None/"none", a preset (`"light"`, `"medium"`, `"heavy"`, `"randaugment"`), a string
            such as `"rotation:0.1,zoom:0.2"`, or a list of such items (presets `light`, `medium`
            and `heavy` expand in place; a `keras.layers.Layer` item is kept as is).
        flip: False drops every flip, including listed ones (default True).

    Returns:
        A list of `(name, strength)` tuples (strength is a float, a flip mode, or None for a
        layer item whose "name" is the layer itself); empty for "none".

    Raises:
        ValueError: Unknown name (with the closest matches), a strength that is not a number or
            out of range, or a spec of the wrong type.

    Example:
        >>> parse_augmentation("rotation:0.1,flip")
        [('rotation', 0.1), ('flip', 'horizontal')]
    """
    if not isinstance(flip, bool):
        raise ValueError(f"flip must be True or False; Received: flip={flip!r}")
    if spec is None:
        return []
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in _NONE:
            return []
        items = list(PRESETS[key]) if key in PRESETS else key.split(",")
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        raise ValueError(
            "augmentation must be None, a preset name, a comma-separated string or a list of "
            f"names; Received: augmentation={spec!r} (type {type(spec).__name__}). "
            f"Presets: {', '.join(PRESETS)}; names: {', '.join(OPS)}."
        )
    parsed = []
    for item in items:
        if _is_layer(item):
            parsed.append((item, None))
            continue
        if not isinstance(item, str):
            raise ValueError(
                f"Each augmentation item must be a 'name' or 'name:strength' string or a Keras "
                f"layer; Received: {item!r} in augmentation={spec!r}"
            )
        text = item.strip().lower()
        if not text:
            continue  # tolerate "rotation:0.1,,zoom" and trailing commas from the CLI
        if text in PRESETS and text != "randaugment":
            parsed.extend(parse_augmentation(list(PRESETS[text]), flip=flip))
            continue
        name, _, value = (part.strip() for part in text.partition(":"))
        if name not in OPS:
            allowed = [*OPS, *(p for p in PRESETS if p != "randaugment")]
            raise ValueError(
                f"Unknown augmentation {name!r}; Received: augmentation={spec!r}."
                f"{_closest(name, allowed)} Allowed names: {', '.join(OPS)} "
                f"(presets: {', '.join(PRESETS)})."
            )
        parsed.append((name, _parse_strength(name, value, spec)))
    if not flip:
        parsed = [p for p in parsed if p[0] != "flip"]
    return parsed


def _is_layer(item):
    # A Keras layer can only exist once Keras is imported: no need to import it here.
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(item, keras.layers.Layer)


def _parse_strength(name, value, spec):
    if name == "flip":
        mode = value or "horizontal"
        if mode not in _FLIP_MODES:
            raise ValueError(
                f"Unknown flip mode {mode!r}; Received: augmentation={spec!r}."
                f"{_closest(mode, _FLIP_MODES)} Allowed: {', '.join(_FLIP_MODES)}."
            )
        return mode
    default, upper, _ = OPS[name]
    if not value:
        return default
    try:
        strength = float(value)
    except ValueError:
        strength = None
    if strength is None or not 0 < strength <= upper:
        raise ValueError(
            f"Strength of {name!r} must be a number in (0, {upper}]; Received: {name}:{value} in "
            f"augmentation={spec!r}"
        )
    return strength
