"""Argument checks shared by every entry point, with Keras-style messages.

Every check raises `ValueError` saying what was wrong, what was received and what is allowed:
"epochs must be an int >= 1; Received: epochs=0". Unknown names list the closest matches. This is
the only module that words such errors; the Recipe, the builder, the tuner and the CLI call it.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re

__all__ = [
    "closest_matches",
    "unknown",
    "check_choice",
    "check_number",
    "check_int",
    "check_rate",
    "check_bool",
    "check_json_value",
    "check_model_input",
    "check_image_size",
    "max_image_size",
    "MAX_IMAGE_SIZE",
    "parse_unfreeze_policy",
]


def closest_matches(name, choices, n: int = 3) -> list[str]:
    """The `n` choices closest to `name` (difflib), best first.

    Example:
        >>> closest_matches("resnet5", ["resnet50", "resnet101", "vgg16"])
        ['resnet50', 'resnet101']
    """
    choices = [str(c) for c in choices]
    text = str(name).lower()
    matches = difflib.get_close_matches(text, choices, n=n, cutoff=0.4)
    if not matches:  # a prefix such as "efficient" is still a useful hint
        matches = [c for c in choices if c.startswith(text[:4])][:n]
    return matches


def unknown(kind: str, received, choices, *, arg: str | None = None, allowed: str | None = None) -> ValueError:
    """The error for a name that is not among `choices`: closest matches, then what is allowed.

    Args:
        kind: What the name is ("optimizer", "schedule", "recipe field", ...).
        received: The name given.
        choices: The valid names.
        arg: Argument name shown as `arg=value` (default: `kind`).
        allowed: Text after "Allowed:" (default: the choices joined by commas).

    Returns:
        A `ValueError` to raise.
    """
    hint = closest_matches(received, choices)
    shown = f"{arg or kind}={received!r}"
    return ValueError(
        f"Unknown {kind}; Received: {shown}."
        + (f" Did you mean: {', '.join(hint)}?" if hint else "")
        + f" Allowed: {allowed or ', '.join(map(str, choices))}"
    )


def check_choice(name: str, value, choices, *, allow_none=False, kind=None):
    """Returns `value` when it is one of `choices` (or None when allowed), else raises `unknown`."""
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value in choices:
        return value
    raise unknown(kind or name, value, choices, arg=name,
                  allowed=", ".join(map(str, choices)) + (" or None" if allow_none else ""))


def check_number(name: str, value, low=None, high=None, *, allow_none=False, low_open=False,
                 high_open=True, integer=False):
    """Checks a finite real (not bool) within bounds and returns it.

    Args:
        name: Argument name for the message.
        value: What was received.
        low, high: Bounds (None: unbounded).
        allow_none: None passes through.
        low_open: `low` itself is not allowed (default False: `value >= low`).
        high_open: `high` itself is not allowed (default True: `value < high`).
        integer: Require an int.

    Raises:
        ValueError: Wrong type, NaN/inf, or out of range.
    """
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and (isinstance(value, numbers.Integral) or not integer)
    ok = ok and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        kind = "an int" if integer else "a number"
        if low is not None and high is not None:
            bound = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            bound = f" {'>' if low_open else '>='} {low}"
        elif high is not None:
            bound = f" {'<' if high_open else '<='} {high}"
        else:
            bound = " (finite)"
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {kind}{bound}{extra}; Received: {name}={value!r}")
    return value


def check_int(name: str, value, low=None, **kwargs):
    """`check_number(..., integer=True)`; returns an `int`."""
    value = check_number(name, value, low, integer=True, **kwargs)
    return None if value is None else int(value)


def check_rate(name: str, value, *, allow_none=False):
    """A fraction in [0, 1)."""
    return check_number(name, value, 0, 1, allow_none=allow_none)


def check_bool(name: str, value):
    """True or False only (not 0/1, not "yes")."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; Received: {name}={value!r}")
    return value


def check_json_value(name: str, value):
    """Refuses what JSON cannot hold exactly (layers, arrays, NaN, objects): a saved recipe must
    redo the run.

    Raises:
        ValueError: Names the field and the type received.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Real):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name} must be finite; Received: {name}={value!r}")
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            check_json_value(name, item)
        return value
    raise ValueError(
        f"{name} must be a JSON value (str, number, bool, None or a list of them) so recipe.json "
        f"can redo the run; Received: {name} of type {type(value).__name__}. Pass a Keras layer "
        "to build_classifier instead and train the built model."
    )


_UNFREEZE_HELP = "'all', 'none', an int, 'top:N', 'top:P%', 're:<regex>' or a block name"


def parse_unfreeze_policy(policy):
    """Checks an unfreeze policy's syntax (no model needed) and returns it parsed.

    Args:
        policy: `"all"`, `"none"`, an int >= 1, `"top:N"`, `"top:P%"`, `"re:<regex>"` or a block
            name.

    Returns:
        `(kind, value)` with kind one of `"all"`, `"none"`, `"count"`, `"percent"`, `"regex"`,
        `"block"`.

    Raises:
        ValueError: Wrong type, a count < 1, a percentage outside (0, 100], an invalid regex.

    Example:
        >>> parse_unfreeze_policy("top:25%")
        ('percent', 25.0)
    """
    if isinstance(policy, bool) or not isinstance(policy, (str, numbers.Integral)):
        raise ValueError(f"unfreeze must be {_UNFREEZE_HELP}; Received: unfreeze={policy!r}")
    if isinstance(policy, numbers.Integral):
        if policy < 1:
            raise ValueError(
                "unfreeze as a layer count must be >= 1 (use 'none' to unfreeze nothing); "
                f"Received: unfreeze={policy!r}"
            )
        return ("count", int(policy))
    text = policy.strip()
    if text.lower() in ("all", "none"):
        return (text.lower(), None)
    if text.startswith("re:"):
        if not text[3:]:
            raise ValueError(f"unfreeze regex is empty; Received: unfreeze={policy!r}")
        try:
            re.compile(text[3:])
        except re.error as exc:
            raise ValueError(f"unfreeze regex is invalid ({exc}); Received: unfreeze={policy!r}") from None
        return ("regex", text[3:])
    if text.startswith("top:"):
        value = text[4:].strip()
        try:
            if value.endswith("%"):
                pct = float(value[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                return ("percent", pct)
            count = int(value)
            if count < 1:
                raise ValueError
            return ("count", count)
        except ValueError:
            raise ValueError(
                "unfreeze 'top:' takes a layer count >= 1 ('top:20') or a percentage in (0, 100] "
                f"('top:25%'); Received: unfreeze={policy!r}"
            ) from None
    if not text:
        raise ValueError("unfreeze must not be empty; Received: unfreeze=''")
    return ("block", text)


def check_model_input(model, input_shape, *, where="data") -> None:
    """Checks that images of `input_shape` fit a model's input before any batch runs.

    Keras would otherwise fail inside the first layer that sees them ("Conv1 ... expected axis
    -1 of input shape to have value 3"). Unknown dimensions (None) accept anything; a model
    with several inputs, or none known, is not checked.

    Args:
        model: A `keras.Model`.
        input_shape: `(height, width, channels)` of one image (e.g. `Data.input_shape`).
        where: What the images are, for the message (default "data").

    Raises:
        ValueError: A known height, width or channel count that differs, with the fix.

    Example:
        >>> check_model_input(model, data.input_shape)
    """
    try:
        expected = tuple(model.input_shape)
    except (AttributeError, ValueError):
        return
    if not expected or isinstance(expected[0], (tuple, list)) or input_shape is None:
        return
    expected, given = expected[1:], tuple(input_shape)
    if len(expected) != len(given):
        bad = True
    else:
        bad = any(e is not None and g is not None and int(e) != int(g)
                  for e, g in zip(expected, given))
    if bad:
        raise ValueError(
            f"The model takes images of shape {expected} but the {where}'s images are {given}; "
            "build the model with input_shape=data.input_shape (recipes.build_classifier(..., "
            "input_shape=data.input_shape)), or leave input_shape out: the default takes any "
            f"size with 1 or 3 channels. Received: model input {expected}, images {given}"
        )


#: The largest side any backbone is built at, unless its ImageNet size is above half of it (then
#: twice that size). The registry's largest ImageNet resolution is 600 px (EfficientNet-B7): 1024
#: leaves room for high-resolution fine-tuning, while activation memory grows with the side
#: squared; a batch of 10,000 px images needs hundreds of GB and fails with an out-of-memory
#: traceback long after the run started.
MAX_IMAGE_SIZE = 1024


def max_image_size(spec) -> int:
    """The largest `image_size` accepted for a backbone: `max(MAX_IMAGE_SIZE, 2 * default_size)`.

    Args:
        spec: A `recipes.registry.BackboneSpec`.

    Example:
        >>> max_image_size(backbone_info("efficientnet_b7"))
        1200
    """
    return max(MAX_IMAGE_SIZE, 2 * int(spec.default_size))


def check_image_size(spec, image_size, *, name="image_size"):
    """Checks an image side against a backbone's minimum and maximum (None passes).

    Args:
        spec: A `recipes.registry.BackboneSpec`.
        image_size: An int, a `(height, width)` pair, or None (the backbone's default).
        name: Argument name for the message.

    Returns:
        `image_size` unchanged.

    Raises:
        ValueError: A side above `max_image_size(spec)`, naming the maximum and why.

    Example:
        >>> check_image_size(backbone_info("mobilenet"), 10000)
        ValueError: image_size must be at most 1024 for mobilenet ...
    """
    if image_size is None:
        return None
    sides = image_size if isinstance(image_size, (tuple, list)) else (image_size,)
    top = max_image_size(spec)
    for side in sides:
        if isinstance(side, numbers.Real) and not isinstance(side, bool) and side > top:
            raise ValueError(
                f"{name} must be at most {top} for {spec.name} (its ImageNet size is "
                f"{spec.default_size}; memory grows with the side squared, so larger sizes run "
                f"out of memory); Received: {name}={image_size!r}"
            )
    return image_size


def check_cache(cache):
    """Checks a `cache` argument: "auto", "memory", None, or a file path prefix.

    A path must name a folder (contain a path separator, e.g. `./cache/data`), so that a typo
    such as "memroy" is an error rather than a cache file in the working directory.

    Returns:
        `cache` unchanged.

    Raises:
        ValueError: Anything else, with the closest matches.

    Example:
        >>> check_cache("./cache/flowers")
        './cache/flowers'
    """
    if cache is None or cache in ("auto", "memory"):
        return cache
    if isinstance(cache, str) and cache.strip() and ("/" in cache or "\\" in cache):
        return cache
    raise unknown("cache", cache, ("auto", "memory"),
                    allowed="'auto', 'memory', None, or a file path prefix such as "
                            "'./cache/data' (tf.data writes its cache files there)")
