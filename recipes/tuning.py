"""`search`: KerasTuner hyperparameter search over `Recipe`s, with resume, failures and distribution.

The search space keys are `Recipe` field names: every trial's hyperparameters become a `Recipe`
(`SearchResult.best_recipe` redoes the best trial with `recipes.train --recipe`). A
`keras_tuner.HyperModel` builds with `recipes.build_classifier` and trains with `recipes.train`, or
with the two-phase `recipes.fine_tune` when `weights` is given (KerasTuner alone cannot fine-tune in
two phases). Everything else is KerasTuner's own machinery: its oracles (random, grid, Bayesian,
Hyperband), its project folder (resume), its failed-trial accounting and its gRPC chief/worker
distribution.

What this adds on top of KerasTuner:

- Resume is safe: the search arguments are stored in `<project>/search_args.json`; re-running with
  different ones raises instead of silently keeping the old ones (KerasTuner #234, #803, #143).
  `max_trials` may grow, to extend a finished search.
- A NaN loss fails the trial (`keras_tuner.errors.FailedTrialError`) instead of scoring it; out of
  memory and invalid recipes fail it too; `max_consecutive_failed_trials` failures in a row stop the
  search with `SearchFailedError`.
- `isolate=True` trains each trial in a fresh Python process, so memory cannot grow across trials
  (KerasTuner #395, #873, #1031).
- `SearchResult`: the table of every trial (`results.csv`, `results.png`), the best recipe and
  model, `retrain` on train + validation, and `refine` (a narrower second search).

Layers: `search` -> KerasTuner tuner -> `RecipeHyperModel.fit` -> `recipes.train` /
`recipes.fine_tune` -> `keras.Model.fit`.
"""

from __future__ import annotations

import dataclasses
import difflib
import gc
import json
import math
import numbers
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import Recipe
from .registry import backbone_info, closest_matches

__all__ = [
    "TUNERS",
    "SEARCHABLE_FIELDS",
    "RecipeHyperModel",
    "SearchFailedError",
    "SearchResult",
    "resolve_search_space",
    "search",
]

#: Tuner names and the KerasTuner classes they use.
TUNERS = {
    "random": "RandomSearch",
    "grid": "GridSearch",
    "bayesian": "BayesianOptimization",
    "hyperband": "Hyperband",
}

# Fields set by `search`'s own arguments rather than searched or fixed per trial.
_SET_BY_ARGUMENT = {
    "backbone": "backbones=[...]",
    "dataset": "the data argument",
    "epochs": "max_epochs=",
    "weights": "weights=",
    "seed": "seed=",
}
# Only meaningful in a two-phase fine-tuning (`weights` given).
_FINE_TUNE_ONLY = ("unfreeze", "head_epochs", "fine_tune_learning_rate", "layer_lr_decay", "gradual")
# The data is split before the search starts: a per-trial split would compare apples and oranges.
_NOT_SEARCHABLE = set(_SET_BY_ARGUMENT) | {"validation_split", "test_split"}

#: `Recipe` fields a search space may name (the default space uses a subset, see `search`).
SEARCHABLE_FIELDS = tuple(f for f in Recipe.field_names() if f not in _NOT_SEARCHABLE)

_ARGS_FILE = "search_args.json"
# The isolated trial's process (not `python -m recipes.tuning`: runpy would warn that the
# package already imported the module).
_CHILD = "import sys; from recipes.tuning import _run_trial_file; sys.exit(_run_trial_file(sys.argv[1]))"
_TRIAL_INFO = "recipes_trial.json"
_PRIMITIVE = (bool, int, float, str)


class SearchFailedError(RuntimeError):
    """Too many trials failed in a row; the message names the last error and the results table."""


# --------------------------------------------------------------------------------------------
# Search space: one `_Param` per Recipe field (image size: one per backbone)
# --------------------------------------------------------------------------------------------


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

    def declare(self, hp):
        """Registers this parameter on a `keras_tuner.HyperParameters`; returns its value."""
        cond = {"parent_name": "backbone", "parent_values": [self.backbone]} if self.backbone else {}
        if self.kind == "fixed":
            return hp.Fixed(self.hp_name, self.encode(self.default), **cond)
        if self.kind == "choice":
            return hp.Choice(
                self.hp_name, [self.encode(v) for v in self.values],
                default=self.encode(self.default), **cond,
            )
        cls = hp.Int if self.kind == "int" else hp.Float
        return cls(
            self.hp_name, self.low, self.high, step=self.step, sampling=self.sampling,
            default=self.default, **cond,
        )

    def to_spec(self):
        """The JSON form `search_space` accepts (round-trips through `_parse_param`)."""
        if self.kind == "fixed":
            return {"value": _jsonable(self.default)}
        if self.kind == "choice":
            return {"values": [_jsonable(v) for v in self.values], "default": _jsonable(self.default)}
        spec = {"min": self.low, "max": self.high, "sampling": self.sampling, "default": self.default}
        if self.step is not None:
            spec["step"] = self.step
        return spec


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _codec_for(values) -> str:
    if all(isinstance(v, str) or v is None for v in values) and any(v is None for v in values):
        return "none"
    if all(isinstance(v, _PRIMITIVE) for v in values):
        kinds = {bool if isinstance(v, bool) else (str if isinstance(v, str) else "num") for v in values}
        if len(kinds) == 1:
            return "plain"
    return "json"


def _unify_numbers(values):
    # KerasTuner wants one type per Choice: [0, 0.1] becomes [0.0, 0.1].
    nums = [v for v in values if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    if len(nums) == len(values) and any(isinstance(v, float) for v in nums):
        return [float(v) for v in values]
    return list(values)


def _parse_param(name, spec, reference, backbone=None) -> _Param:
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


class _Missing:
    def __repr__(self):
        return "<missing>"


_MISSING = _Missing()


def _fixed(name, value, backbone=None):
    if isinstance(value, list):
        value = tuple(value)
    return _Param(name, "fixed", default=value, backbone=backbone, codec=_codec_for([value]))


def _choice(name, values, reference, default, backbone=None):
    values = _unify_numbers([tuple(v) if isinstance(v, list) else v for v in values])
    unique = []
    for v in values:
        if v not in unique:
            unique.append(v)
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
    for label, v in (("min", low), ("max", high), ("step", step)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
            raise ValueError(f"Range {label} of {name!r} must be a number; Received: {v!r}")
    if sampling not in ("linear", "log", "reverse_log"):
        raise ValueError(
            f"Range sampling of {name!r} must be 'linear', 'log' or 'reverse_log'; "
            f"Received: {sampling!r}"
        )
    if not low < high:
        raise ValueError(f"Range of {name!r} needs min < max; Received: ({low!r}, {high!r})")
    if sampling != "linear" and low <= 0:
        raise ValueError(f"A {sampling} range of {name!r} needs min > 0; Received: min={low!r}")
    integer = all(isinstance(v, numbers.Integral) for v in (low, high) if v is not None) and (
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
    if integer:
        return _Param(
            name, "int", low=int(low), high=int(high), step=None if step is None else int(step),
            sampling=sampling, default=int(default), backbone=backbone,
        )
    return _Param(
        name, "float", low=float(low), high=float(high), step=None if step is None else float(step),
        sampling=sampling, default=float(default), backbone=backbone,
    )


def _small_images(input_shape) -> bool:
    return max(input_shape[:2]) <= 64


def _image_sizes(backbone, input_shape, pretrained):
    """Image sizes worth trying for a backbone: 32/64 for small images from scratch, else the
    registry's sizes between half the default and the default (plus the sizes with weights)."""
    spec = backbone_info(backbone)
    if not pretrained and _small_images(input_shape):
        sizes = {max(spec.min_size, 32), max(spec.min_size, 64)}
        default = max(spec.min_size, 32)  # what recipes.train picks for small images
    else:
        sizes = {max(spec.min_size, spec.default_size // 2), spec.default_size}
        if pretrained:
            sizes |= {s for s in spec.weight_sizes if s >= spec.min_size}
        default = spec.default_size
    return sorted(sizes), default


def _default_space(backbones, data, base: Recipe, fine_tuning: bool) -> dict:
    """The default search space as user-format entries (each with a sensible default)."""
    from .training import OPTIMIZERS

    lr_default = base.learning_rate or (1e-3 if fine_tuning else OPTIMIZERS.get(base.optimizer, 5e-3))
    space = {
        "learning_rate": {
            "min": 1e-5 if fine_tuning else 1e-4, "max": 1e-2 if fine_tuning else 0.3,
            "sampling": "log", "default": lr_default,
        },
        "optimizer": {"values": ["adam", "sgd", "adamw", "rmsprop", "adagrad"]},
        "dropout": {"min": 0.0, "max": 0.5, "step": 0.1, "default": base.dropout},
        "l2": {"values": [0.0, 1e-5, 1e-4, 1e-3]},
        "augmentation": {"values": [None, "light", "medium"]},
        "label_smoothing": {"min": 0.0, "max": 0.2, "step": 0.05, "default": base.label_smoothing},
        "schedule": {"values": ["cosine", "constant", "onecycle", "step"]},
        "batch_size": {"values": sorted({32, 64, 128, data.batch_size})},
    }
    if fine_tuning:
        space["unfreeze"] = {"values": ["top:10%", "top:30%", "top:60%", "all"]}
    return space


def _check_value(name, value, base: Recipe, backbones):
    """Raises the owning module's clear error for a candidate value that cannot work."""
    from .training import _check

    if name == "image_size":
        if value is None:
            return  # the registry's default, per backbone
        for bb in backbones:
            spec = backbone_info(bb)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < spec.min_size:
                raise ValueError(
                    f"image_size must be an int >= {spec.min_size} for {bb}; Received: image_size={value!r}"
                )
        return
    if name == "alpha" and value is not None:
        from .registry import validate_alpha

        for bb in backbones:
            spec = backbone_info(bb)
            if spec.alphas:
                validate_alpha(spec, value)
        return
    if name == "augmentation" and value is not None:
        from .augment import augmentation

        augmentation(value)
        return
    if name == "unfreeze":
        from .finetune import check_unfreeze_policy

        check_unfreeze_policy(value)
        return
    _check(base.replace(**{name: value}))


def _closest_first(name, choices):
    return sorted(
        choices, key=lambda c: -difflib.SequenceMatcher(None, str(name).lower(), c).ratio()
    )


def _check_keys(search_space, fixed, fine_tuning):
    for key in search_space:
        if key in _SET_BY_ARGUMENT:
            raise ValueError(
                f"{key!r} is set by search()'s {_SET_BY_ARGUMENT[key]}, not by the search space; "
                f"Received: search_space[{key!r}]"
            )
        if key not in SEARCHABLE_FIELDS:
            raise ValueError(
                f"Unknown search-space key; Received: {key!r}. Valid keys (closest first): "
                + ", ".join(_closest_first(key, SEARCHABLE_FIELDS))
            )
    for key in fixed:
        if key in _SET_BY_ARGUMENT:
            raise ValueError(
                f"{key!r} is set by search()'s {_SET_BY_ARGUMENT[key]}; Received: {key}={fixed[key]!r}"
            )
        if key not in Recipe.field_names():
            hint = closest_matches(key, Recipe.field_names())
            raise ValueError(
                f"Unknown recipe field; Received: {key}={fixed[key]!r}."
                + (f" Did you mean: {', '.join(hint)}?" if hint else "")
                + f" Valid fields: {', '.join(f for f in Recipe.field_names() if f not in _SET_BY_ARGUMENT)}"
            )
        if key in search_space:
            raise ValueError(
                f"{key!r} is both fixed ({key}={fixed[key]!r}) and in search_space; keep one"
            )
    if not fine_tuning:
        for key in [*search_space, *fixed]:
            if key in _FINE_TUNE_ONLY:
                raise ValueError(
                    f"{key!r} applies only when fine-tuning pretrained weights (search(weights=...)); "
                    f"Received: {key} with weights=None"
                )


def _resolve(data, backbones, search_space, fixed, base: Recipe, fine_tuning) -> dict[str, _Param]:
    """The effective space: defaults, overridden by `search_space`, minus the `fixed` fields."""
    search_space = dict(search_space or {})
    _check_keys(search_space, fixed, fine_tuning)
    entries = {
        k: v for k, v in _default_space(backbones, data, base, fine_tuning).items() if k not in fixed
    }
    entries.update(search_space)
    params = {}
    params["backbone"] = _choice("backbone", list(backbones), backbones[0], _MISSING)
    if "image_size" not in entries and "image_size" not in fixed:
        for bb in backbones:
            sizes, default = _image_sizes(bb, data.input_shape, fine_tuning)
            params[f"image_size:{bb}"] = _choice("image_size", sizes, default, _MISSING, backbone=bb)
    for name, spec in entries.items():
        reference = getattr(base, name)
        if name == "learning_rate" and reference is None:
            from .training import OPTIMIZERS

            reference = 1e-3 if fine_tuning else OPTIMIZERS.get(base.optimizer)
        params[name] = _parse_param(name, spec, reference)
    for name, value in fixed.items():
        _check_value(name, value, base, backbones)
    for p in params.values():
        if p.name == "backbone":
            continue
        candidates = p.values if p.kind == "choice" else (
            (p.default,) if p.kind == "fixed" else (p.low, p.high)
        )
        for value in candidates:
            _check_value(p.name, value, base, backbones)
    return params


def resolve_search_space(
    data, *, backbones=("mobilenet_v2",), search_space=None, weights=None, **fixed
) -> dict:
    """The effective search space `search` would use, in the JSON form `search_space` accepts.

    Args:
        data: A `Data` (its image shape and batch size shape the defaults).
        backbones: Backbone names to choose from (default `("mobilenet_v2",)`).
        search_space: Overrides, as for `search`.
        weights: Pretrained weights; adds the fine-tuning parameters (default None).
        **fixed: Recipe fields fixed for every trial (removed from the space).

    Returns:
        `{hyperparameter name: spec}`; conditional image sizes are named `"image_size:<backbone>"`.

    Raises:
        ValueError: Unknown keys (valid ones listed, closest first) or values that cannot work.

    Example:
        >>> space = recipes.resolve_search_space(data, backbones=["mobilenet"], dropout=0.3)
        >>> space["learning_rate"]
        {'min': 0.0001, 'max': 0.3, 'sampling': 'log', 'default': 0.005}
    """
    backbones = _backbone_list(backbones)
    _check_keys(dict(search_space or {}), fixed, weights is not None)
    base = _base_recipe(data, fixed, weights, seed=0, max_epochs=1)
    params = _resolve(data, backbones, search_space, fixed, base, weights is not None)
    return {name: p.to_spec() for name, p in params.items()}


def _backbone_list(backbones) -> list[str]:
    if isinstance(backbones, str):
        backbones = [b for b in backbones.split(",") if b.strip()]
    names = [backbone_info(b.strip() if isinstance(b, str) else b).name for b in backbones]
    if not names:
        raise ValueError("backbones must name at least one backbone; Received: []")
    return list(dict.fromkeys(names))


def _base_recipe(data, fixed, weights, *, seed, max_epochs) -> Recipe:
    from .data import describe_source

    base = Recipe()
    if weights is not None:
        from .finetune import FINE_TUNE_DEFAULTS

        base = base.replace(
            **{k: v for k, v in FINE_TUNE_DEFAULTS.items() if k not in ("weights", "epochs")}
        )
    return base.replace(
        **{"batch_size": data.batch_size, **fixed},
        dataset=data.source or describe_source(data), weights=weights, seed=seed, epochs=max_epochs,
    )


# --------------------------------------------------------------------------------------------
# The HyperModel
# --------------------------------------------------------------------------------------------


def _keras_tuner():
    import keras_tuner

    return keras_tuner


def _direction(objective: str) -> str:
    return "min" if ("loss" in objective or "error" in objective) else "max"


def _rebatch(data, batch_size):
    """The same splits with another training batch size (Data bakes its batch size in)."""
    if batch_size == data.batch_size:
        return data
    import tensorflow as tf

    # Re-batching loses the known length; stating it spares Keras' "ran out of data" warning.
    batches = max(1, -(-int(data.sizes.get("train", 0)) // batch_size))

    def rebatch(ds):
        ds = ds.unbatch().batch(batch_size)
        return ds.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)

    changes = {"train": rebatch(data.train), "batch_size": batch_size}
    make_train = getattr(data, "make_train", None)
    if make_train is not None:
        changes["make_train"] = lambda seed: rebatch(make_train(seed))
    return dataclasses.replace(data, **changes)


class RecipeHyperModel(_keras_tuner().HyperModel):
    """A `keras_tuner.HyperModel` whose hyperparameters are `Recipe` fields.

    `build` makes the classifier with `recipes.build_classifier`; `fit` trains it with
    `recipes.train`, or with the two-phase `recipes.fine_tune` when the recipe has weights, and
    forwards KerasTuner's callbacks (reporting, best-epoch checkpoint, Hyperband's epochs).

    Args:
        data: The `Data` every trial trains and validates on (its test split is never used).
        space: `{hyperparameter name: _Param}` from the search-space resolution.
        base: The `Recipe` every trial starts from (fixed fields, seed, max epochs).
        isolate: Train each trial in a fresh Python process (default False).
        verbose: Keras `fit` verbosity inside trials (default 0).
        work_dir: Folder for the isolated trials' data file (default: none; needed with isolate).

    Example:
        >>> hm = RecipeHyperModel(data, space, Recipe(epochs=2))
        >>> tuner = keras_tuner.RandomSearch(hm, objective="val_accuracy", max_trials=3)
    """

    def __init__(self, data, space, base: Recipe, *, isolate=False, verbose=0, work_dir=None):
        super().__init__(name="recipe")
        self.data = data
        self.space = space
        self.base = base
        self.isolate = isolate
        self.verbose = verbose
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.objective = "val_accuracy"
        self._execution = 0
        self.last = {}

    # The space is declared up front with conditions attached (`parent_name`) rather than through
    # `hp.conditional_scope` inside `build`: KerasTuner then needs a single build to learn it.
    def declare_hyperparameters(self, hp):
        for param in self.space.values():
            param.declare(hp)

    def recipe(self, values: dict) -> Recipe:
        """The `Recipe` a trial's hyperparameter values stand for (`tuner/*` entries ignored)."""
        changes = {}
        for param in self.space.values():
            if param.backbone is None:
                changes[param.name] = param.decode(values.get(param.hp_name, param.encode(param.default)))
        backbone = changes.get("backbone", self.base.backbone)
        sized = self.space.get(f"image_size:{backbone}")
        if sized is not None:
            changes["image_size"] = sized.decode(values.get(sized.hp_name, sized.encode(sized.default)))
        spec = backbone_info(backbone)
        recipe = self.base.replace(**changes)
        if not spec.alphas and recipe.alpha is not None:
            recipe = recipe.replace(alpha=None)  # a width multiplier fixed for MobileNets only
        if recipe.image_size is None:
            _, default = _image_sizes(backbone, self.data.input_shape, recipe.weights is not None)
            recipe = recipe.replace(image_size=default)
        if "tuner/epochs" in values:
            recipe = recipe.replace(epochs=int(values["tuner/epochs"]))
        return recipe

    def build(self, hp):
        from .builder import build_classifier

        if not hp.space:
            self.declare_hyperparameters(hp)
        recipe = self.recipe(hp.values)
        return build_classifier(
            recipe.backbone, self.data.num_classes, input_shape=self.data.input_shape,
            **recipe.build_kwargs(),
        )

    def begin_trial(self):
        """Resets the per-trial state (execution count, last results)."""
        self._execution = 0
        self.last = {}

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, verbose=None, **kwargs):
        """Trains one execution of a trial; returns a `keras.callbacks.History` of its epochs.

        Hyperband passes `epochs` (the trial's total) and `initial_epoch` (epochs already trained
        by the trial it continues, whose weights KerasTuner loaded into `model`): the remaining
        epochs run with a fresh optimizer and schedule, without warmup or a fine-tuning head phase.

        Raises:
            keras_tuner.errors.FailedTrialError: NaN/inf loss, out of memory, or a recipe that
                cannot be built or trained (the trial is marked failed, the search goes on).
            keras_tuner.errors.FatalValueError: The objective is not among the trial's metrics.
        """
        import keras

        kt = _keras_tuner()
        if args or kwargs:
            raise kt.errors.FatalValueError(
                f"RecipeHyperModel.fit takes no data arguments (the data is fixed at construction); "
                f"Received: {len(args)} positional, keywords {sorted(kwargs)}"
            )
        callbacks = list(callbacks or [])
        recipe = self.recipe(hp.values)
        total = int(epochs) if epochs is not None else recipe.epochs
        run = recipe.replace(
            epochs=max(1, total - int(initial_epoch)),
            # Executions of one trial must differ, or averaging them would measure nothing.
            seed=recipe.seed + self._execution,
            # KerasTuner scores and checkpoints the epoch-end weights; statistics recomputed after
            # fit would change neither, only cost time (retrain keeps the recipe's setting).
            precise_bn=False,
        )
        if initial_epoch:
            run = run.replace(warmup_epochs=0, head_epochs=0)
        run = run.replace(warmup_epochs=min(run.warmup_epochs, run.epochs - 1))
        self._execution += 1
        try:
            if self.isolate:
                history = self._fit_isolated(run, model, callbacks, continued=bool(initial_epoch))
            else:
                history = self._fit_here(run, model, callbacks)
        except kt.errors.FailedTrialError:
            raise
        except MemoryError as exc:
            raise kt.errors.FailedTrialError(f"Out of memory: {exc}") from exc
        except ValueError as exc:
            # A recipe that cannot be built or trained fails the same way on every retry.
            raise kt.errors.FailedTrialError(f"Invalid recipe: {exc}") from exc
        except Exception as exc:
            if type(exc).__name__ == "ResourceExhaustedError":
                raise kt.errors.FailedTrialError(
                    f"Out of memory: {str(exc).splitlines()[0][:300]}"
                ) from exc
            raise
        n = len(next(iter(history.values()), []))
        self.last = {"epochs": n, "objective": None}
        _check_finite(history, run)
        if self.objective not in history:
            raise kt.errors.FatalValueError(
                f"The objective {self.objective!r} is not a metric of this model; Received "
                f"metrics: {', '.join(k for k in history if k != 'learning_rate')}"
            )
        values = [v for v in history[self.objective] if math.isfinite(v)]
        if values:
            self.last["objective"] = (min if _direction(self.objective) == "min" else max)(values)
        result = keras.callbacks.History()
        result.history = history
        result.epoch = list(range(n))
        return result

    def _fit_here(self, recipe, model, callbacks):
        data = dataclasses.replace(_rebatch(self.data, recipe.batch_size), test=None)
        if recipe.weights is not None:
            from .finetune import fine_tune

            result = fine_tune(model, data, recipe=recipe, callbacks=callbacks, verbose=self.verbose)
        else:
            from .training import train

            result = train(model, data, recipe=recipe, callbacks=callbacks, verbose=self.verbose)
        return result.history

    def _fit_isolated(self, recipe, model, callbacks, continued):
        checkpoint = next(
            (cb.filepath for cb in callbacks if type(cb).__name__ == "SaveBestEpoch"), None
        )
        if checkpoint is None or self.work_dir is None:
            raise RuntimeError("isolate=True needs KerasTuner's checkpoint callback and a work_dir")
        trial_dir = Path(checkpoint).parent
        init = None
        if continued:
            # KerasTuner loaded the continued trial's weights into `model`; hand them over.
            init = trial_dir / "initial.weights.h5"
            model.save_weights(str(init))
        job = {
            "recipe": recipe.to_dict(),
            "data": str(self._isolated_data()),
            "checkpoint": str(checkpoint),
            "initial_weights": None if init is None else str(init),
            "objective": self.objective,
            "direction": _direction(self.objective),
            "verbose": self.verbose,
            "result": str(trial_dir / "isolated_result.json"),
        }
        job_file = trial_dir / "isolated_job.json"
        job_file.write_text(json.dumps(job, indent=2, default=str))
        Path(job["result"]).unlink(missing_ok=True)
        log = trial_dir / "isolated.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
        with open(log, "w") as out:
            code = subprocess.call(
                [sys.executable, "-c", _CHILD, str(job_file)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        result_file = Path(job["result"])
        if not result_file.is_file():
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            kt = _keras_tuner()
            raise kt.errors.FailedTrialError(
                f"Isolated trial process exited with code {code} (killed for memory?) without a "
                f"result; log {log}: {' | '.join(tail)}"
            )
        result = json.loads(result_file.read_text())
        if result.get("error"):
            kt = _keras_tuner()
            if result.get("kind") in ("value", "memory"):
                raise kt.errors.FailedTrialError(result["error"])
            raise RuntimeError(result["error"])
        return result["history"]

    def _isolated_data(self) -> Path:
        """Writes the train/validation splits once, so every child sees exactly this data."""
        import numpy as np

        path = self.work_dir / "isolated_data.npz"
        if path.is_file():
            return path
        arrays = {}
        for split in ("train", "validation"):
            ds = getattr(self.data, split)
            xs, ys = [], []
            for x, y in ds if ds is not None else []:
                xs.append(np.asarray(x))
                ys.append(np.asarray(y))
            arrays[f"x_{split}"] = np.concatenate(xs) if xs else np.zeros((0, *self.data.input_shape), "uint8")
            arrays[f"y_{split}"] = np.concatenate(ys) if ys else np.zeros((0,), "int32")
        meta = {
            "class_names": list(self.data.class_names), "input_shape": list(self.data.input_shape),
            "source": self.data.source,
        }
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)
        return path


def _check_finite(history: dict, recipe: Recipe):
    kt = _keras_tuner()
    for key in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(key, [])):
            if not math.isfinite(value):
                raise kt.errors.FailedTrialError(
                    f"{key} became {value} in epoch {epoch + 1} (optimizer={recipe.optimizer}, "
                    f"learning_rate={recipe.learning_rate}); the trial is marked failed"
                )


# --------------------------------------------------------------------------------------------
# Isolated trials: the child process
# --------------------------------------------------------------------------------------------


class _SaveBest:
    """Keras callback (built lazily) that saves the weights of the best epoch, like KerasTuner's."""

    @staticmethod
    def make(filepath, objective, direction):
        import keras

        class SaveBest(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best = -math.inf if direction == "max" else math.inf

            def on_epoch_end(self, epoch, logs=None):
                value = (logs or {}).get(objective)
                if value is None or not math.isfinite(value):
                    return
                if (value > self.best) if direction == "max" else (value < self.best):
                    self.best = value
                    self.model.save_weights(filepath)

        return SaveBest()


def _arrays_data(path, batch_size, seed):
    import numpy as np
    import tensorflow as tf

    from .data import Data

    npz = np.load(path)
    meta = json.loads(str(npz["meta"]))

    def pipeline(x, y, shuffle, shuffle_seed):
        if len(y) == 0:
            return None
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        if shuffle:
            ds = ds.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    x_train, y_train = npz["x_train"], npz["y_train"]
    changes = {}
    if "make_train" in {f.name for f in dataclasses.fields(Data)}:
        changes["make_train"] = lambda s: pipeline(x_train, y_train, True, s)
    return Data(
        train=pipeline(x_train, y_train, True, seed),
        validation=pipeline(npz["x_validation"], npz["y_validation"], False, None),
        test=None,
        class_names=meta["class_names"],
        input_shape=tuple(meta["input_shape"]),
        source=meta["source"],
        sizes={"train": len(y_train), "validation": len(npz["y_validation"])},
        batch_size=batch_size,
        **changes,
    )


def _run_trial_file(job_file) -> int:
    """Entry point of an isolated trial: trains the job's recipe, writes its history as JSON."""
    job = json.loads(Path(job_file).read_text())
    out = Path(job["result"])
    try:
        from .builder import build_classifier

        recipe = Recipe.from_dict(job["recipe"])
        data = _arrays_data(job["data"], recipe.batch_size, recipe.seed)
        model = build_classifier(
            recipe.backbone, data.num_classes, input_shape=data.input_shape, **recipe.build_kwargs()
        )
        if job["initial_weights"]:
            model.load_weights(job["initial_weights"])
        callbacks = [_SaveBest.make(job["checkpoint"], job["objective"], job["direction"])]
        if recipe.weights is not None:
            from .finetune import fine_tune

            result = fine_tune(model, data, recipe=recipe, callbacks=callbacks, verbose=job["verbose"])
        else:
            from .training import train

            result = train(model, data, recipe=recipe, callbacks=callbacks, verbose=job["verbose"])
        payload = {"history": result.history}
    except (ValueError, MemoryError) as exc:
        payload = {"error": f"{type(exc).__name__}: {exc}", "kind": "value" if isinstance(exc, ValueError) else "memory"}
    except Exception as exc:  # reported to the parent, which decides whether the trial is retried
        kind = "memory" if type(exc).__name__ == "ResourceExhaustedError" else "other"
        payload = {"error": f"{type(exc).__name__}: {str(exc)[:2000]}", "kind": kind}
    out.write_text(json.dumps(payload, default=float))
    return 0


# --------------------------------------------------------------------------------------------
# The tuner (KerasTuner's, plus a progress line and a per-trial record)
# --------------------------------------------------------------------------------------------


class _TrialRecords:
    """Mixed into KerasTuner's tuner classes: per-trial timing/epochs file and a progress line."""

    progress = True

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_started = time.time()
        self.hypermodel.begin_trial()

    def on_trial_end(self, trial):
        import keras

        seconds = time.time() - getattr(self, "_trial_started", time.time())
        last = dict(self.hypermodel.last)
        info = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            "seconds": round(seconds, 1),
            "epochs": last.get("epochs"),
            "objective": last.get("objective"),
            "tuner_id": self.tuner_id,
            "message": _last_line(trial.message) if trial.status != "COMPLETED" else "",
            "recipe": _jsonable(self.hypermodel.recipe(trial.hyperparameters.values).to_dict()),
        }
        Path(self.get_trial_dir(trial.trial_id), _TRIAL_INFO).write_text(json.dumps(info, indent=2))
        if self.progress:
            print(_progress_line(self, trial, info), flush=True)
        try:
            super().on_trial_end(trial)
        finally:
            # KerasTuner clears the session before the next build; clearing here as well frees
            # the finished trial's graphs and datasets before the oracle picks the next one.
            keras.backend.clear_session()
            gc.collect()


def _progress_line(tuner, trial, info) -> str:
    hm = tuner.hypermodel
    objective = hm.objective
    best = _best_on_disk(Path(tuner.project_dir), objective)
    value = info["objective"]
    parts = [f"[{info['tuner_id']}] trial {trial.trial_id} {trial.status:<9}"]
    parts.append(f"{objective}={value:.4f}" if value is not None else f"{objective}=-")
    if best is not None:
        parts.append(f"best={best:.4f}")
    parts.append(f"epochs={info['epochs'] if info['epochs'] is not None else '-'}")
    parts.append(f"{info['seconds']:.1f}s")
    searched = _searched_values(hm.space, trial.hyperparameters.values)
    text = " ".join(parts) + (" | " + " ".join(f"{k}={_fmt(v)}" for k, v in searched.items()) if searched else "")
    if trial.status != "COMPLETED" and trial.message:
        text += f" | {_last_line(trial.message)}"
    return text


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _last_line(message) -> str:
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _searched_values(space, values) -> dict:
    """The trial's values of the non-fixed parameters, with conditional image sizes merged."""
    out = {}
    for p in space.values():
        if p.kind == "fixed" or p.hp_name not in values:
            continue
        out[p.name] = p.decode(values[p.hp_name])
    return out


def _best_on_disk(project_dir: Path, objective) -> float | None:
    best = None
    better = (lambda a, b: a < b) if _direction(objective) == "min" else (lambda a, b: a > b)
    for info_file in project_dir.glob(f"trial_*/{_TRIAL_INFO}"):
        try:
            info = json.loads(info_file.read_text())
        except (OSError, ValueError):
            continue
        value = info.get("objective")
        if info.get("status") == "COMPLETED" and value is not None and (best is None or better(value, best)):
            best = value
    return best


def _tuner_class(name):
    kt = _keras_tuner()
    base = getattr(kt, TUNERS[name])
    return type(f"Recipe{base.__name__}", (_TrialRecords, base), {})


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def _role() -> str:
    """"chief", "worker" or "single", from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _dataset_tag(dataset) -> str:
    import re

    tag = re.sub(r"[^A-Za-z0-9]+", "_", str(dataset).rstrip("/").split("/")[-1]).strip("_")
    return tag or "data"


def _data_summary(data) -> dict:
    return {
        "source": data.source, "sizes": dict(data.sizes), "classes": len(data.class_names),
        "input_shape": list(data.input_shape),
    }


def _diff(saved, now, prefix="") -> list[str]:
    out = []
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now), key=str):
            if key not in saved:
                out.append(f"{prefix}{key}: not set before, now {now[key]!r}")
            elif key not in now:
                out.append(f"{prefix}{key}: was {saved[key]!r}, now not set")
            else:
                out += _diff(saved[key], now[key], f"{prefix}{key}.")
        return out
    if saved != now:
        out.append(f"{prefix.rstrip('.')}: was {saved!r}, now {now!r}")
    return out


# Arguments that may change between runs of one project: they do not change what a trial means.
_MAY_CHANGE = ("max_trials", "max_consecutive_failed_trials", "isolate")


def _check_project(project_dir: Path, args: dict, role: str):
    """Refuses to resume a project whose stored arguments differ (KerasTuner would ignore them)."""
    args_file = project_dir / _ARGS_FILE
    if not args_file.is_file():
        if role != "worker" and (project_dir / "oracle.json").is_file():
            raise ValueError(
                f"{project_dir} holds a KerasTuner project without {_ARGS_FILE} (not started by "
                "recipes.search, or by an older version), so its arguments cannot be checked. "
                "Pass overwrite=True (CLI: --overwrite) to start over, or use another project_name."
            )
        return
    saved = json.loads(args_file.read_text())
    keep = {k: v for k, v in saved.items() if k not in _MAY_CHANGE}
    now = {k: v for k, v in _jsonable(args).items() if k not in _MAY_CHANGE}
    differences = _diff(keep, now)
    if differences:
        raise ValueError(
            f"The search in {project_dir} was started with different arguments, and KerasTuner "
            f"would silently keep the old ones. Differences: {'; '.join(differences[:8])}"
            + (f" (and {len(differences) - 8} more)" if len(differences) > 8 else "")
            + ". Re-run with the original arguments to resume it, pass overwrite=True (CLI: "
            "--overwrite) to delete it and start over, or choose another project_name."
        )


def search(
    data,
    *,
    backbones=("mobilenet_v2",),
    tuner="hyperband",
    max_trials=20,
    max_epochs=10,
    objective="val_accuracy",
    search_space=None,
    weights=None,
    directory="tuning",
    project_name=None,
    overwrite=False,
    executions_per_trial=1,
    seed=0,
    isolate=False,
    callbacks=(),
    tuner_options=None,
    max_consecutive_failed_trials=3,
    verbose=0,
    progress=True,
    **fixed,
) -> SearchResult:
    """Searches recipes (backbone, image size, learning rate, ...) with a KerasTuner tuner.

    Default search space (each with a default value, which grid search tries first):
    `backbone` (from `backbones`), `image_size` (per backbone, from the registry: 32/64 for small
    images from scratch, else half the default size to the default plus the sizes with weights),
    `learning_rate` (log range), `optimizer` (adam/sgd/adamw/rmsprop/adagrad), `dropout` (0-0.5),
    `l2`, `augmentation` (None/"light"/"medium"), `label_smoothing` (0-0.2), `schedule`,
    `batch_size` and, only when fine-tuning, `unfreeze`. Fields passed in `**fixed` leave the space.

    `search_space` entries override or fix any `Recipe` field (see `SEARCHABLE_FIELDS`):
    a list is a choice, a tuple `(min, max)` / `(min, max, "log")` / `(min, max, step)` a range, a
    single value fixes it, and a dict says the same in JSON form (`{"values": [...], "default": x}`,
    `{"min": a, "max": b, "sampling": "log", "step": s, "default": x}`, `{"value": x}`).

    Re-running with the same `directory` and `project_name` resumes: finished trials are kept, an
    interrupted one restarts from its first epoch (KerasTuner #439). Arguments that differ from the
    stored ones raise (only `max_trials`, `max_consecutive_failed_trials` and `isolate` may change).

    Distributed search uses KerasTuner's own mechanism: set `KERASTUNER_TUNER_ID` ("chief" runs
    the oracle and blocks until the search is done; any other id is a worker),
    `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` before calling (the `recipes tune --chief /
    --worker` CLI does this). Every process must pass the same arguments. Workers write trial
    checkpoints into their own `directory`: use a shared folder for `best_model()` on the chief.

    Args:
        data: A `Data` from `load_data` (or a source for it, loaded with the fixed batch size and
            splits). Trials train on `train` and are scored on `validation`; `test` is never used.
        backbones: Backbone names (or one comma-separated string) to choose from (default
            `("mobilenet_v2",)`).
        tuner: `"random"`, `"grid"`, `"bayesian"` or `"hyperband"` (default).
        max_trials: Most trials to run (default 20; with Hyperband a continued trial counts too,
            and None runs full Hyperband iterations).
        max_epochs: Epochs per trial; Hyperband's maximum (default 10).
        objective: Metric to optimize (default `"val_accuracy"`; a name with "loss" is minimized).
        search_space: Overrides of the default space (default None).
        weights: Pretrained backbone weights (`"imagenet"` or a file from `save_backbone`): every
            trial fine-tunes in two phases with `recipes.fine_tune` (default None: from scratch).
        directory: Folder of tuning projects (default `"tuning"`).
        project_name: Project folder (default `"<dataset>_<tuner>"`).
        overwrite: Delete an existing project and start over (default False).
        executions_per_trial: Trainings per trial, with seeds `seed`, `seed + 1`, ...; the
            objective is their mean (default 1).
        seed: Seed of the oracle and of every trial's training (default 0).
        isolate: Train every trial in a fresh Python process (default False). Memory cannot grow
            across trials, at the price of a Python/TensorFlow start-up per trial; the splits are
            written once to `<project>/isolated_data.npz`; `callbacks` cannot be used.
        callbacks: Extra Keras callbacks for every trial's fit (deep-copied per trial by KerasTuner).
        tuner_options: Extra arguments of the KerasTuner tuner, e.g. `{"factor": 2}` (Hyperband),
            `{"num_initial_points": 3}` (Bayesian), `{"max_retries_per_trial": 1}`.
        max_consecutive_failed_trials: Failed trials in a row that stop the search (default 3).
        verbose: Keras `fit` verbosity inside trials (default 0).
        progress: Print one line per finished trial (default True).
        **fixed: `Recipe` fields fixed for every trial (e.g. `optimizer="sgd"`, `alpha=0.25`).

    Returns:
        A `SearchResult`. Also written: `<project>/results.csv`, `results.png` and
        `best_recipe.json` (not by workers, which return once no trial is left for them).

    Raises:
        ValueError: Unknown tuner, backbone, search-space key or fixed field (closest listed), a
            value that cannot work, or a resumed project whose arguments differ.
        SearchFailedError: `max_consecutive_failed_trials` trials failed in a row.

    Example:
        >>> data = recipes.load_data("digits", batch_size=64)
        >>> result = recipes.search(data, backbones=["mobilenet"], tuner="random", max_trials=5,
        ...                         max_epochs=3, alpha=0.25, search_space={"optimizer": "sgd"})
        >>> result.best_recipe.learning_rate, result.table()[0]["status"]
    """
    from .data import Data, load_data

    if tuner not in TUNERS:
        hint = closest_matches(str(tuner), TUNERS)
        raise ValueError(
            f"Unknown tuner; Received: tuner={tuner!r}."
            + (f" Did you mean: {', '.join(hint)}?" if hint else "")
            + f" Allowed: {', '.join(TUNERS)}"
        )
    for name, value, low in (
        ("max_epochs", max_epochs, 1), ("executions_per_trial", executions_per_trial, 1),
        ("max_consecutive_failed_trials", max_consecutive_failed_trials, 1), ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an int >= {low}; Received: {name}={value!r}")
    if max_trials is not None and (
        isinstance(max_trials, bool) or not isinstance(max_trials, numbers.Integral) or max_trials < 1
    ):
        raise ValueError(f"max_trials must be an int >= 1 or None; Received: max_trials={max_trials!r}")
    if max_trials is None and tuner != "hyperband":
        raise ValueError(f"max_trials=None is only for tuner='hyperband'; Received: tuner={tuner!r}")
    if isolate and callbacks:
        raise ValueError(
            "callbacks cannot reach trials running in their own process; drop them or isolate=False"
        )
    backbones = _backbone_list(backbones)
    _check_keys(dict(search_space or {}), fixed, weights is not None)
    if not isinstance(data, Data):
        defaults = Recipe().replace(**{k: v for k, v in fixed.items() if k in Recipe.field_names()})
        data = load_data(
            data, batch_size=defaults.batch_size, validation_split=defaults.validation_split,
            test_split=defaults.test_split, seed=seed,
        )
    if data.validation is None and objective.startswith("val_"):
        raise ValueError(
            f"objective {objective!r} needs a validation split; Received: data without one "
            "(load it with validation_split > 0)"
        )
    base = _base_recipe(data, fixed, weights, seed=int(seed), max_epochs=int(max_epochs))
    space = _resolve(data, backbones, search_space, fixed, base, weights is not None)

    role = _role()
    directory = Path(directory)
    if project_name is None:
        project_name = f"{_dataset_tag(base.dataset)}_{tuner}"
    project_dir = directory / project_name
    args = {
        "tuner": tuner, "objective": objective, "max_epochs": int(max_epochs),
        "backbones": backbones, "weights": None if weights is None else str(weights),
        "seed": int(seed), "executions_per_trial": int(executions_per_trial),
        "tuner_options": dict(tuner_options or {}), "fixed": _jsonable(fixed),
        "search_space": {name: p.to_spec() for name, p in space.items()},
        "data": _data_summary(data), "max_trials": max_trials,
        "max_consecutive_failed_trials": int(max_consecutive_failed_trials), "isolate": bool(isolate),
    }
    if overwrite and role != "worker" and project_dir.exists():
        shutil.rmtree(project_dir)
    _check_project(project_dir, args, role)
    if role != "worker":
        project_dir.mkdir(parents=True, exist_ok=True)
        (project_dir / _ARGS_FILE).write_text(json.dumps(_jsonable(args), indent=2) + "\n")

    hypermodel = RecipeHyperModel(
        data, space, base, isolate=isolate, verbose=verbose, work_dir=project_dir
    )
    hypermodel.objective = objective
    kt = _keras_tuner()
    options = dict(tuner_options or {})
    kwargs = dict(
        objective=kt.Objective(objective, _direction(objective)),
        # KerasTuner treats seed=0 as "no seed" (`seed or random.randint(...)`).
        seed=int(seed) + 1,
        max_consecutive_failed_trials=int(max_consecutive_failed_trials),
        executions_per_trial=int(executions_per_trial),
        directory=str(directory), project_name=project_name,
        overwrite=False,  # done above, so the stored arguments survive
    )
    if tuner == "hyperband":
        kwargs["max_epochs"] = int(max_epochs)
    else:
        kwargs["max_trials"] = max_trials
    kwargs.update(options)
    tuner_obj = _tuner_class(tuner)(hypermodel, **kwargs)
    tuner_obj.progress = progress
    if tuner == "hyperband" and role != "worker":
        # Hyperband's constructor takes no max_trials, its oracle honours one.
        tuner_obj.oracle.max_trials = max_trials
    result = SearchResult(project_dir, tuner_obj, hypermodel, data, args, role=role)
    try:
        tuner_obj.search(callbacks=list(callbacks), verbose=0)
    except RuntimeError as exc:
        if not str(exc).startswith("Number of consecutive failures"):
            raise
        if role != "worker":
            result.save_table()
        rows = [r for r in result.table() if r["status"] not in ("COMPLETED",)]
        last = rows[-1]["message"] if rows else _last_line(exc)
        raise SearchFailedError(
            f"Search stopped: {max_consecutive_failed_trials} trial(s) in a row failed "
            f"(max_consecutive_failed_trials={max_consecutive_failed_trials}). Last error: {last}. "
            f"Every trial: {project_dir / 'results.csv'}. Fix the cause and re-run to continue, "
            "or allow more failures."
        ) from None
    if role != "worker":
        result.save_table()
    return result


# --------------------------------------------------------------------------------------------
# SearchResult
# --------------------------------------------------------------------------------------------


class SearchResult:
    """What `search` returns: every trial, the best recipe and model, and follow-ups.

    All trial information is read from the project folder, so a result on one worker of a
    distributed search (or after the chief has exited) needs no connection to the oracle.

    Attributes:
        project_dir: The KerasTuner project folder.
        tuner: The KerasTuner tuner (for anything this class does not cover).
        args: The search arguments stored in `search_args.json`.

    Example:
        >>> result = recipes.search(data, backbones=["mobilenet"], tuner="random", max_trials=3)
        >>> result.best_recipe.save("best.json")   # recipes train --recipe best.json
        >>> model = result.best_model()
        >>> final = result.retrain(epochs=10)       # train + validation, from scratch
    """

    def __init__(self, project_dir, tuner, hypermodel, data, args, role="single"):
        self.project_dir = Path(project_dir)
        self.tuner = tuner
        self.hypermodel = hypermodel
        self.args = args
        self.role = role
        self._data = data

    @property
    def objective(self) -> str:
        """The metric optimized."""
        return self.args["objective"]

    def _trials(self):
        out = []
        for trial_file in sorted(self.project_dir.glob("trial_*/trial.json")):
            try:
                state = json.loads(trial_file.read_text())
            except (OSError, ValueError):
                continue  # being written by another process
            info_file = trial_file.parent / _TRIAL_INFO
            info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            out.append((state, info))
        return out

    def table(self) -> list[dict]:
        """Every trial as a dict: trial, status, objective, the searched values, epochs, seconds.

        Returns:
            One dict per trial in trial order; `status` is KerasTuner's (`COMPLETED`, `FAILED`,
            `INVALID`, `RUNNING`); the objective is None unless completed; Hyperband adds
            `total_epochs` and `continues` (the trial whose weights it started from); `message`
            is the last line of a failure.
        """
        rows = []
        hyperband = self.args["tuner"] == "hyperband"
        for state, info in self._trials():
            values = state.get("hyperparameters", {}).get("values", {})
            status = state.get("status")
            if status == "RUNNING" and info.get("status") in ("FAILED", "INVALID"):
                status = "FAILED"  # the oracle stopped the search before recording it
            score = state.get("score")
            row = {
                "trial": state.get("trial_id"),
                "status": status,
                self.objective: score if status == "COMPLETED" else None,
            }
            row.update(_searched_values(self.hypermodel.space, values))
            row["epochs"] = info.get("epochs")
            if hyperband:
                row["total_epochs"] = values.get("tuner/epochs")
                row["continues"] = values.get("tuner/trial_id", "")
            row["seconds"] = info.get("seconds")
            row["worker"] = info.get("tuner_id")
            message = _last_line(state.get("message")) or info.get("message", "")
            row["message"] = message if status != "COMPLETED" else ""
            rows.append(row)
        return rows

    def _best(self):
        direction = _direction(self.objective)
        best = None
        for state, _ in self._trials():
            score = state.get("score")
            if state.get("status") != "COMPLETED" or score is None or not math.isfinite(score):
                continue
            if best is None or (score < best[0]["score"] if direction == "min" else score > best[0]["score"]):
                best = (state, _)
        if best is None:
            raise ValueError(f"No completed trial in {self.project_dir} yet")
        return best[0]

    @property
    def best_trial_id(self) -> str:
        """Id of the best completed trial."""
        return self._best()["trial_id"]

    @property
    def best_score(self) -> float:
        """The best trial's objective value (its best epoch)."""
        return float(self._best()["score"])

    @property
    def best_hyperparameters(self) -> dict:
        """The best trial's searched values, by `Recipe` field name."""
        return _searched_values(self.hypermodel.space, self._best()["hyperparameters"]["values"])

    @property
    def best_recipe(self) -> Recipe:
        """The `Recipe` of the best trial (its total epochs; `recipes train --recipe` redoes it)."""
        return self.hypermodel.recipe(self._best()["hyperparameters"]["values"])

    def best_model(self):
        """The best trial's model at its best epoch, reloaded from KerasTuner's checkpoint.

        Returns:
            A compiled `keras.Model` (the best recipe's loss and metrics), so `evaluate` works.

        Raises:
            ValueError: No completed trial, or its checkpoint is not in this project folder (in a
                distributed search without a shared folder it is on the worker that ran it).
        """
        from keras_tuner.engine.trial import Trial

        from .training import compile_classifier, make_optimizer

        state = self._best()
        trial_dir = self.project_dir / f"trial_{state['trial_id']}"
        if not any(trial_dir.glob("checkpoint*")):
            raise ValueError(
                f"No checkpoint for trial {state['trial_id']} in {trial_dir}; in a distributed "
                "search it is written on the worker that ran the trial (use a shared directory)."
            )
        trial = Trial.load(str(trial_dir / "trial.json"))
        model = self.tuner.load_model(trial)
        recipe = self.best_recipe
        compile_classifier(
            model, self._data.num_classes,
            optimizer=make_optimizer(recipe.optimizer, recipe.learning_rate, momentum=recipe.momentum),
            label_smoothing=recipe.label_smoothing, mixing=bool(recipe.mixup or recipe.cutmix),
        )
        return model

    def retrain(self, data=None, *, epochs=None, out=None, verbose="auto"):
        """Trains the best recipe from scratch on train + validation and evaluates on test.

        The result differs from `best_model()` (KerasTuner #689, #1020) because it is a different
        run: more data (validation joins training), all `epochs` with the schedule planned for
        them rather than a checkpoint at the best epoch, precise BatchNorm statistics when the
        recipe asks for them, a fresh start where Hyperband continued a trial from another's
        weights with a new optimizer, and another random order. Judge it on the test split, which
        the search never saw.

        Args:
            data: The `Data` (default: the search's).
            epochs: Epochs (default: the best trial's total epochs).
            out: Run folder for `recipes.train` (default: none).
            verbose: Keras `fit` verbosity (default "auto").

        Returns:
            A `recipes.Result` (test metrics in `.metrics`).

        Example:
            >>> final = result.retrain(epochs=20, out="runs/best")
            >>> final.metrics["test_accuracy"]
        """
        recipe = self.best_recipe
        if epochs is not None:
            recipe = recipe.replace(epochs=epochs)
        # Without a validation split there is nothing to stop early on.
        recipe = recipe.replace(patience=None)
        # Re-batched to the winning trial's batch size: its learning rate was tuned for it.
        base = _rebatch(data if data is not None else self._data, recipe.batch_size)
        full = _with_validation_in_train(base, recipe.seed)
        if recipe.weights is not None:
            from .finetune import fine_tune

            return fine_tune(recipe.backbone, full, recipe=recipe, out=out, verbose=verbose)
        from .training import train

        return train(recipe.backbone, full, recipe=recipe, out=out, verbose=verbose)

    def refined_search_space(self, factor=3) -> dict:
        """A narrower space around the best trial: ranges shrunk `factor` times, choices fixed.

        A log range keeps `factor`-th of its log-width, centred on the best value (moved inside
        the original bounds); linear ranges likewise; choices (backbone, optimizer, image size,
        ...) are fixed to the best trial's value.

        Args:
            factor: Shrink factor, > 1 (default 3).

        Returns:
            `{field: spec}` for `search(search_space=...)`; the backbone comes back as
            `"backbone"` (pass it as `backbones=[...]`).
        """
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or factor <= 1:
            raise ValueError(f"factor must be a number > 1; Received: factor={factor!r}")
        values = self._best()["hyperparameters"]["values"]
        best = self.best_recipe
        out = {}
        for p in self.hypermodel.space.values():
            if p.backbone is not None:
                if p.backbone == best.backbone:
                    out["image_size"] = {"value": best.image_size}
                continue
            value = p.decode(values.get(p.hp_name, p.encode(p.default)))
            if p.kind in ("int", "float"):
                out[p.name] = _narrow(p, value, factor)
            else:
                out[p.name] = {"value": _jsonable(value)}
        return out

    def refine(self, data=None, *, factor=3, max_trials=None, tuner=None, project_name=None, **changes):
        """Runs a second, narrower search around the best trial in a new project.

        Args:
            data: The `Data` (default: the search's).
            factor: Shrink factor for ranges (default 3); see `refined_search_space`.
            max_trials: Default: the first search's.
            tuner: Default: the first search's.
            project_name: Default: `"<project>_refined"`.
            **changes: Other `search` arguments to change.

        Returns:
            The second search's `SearchResult`.
        """
        space = self.refined_search_space(factor)
        backbone = space.pop("backbone")["value"]
        a = self.args
        kwargs = dict(
            backbones=[backbone], tuner=tuner or a["tuner"],
            max_trials=max_trials if max_trials is not None else a["max_trials"],
            max_epochs=a["max_epochs"], objective=a["objective"], search_space=space,
            weights=a["weights"], directory=str(self.project_dir.parent),
            project_name=project_name or f"{self.project_dir.name}_refined",
            executions_per_trial=a["executions_per_trial"], seed=a["seed"],
            tuner_options=a["tuner_options"],
            max_consecutive_failed_trials=a["max_consecutive_failed_trials"], isolate=a["isolate"],
        )
        kwargs.update(a["fixed"])
        kwargs.update(changes)
        return search(data if data is not None else self._data, **kwargs)

    def save_table(self):
        """Writes `results.csv`, `results.png` (objective per trial and best so far) and
        `best_recipe.json` into the project folder; returns the CSV path."""
        import csv

        rows = self.table()
        columns = []
        for row in rows:
            for key in row:
                if key not in columns:
                    columns.append(key)
        path = self.project_dir / "results.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns or ["trial"])
            writer.writeheader()
            for row in rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        _plot_trials(rows, self.objective, self.project_dir / "results.png")
        try:
            self.best_recipe.save(self.project_dir / "best_recipe.json")
        except ValueError:
            pass  # no completed trial yet
        return path

    def summary(self) -> str:
        """The table as aligned text (one line per trial), as the CLI prints it."""
        rows = self.table()
        if not rows:
            return "(no trials)"
        columns = [c for c in rows[0] if c not in ("message",)]
        for row in rows:
            columns += [k for k in row if k not in columns and k != "message"]
        cells = [[_fmt(r.get(c)) if r.get(c) is not None else "-" for c in columns] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
        return "\n".join(lines)


def _narrow(p: _Param, best, factor) -> dict:
    low, high = p.low, p.high
    if p.sampling == "log":
        width = math.log(high / low) / factor
        lo = max(low, best * math.exp(-width / 2))
        hi = min(high, lo * math.exp(width))
        lo = max(low, hi * math.exp(-width))
    else:
        width = (high - low) / factor
        lo = max(low, best - width / 2)
        hi = min(high, lo + width)
        lo = max(low, hi - width)
    if p.kind == "int":
        lo, hi = math.floor(lo), math.ceil(hi)
    step = p.step
    if step is not None and p.sampling == "linear":
        lo = round(low + math.floor((lo - low) / step + 1e-9) * step, 10)
        hi = round(low + math.ceil((hi - low) / step - 1e-9) * step, 10)
    if not lo < hi:
        return {"value": best}
    spec = {"min": lo, "max": hi, "sampling": p.sampling, "default": min(max(best, lo), hi)}
    if step is not None:
        spec["step"] = step
    return spec


def _with_validation_in_train(data, seed):
    """The same Data with the validation split moved into training (and no validation)."""
    import tensorflow as tf

    if data.validation is None:
        return data
    batch = data.batch_size
    n = int(data.sizes.get("train", 0)) + int(data.sizes.get("validation", 0))
    parts = data.train.unbatch().concatenate(data.validation.unbatch())

    def make(shuffle_seed):
        ds = parts.shuffle(max(1, n), seed=shuffle_seed, reshuffle_each_iteration=True).batch(batch)
        ds = ds.apply(tf.data.experimental.assert_cardinality(max(1, -(-n // batch))))
        return ds.prefetch(tf.data.AUTOTUNE)

    changes = {"train": make(seed), "validation": None, "sizes": {**data.sizes, "train": n, "validation": 0}}
    if getattr(data, "make_train", None) is not None:
        changes["make_train"] = make
    return dataclasses.replace(data, **changes)


def _plot_trials(rows, objective, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    direction = _direction(objective)
    xs, ys, fails, best, best_so_far = [], [], [], None, []
    ids = [int(r["trial"]) if str(r["trial"]).isdigit() else i for i, r in enumerate(rows)]
    for i, row in zip(ids, rows):
        value = row.get(objective)
        if row["status"] == "COMPLETED" and value is not None:
            xs.append(i)
            ys.append(value)
            if best is None or (value < best if direction == "min" else value > best):
                best = value
        elif row["status"] != "RUNNING":
            fails.append(i)
        best_so_far.append(best)
    fig, ax = plt.subplots(figsize=(7, 4))
    if xs:
        ax.plot(xs, ys, "o", label=objective)
    steps = [(i, b) for i, b in zip(ids, best_so_far) if b is not None]
    if steps:
        ax.step([s[0] for s in steps], [s[1] for s in steps], where="post", label="best so far")
    if fails:
        floor = min(ys) if ys else 0.0
        ax.plot(fails, [floor] * len(fails), "x", color="red", label="failed")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--run-trial":
        sys.exit(_run_trial_file(sys.argv[2]))
    print("usage: python -m recipes.tuning --run-trial JOB.json (used by isolate=True)", file=sys.stderr)
    sys.exit(2)
