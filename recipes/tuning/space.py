"""The search-space language: one `_Param` per `Recipe` field, parsed from lists, tuples and dicts.

Every default comes from the base `Recipe` (`Recipe.peak_learning_rate`,
`Recipe.image_size_for`), and every candidate value is checked by constructing the Recipe it
would make, so a value that cannot work fails before the first trial.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers

from .. import validation as v
from ..config import Recipe
from ..registry import backbone_info

__all__ = ["SEARCHABLE_FIELDS", "resolve_search_space"]

# Fields set by `search`'s own arguments rather than searched or fixed per trial.
SET_BY_ARGUMENT = {
    "backbone": "backbones=[...]",
    "dataset": "the data argument",
    "epochs": "max_epochs=",
    "weights": "weights=",
    "seed": "seed=",
}
# Only meaningful in a two-phase fine-tuning (`weights` given).
FINE_TUNE_ONLY = ("unfreeze", "head_epochs", "fine_tune_learning_rate", "layer_lr_decay", "gradual")
# The data is split before the search starts: a per-trial split would compare apples and oranges.
_NOT_SEARCHABLE = set(SET_BY_ARGUMENT) | {"validation_split", "test_split"}

#: `Recipe` fields a search space may name (the default space uses a subset, see `search`).
SEARCHABLE_FIELDS = tuple(f for f in Recipe.field_names() if f not in _NOT_SEARCHABLE)

_PRIMITIVE = (bool, int, float, str)


@dataclasses.dataclass
class _Param:
    """One searched or fixed Recipe field, and how it maps onto a KerasTuner hyperparameter.

    KerasTuner values must be int/float/str/bool of one type per hyperparameter; `codec` says how
    other values travel: "none" writes None as the string "none" (augmentation, schedule), "json"
    writes each value as its JSON text (tuples such as dense_units).
    """

    name: str
    kind: str  # "choice" | "int" | "float" | "fixed"
    values: tuple = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    sampling: str = "linear"
    default: object = None
    backbone: str | None = None  # set: active only when this backbone is chosen
    codec: str = "plain"

    @property
    def hp_name(self) -> str:
        return f"{self.name}:{self.backbone}" if self.backbone else self.name

    def encode(self, value):
        if self.codec == "none":
            return "none" if value is None else value
        if self.codec == "json":
            return json.dumps(value, sort_keys=True)
        return value

    def decode(self, raw):
        if self.codec == "none":
            return None if raw == "none" else raw
        if self.codec == "json":
            return json.loads(raw)
        if self.kind == "int":
            return int(raw)
        return raw

    def value_in(self, values: dict):
        """This parameter's value in a trial's hyperparameter values (its default when absent)."""
        return self.decode(values.get(self.hp_name, self.encode(self.default)))

    def declare(self, hp):
        """Registers this parameter on a `keras_tuner.HyperParameters`; returns its value."""
        cond = {"parent_name": "backbone", "parent_values": [self.backbone]} if self.backbone else {}
        if self.kind == "fixed":
            return hp.Fixed(self.hp_name, self.encode(self.default), **cond)
        if self.kind == "choice":
            return hp.Choice(
                self.hp_name, [self.encode(x) for x in self.values],
                default=self.encode(self.default), **cond,
            )
        cls = hp.Int if self.kind == "int" else hp.Float
        return cls(
            self.hp_name, self.low, self.high, step=self.step, sampling=self.sampling,
            default=self.default, **cond,
        )

    def candidates(self) -> tuple:
        """The values to check before searching: every choice, or a range's ends."""
        if self.kind == "choice":
            return self.values
        if self.kind == "fixed":
            return (self.default,)
        return (self.low, self.high)

    def to_spec(self):
        """The JSON form `search_space` accepts (round-trips through `parse_param`)."""
        if self.kind == "fixed":
            return {"value": jsonable(self.default)}
        if self.kind == "choice":
            return {"values": [jsonable(x) for x in self.values], "default": jsonable(self.default)}
        spec = {"min": self.low, "max": self.high, "sampling": self.sampling, "default": self.default}
        if self.step is not None:
            spec["step"] = self.step
        return spec


def jsonable(value):
    """`value` as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def searched_values(space: dict, values: dict) -> dict:
    """A trial's values of the non-fixed parameters, by field name (conditional sizes merged)."""
    return {
        p.name: p.decode(values[p.hp_name])
        for p in space.values() if p.kind != "fixed" and p.hp_name in values
    }


def _codec_for(values) -> str:
    if all(isinstance(x, str) or x is None for x in values) and any(x is None for x in values):
        return "none"
    if all(isinstance(x, _PRIMITIVE) for x in values):
        kinds = {bool if isinstance(x, bool) else (str if isinstance(x, str) else "num") for x in values}
        if len(kinds) == 1:
            return "plain"
    return "json"


def _unify_numbers(values):
    # KerasTuner wants one type per Choice: [0, 0.1] becomes [0.0, 0.1].
    nums = [x for x in values if isinstance(x, numbers.Real) and not isinstance(x, bool)]
    if len(nums) == len(values) and any(isinstance(x, float) for x in nums):
        return [float(x) for x in values]
    return list(values)


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()


def parse_param(name, spec, reference, backbone=None) -> _Param:
    """Turns one user search-space entry into a `_Param`.

    `reference` is the value the base recipe would use; it becomes the default when it fits.
    """
    if isinstance(spec, dict):
        keys = set(spec)
        if keys <= {"value"} and keys:
            return _fixed(name, spec["value"], backbone)
        if "values" in keys and keys <= {"values", "default"}:
            return _choice(name, spec["values"], reference, spec.get("default", _MISSING), backbone)
        if {"min", "max"} <= keys and keys <= {"min", "max", "step", "sampling", "default"}:
            return _range(
                name, spec["min"], spec["max"], spec.get("step"), spec.get("sampling", "linear"),
                reference, spec.get("default", _MISSING), backbone,
            )
        raise ValueError(
            f"Search-space entry {name!r} must be a list (choices), a tuple (min, max[, 'log' | "
            "step]), a single value (fixed), or a dict with 'values' [, 'default'], or 'min', "
            f"'max' [, 'step', 'sampling', 'default'], or 'value'; Received: {spec!r}"
        )
    if isinstance(spec, (list, set, frozenset)):
        values = sorted(spec, key=repr) if isinstance(spec, (set, frozenset)) else list(spec)
        return _choice(name, values, reference, _MISSING, backbone)
    if isinstance(spec, tuple):
        if len(spec) not in (2, 3):
            raise ValueError(
                f"A range is (min, max) or (min, max, 'log' | step); Received: {name}={spec!r}. "
                "For a fixed tuple value (e.g. dense_units) pass it as a keyword of search()."
            )
        third = spec[2] if len(spec) == 3 else None
        sampling = third if isinstance(third, str) else "linear"
        step = None if isinstance(third, str) else third
        return _range(name, spec[0], spec[1], step, sampling, reference, _MISSING, backbone)
    return _fixed(name, spec, backbone)


def _fixed(name, value, backbone=None):
    if isinstance(value, list):
        value = tuple(value)
    return _Param(name, "fixed", default=value, backbone=backbone, codec=_codec_for([value]))


def _choice(name, values, reference, default, backbone=None):
    values = _unify_numbers([tuple(x) if isinstance(x, list) else x for x in values])
    unique = []
    for x in values:
        if x not in unique:
            unique.append(x)
    if not unique:
        raise ValueError(f"Search-space choices must not be empty; Received: {name}=[]")
    if default is _MISSING:
        default = reference if reference in unique else unique[0]
    elif default not in unique:
        raise ValueError(
            f"Default of {name!r} must be one of its choices {unique}; Received: default={default!r}"
        )
    if len(unique) == 1:
        return _fixed(name, unique[0], backbone)
    return _Param(
        name, "choice", values=tuple(unique), default=default, backbone=backbone,
        codec=_codec_for(unique),
    )


def _range(name, low, high, step, sampling, reference, default, backbone=None):
    for label, x in (("min", low), ("max", high), ("step", step)):
        if x is not None and (isinstance(x, bool) or not isinstance(x, numbers.Real)):
            raise ValueError(f"Range {label} of {name!r} must be a number; Received: {x!r}")
    if sampling not in ("linear", "log", "reverse_log"):
        raise ValueError(
            f"Range sampling of {name!r} must be 'linear', 'log' or 'reverse_log'; "
            f"Received: {sampling!r}"
        )
    if not low < high:
        raise ValueError(f"Range of {name!r} needs min < max; Received: ({low!r}, {high!r})")
    if sampling != "linear" and low <= 0:
        raise ValueError(f"A {sampling} range of {name!r} needs min > 0; Received: min={low!r}")
    integer = all(isinstance(x, numbers.Integral) for x in (low, high)) and (
        step is None or isinstance(step, numbers.Integral)
    )
    if default is _MISSING:
        inside = isinstance(reference, numbers.Real) and not isinstance(reference, bool)
        if inside and low <= reference <= high:
            default = reference
        elif sampling == "log":
            default = math.sqrt(low * high)
        else:
            default = (low + high) / 2
        if step is not None and sampling == "linear":
            default = round(low + round((default - low) / step) * step, 10)
        if integer:
            default = int(round(default))
    elif not low <= default <= high:
        raise ValueError(
            f"Default of {name!r} must lie in [{low}, {high}]; Received: default={default!r}"
        )
    number = int if integer else float
    return _Param(
        name, "int" if integer else "float", low=number(low), high=number(high),
        step=None if step is None else number(step), sampling=sampling, default=number(default),
        backbone=backbone,
    )


# --------------------------------------------------------------------------------------------
# Recipes of trials
# --------------------------------------------------------------------------------------------


def trial_recipe(base: Recipe, changes: dict) -> Recipe:
    """`base` with a trial's `changes`, constructed (so validated) once.

    A width multiplier fixed or searched for the MobileNets is dropped for a chosen backbone that
    has none, so one search can mix MobileNets with other backbones.

    Raises:
        ValueError: The combination is not a valid Recipe.
    """
    fields = {**base.to_dict(), **changes}
    if not backbone_info(fields["backbone"]).alphas:
        fields["alpha"] = None
    return Recipe.from_dict(fields)


def base_recipe(data, backbones, fixed: dict, weights, *, seed, max_epochs):
    """The Recipe every trial starts from, and the `Data` (loaded when `data` is a source).

    Fine-tuning searches start from the "fine-tune" preset, others from the defaults; the fixed
    fields, `seed`, `max_epochs` (as epochs) and `weights` go on top.

    Returns:
        `(recipe, data)`; the recipe records the data's source and batch size unless a batch
        size is fixed (trials then re-batch).
    """
    from ..training import merge_overrides, prepare_data

    preset = Recipe.preset("fine-tune" if weights is not None else "default")
    backbone = backbones[0]
    if fixed.get("alpha") is not None:
        # The first backbone a fixed width multiplier applies to carries it.
        backbone = next((b for b in backbones if backbone_info(b).alphas), backbone)
    recipe = merge_overrides(
        backbone, None, {"seed": seed, "epochs": max_epochs}, {**fixed, "weights": weights},
        base=preset,
    )
    recipe, data = prepare_data(recipe, data)
    if "batch_size" in fixed:
        recipe = recipe.replace(batch_size=fixed["batch_size"])
    return recipe, data


# --------------------------------------------------------------------------------------------
# The default space and its resolution
# --------------------------------------------------------------------------------------------


def image_sizes(recipe: Recipe, input_shape):
    """Image sizes worth trying for the recipe's backbone, and the default (`image_size_for`).

    Small images from scratch: the default and 64 px; else the registry's sizes between half the
    default and the default (plus the sizes with weights when pretrained).
    """
    spec = backbone_info(recipe.backbone)
    default = recipe.replace(image_size=None).image_size_for(input_shape)
    if default < spec.default_size:  # the small-image rule applied
        sizes = {default, max(default, 64)}
    else:
        sizes = {max(spec.min_size, spec.default_size // 2), spec.default_size}
        if recipe.pretrained:
            sizes |= {s for s in spec.weight_sizes if s >= spec.min_size}
    return sorted(sizes), default


def default_space(base: Recipe, fine_tuning: bool) -> dict:
    """The default search space as user-format entries (each with the base recipe's default)."""
    space = {
        "learning_rate": {
            "min": 1e-5 if fine_tuning else 1e-4, "max": 1e-2 if fine_tuning else 0.3,
            "sampling": "log",
        },
        "optimizer": {"values": ["adam", "sgd", "adamw", "rmsprop", "adagrad"]},
        "dropout": {"min": 0.0, "max": 0.5, "step": 0.1},
        "l2": {"values": [0.0, 1e-5, 1e-4, 1e-3]},
        "augmentation": {"values": [None, "light", "medium"]},
        "label_smoothing": {"min": 0.0, "max": 0.2, "step": 0.05},
        "schedule": {"values": ["cosine", "constant", "onecycle", "step"]},
        "batch_size": {"values": sorted({32, 64, 128, base.batch_size})},
    }
    if fine_tuning:
        space["unfreeze"] = {"values": ["top:10%", "top:30%", "top:60%", "all"]}
    return space


def _reference(base: Recipe, name):
    """The value the base recipe would use for `name` (the learning rate it decides itself)."""
    return base.peak_learning_rate if name == "learning_rate" else getattr(base, name)


def check_value(name, value, base: Recipe, backbones):
    """Raises the Recipe's own error for a candidate value that cannot work with some backbone.

    A width multiplier is checked against the backbones that have one (it is dropped for the
    others, see `trial_recipe`); an image size also against each backbone's minimum.
    """
    targets = backbones
    if name == "alpha":
        targets = [b for b in backbones if backbone_info(b).alphas] or backbones[:1]
    for backbone in targets:
        if name == "image_size" and value is not None:
            low = backbone_info(backbone).min_size
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(
                    f"image_size must be an int >= {low} for {backbone}; Received: image_size={value!r}"
                )
        trial_recipe(base, {"backbone": backbone, name: value})


def check_keys(search_space: dict, fixed: dict, fine_tuning: bool):
    """Refuses unknown, argument-owned, doubly given or fine-tuning-only keys.

    Raises:
        ValueError: The first bad key, with the closest valid ones.
    """
    for key in search_space:
        if key in SET_BY_ARGUMENT:
            raise ValueError(
                f"{key!r} is set by search()'s {SET_BY_ARGUMENT[key]}, not by the search space; "
                f"Received: search_space[{key!r}]"
            )
        if key not in SEARCHABLE_FIELDS:
            raise v.unknown("search-space key", key, SEARCHABLE_FIELDS, arg="key")
    for key in fixed:
        if key in SET_BY_ARGUMENT:
            raise ValueError(
                f"{key!r} is set by search()'s {SET_BY_ARGUMENT[key]}; Received: {key}={fixed[key]!r}"
            )
    Recipe.check_field_names(fixed)
    for key in fixed:
        if key in search_space:
            raise ValueError(
                f"{key!r} is both fixed ({key}={fixed[key]!r}) and in search_space; keep one"
            )
    if not fine_tuning:
        for key in [*search_space, *fixed]:
            if key in FINE_TUNE_ONLY:
                raise ValueError(
                    f"{key!r} applies only when fine-tuning pretrained weights (search(weights=...)); "
                    f"Received: {key} with weights=None"
                )


def resolve(data, backbones, search_space, fixed, base: Recipe) -> dict[str, _Param]:
    """The effective space: defaults, overridden by `search_space`, minus the `fixed` fields.

    Returns:
        `{hyperparameter name: _Param}`, every candidate value checked.
    """
    search_space = dict(search_space or {})
    check_keys(search_space, fixed, base.pretrained)
    entries = {k: s for k, s in default_space(base, base.pretrained).items() if k not in fixed}
    entries.update(search_space)
    params = {"backbone": _choice("backbone", list(backbones), backbones[0], _MISSING)}
    if "image_size" not in entries and "image_size" not in fixed:
        for backbone in backbones:
            sizes, default = image_sizes(trial_recipe(base, {"backbone": backbone}), data.input_shape)
            params[f"image_size:{backbone}"] = _choice(
                "image_size", sizes, default, _MISSING, backbone=backbone
            )
    for name, spec in entries.items():
        params[name] = parse_param(name, spec, _reference(base, name))
    for name, value in fixed.items():
        check_value(name, value, base, backbones)
    for p in params.values():
        if p.name != "backbone":
            for value in p.candidates():
                check_value(p.name, value, base, [p.backbone] if p.backbone else backbones)
    return params


def backbone_list(backbones) -> list[str]:
    """Registry names from a list or a comma-separated string (duplicates dropped)."""
    if isinstance(backbones, str):
        backbones = [b for b in backbones.split(",") if b.strip()]
    names = [backbone_info(b.strip() if isinstance(b, str) else b).name for b in backbones]
    if not names:
        raise ValueError("backbones must name at least one backbone; Received: []")
    return list(dict.fromkeys(names))


def resolve_search_space(
    data, *, backbones=("mobilenet_v2",), search_space=None, weights=None, **fixed
) -> dict:
    """The effective search space `search` would use, in the JSON form `search_space` accepts.

    Args:
        data: A `Data` (its image shape and batch size shape the defaults).
        backbones: Backbone names to choose from (default `("mobilenet_v2",)`).
        search_space: Overrides, as for `search` (default None).
        weights: Pretrained weights; adds the fine-tuning parameters (default None).
        **fixed: Recipe fields fixed for every trial (removed from the space).

    Returns:
        `{hyperparameter name: spec}`; conditional image sizes are named `"image_size:<backbone>"`.

    Raises:
        ValueError: Unknown keys (closest valid ones listed) or values that cannot work.

    Example:
        >>> space = recipes.tuning.resolve_search_space(data, backbones=["mobilenet"], dropout=0.3)
        >>> space["learning_rate"]
        {'min': 0.0001, 'max': 0.3, 'sampling': 'log', 'default': 0.005}
    """
    backbones = backbone_list(backbones)
    check_keys(dict(search_space or {}), fixed, weights is not None)
    base, data = base_recipe(data, backbones, fixed, weights, seed=0, max_epochs=1)
    params = resolve(data, backbones, search_space, fixed, base)
    return {name: p.to_spec() for name, p in params.items()}
