"""`fine_tune`: train a new head on a frozen pretrained backbone, then unfreeze and keep training.

Built on `recipes.train` (which is built on `keras.Model.fit`): phase 1 is one `train` call with the
backbone frozen, phase 2 another with the layers an *unfreeze policy* selects made trainable and a
lower learning rate, optionally with layer-wise learning-rate decay and gradual unfreezing. The two
phases share one model and end in one run folder with one continuous history.

BatchNormalization stays in inference mode throughout: BN layers are never made trainable (their
gamma/beta stay frozen too, the common safe choice), and pretrained classifiers run their backbone
through `InferenceModeBackbone`, so the moving statistics never change.

Unfreeze policies (a str or an int):

- `"all"`: every backbone layer that has trainable weights; `"none"`: nothing (head only).
- an int `n`, or `"top:n"`: the top `n` such layers; `"top:25%"`: the top quarter of them (rounded
  up). Only layers with trainable weights count, and BatchNormalization layers are not counted
  (they are never unfrozen), so `"top:10"` unfreezes exactly 10 layers.
- a block name from the registry (`"conv5"` for ResNet, `"block6"` for EfficientNet, `"block_13"`
  for MobileNetV2, `"mixed9"` for InceptionV3): that block and every block above it.
- `"re:<regex>"`: the layers whose names match `<regex>` (`re.search`), e.g. `"re:^conv5_"`. The
  `re:` prefix cannot be confused with a block name; neither can `"top:"`, `"all"` or `"none"`.
  A string of digits is a block name (MobileNet v1's blocks are `"1"` ... `"13"`), never a count.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import shutil
from pathlib import Path

import keras

from .config import Recipe
from .registry import backbone_info, closest_matches

__all__ = [
    "FINE_TUNE_DEFAULTS",
    "LayerwiseOptimizer",
    "ScaledSchedule",
    "apply_unfreeze_policy",
    "check_unfreeze_policy",
    "fine_tune",
    "layer_lr_multipliers",
    "layerwise_optimizer",
    "unfreeze_policy_layers",
]

#: Settings `fine_tune` uses when no `recipe` is given (any argument overrides them). Head at
#: Adam 1e-3 (the keras.io transfer-learning default), fine-tuning at a tenth of it; no warmup.
FINE_TUNE_DEFAULTS = {
    "weights": "imagenet",
    "head_epochs": 2,
    "epochs": 8,
    "learning_rate": 1e-3,
    "warmup_epochs": 0,
    "unfreeze": "top:30%",
}

# --------------------------------------------------------------------------------------------
# Unfreeze policies
# --------------------------------------------------------------------------------------------


def _is_bn(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def _learnable(layer):
    # Layers that own trainable variables (conv, dense, depthwise ...). Normalization layers hold
    # statistics, not weights; BatchNormalization is excluded because it is never unfrozen.
    if _is_bn(layer) or isinstance(layer, keras.Model):
        return False
    own = getattr(layer, "_trainable_variables", None)
    return bool(own) if own is not None else bool(layer.trainable_weights)


def _backbone_of(model):
    from .weights import find_backbone

    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a keras.Model (a classifier or a backbone); Received: {type(model).__name__}"
        )
    return find_backbone(model)


def check_unfreeze_policy(policy):
    """Checks an unfreeze policy's syntax (no model needed) and returns it parsed.

    Args:
        policy: `"all"`, `"none"`, an int >= 1, `"top:N"`, `"top:P%"`, `"re:<regex>"` or a block name.

    Returns:
        A tuple `(kind, value)` with kind one of `"all"`, `"none"`, `"count"`, `"percent"`,
        `"regex"`, `"block"`.

    Raises:
        ValueError: Wrong type, a count < 1, a percentage outside (0, 100], an invalid regex.

    Example:
        >>> check_unfreeze_policy("top:25%")
        ('percent', 25.0)
    """
    if isinstance(policy, bool) or not isinstance(policy, (str, numbers.Integral)):
        raise ValueError(
            "unfreeze must be 'all', 'none', an int, 'top:N', 'top:P%', 're:<regex>' or a block "
            f"name; Received: unfreeze={policy!r}"
        )
    if isinstance(policy, numbers.Integral):
        if policy < 1:
            raise ValueError(
                f"unfreeze as a layer count must be >= 1 (use 'none' to unfreeze nothing); "
                f"Received: unfreeze={policy!r}"
            )
        return ("count", int(policy))
    text = policy.strip()
    if text.lower() in ("all", "none"):
        return (text.lower(), None)
    if text.startswith("re:"):
        try:
            re.compile(text[3:])
        except re.error as exc:
            raise ValueError(f"unfreeze regex is invalid ({exc}); Received: unfreeze={policy!r}") from None
        if not text[3:]:
            raise ValueError(f"unfreeze regex is empty; Received: unfreeze={policy!r}")
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


def _select(backbone, policy):
    """Names of the backbone layers the policy unfreezes, input to output."""
    kind, value = check_unfreeze_policy(policy)
    layers = list(backbone.layers)
    candidates = [layer for layer in layers if _learnable(layer)]
    if kind == "none":
        return []
    if kind == "all":
        chosen = candidates
    elif kind == "count":
        chosen = candidates[-value:]
    elif kind == "percent":
        chosen = candidates[len(candidates) - math.ceil(len(candidates) * value / 100):]
    elif kind == "regex":
        pattern = re.compile(value)
        chosen = [layer for layer in candidates if pattern.search(layer.name)]
        if not chosen:
            raise ValueError(
                f"unfreeze regex {value!r} matches no layer with weights in {backbone.name}; "
                f"Received: unfreeze={policy!r}. Layers: see recipes.unfreeze_policy_layers(model, 'all')."
            )
    else:
        spec = backbone_info(backbone.name)
        names = [layer.name for layer in layers]
        blocks = spec.block_names(names)
        if value not in blocks:
            hint = closest_matches(value, blocks)
            extra = ""
            if value.isdigit():
                extra = f" For the top {value} layers write 'top:{value}'."
            raise ValueError(
                f"Unknown block {value!r} for {spec.name}; Received: unfreeze={policy!r}."
                + (f" Did you mean: {', '.join(hint)}?" if hint else "")
                + extra
                + f" Blocks of {spec.name} (input to output): {', '.join(blocks)}. Other policies: "
                "'all', 'none', an int, 'top:N', 'top:P%', 're:<regex>'."
            )
        start = blocks.index(value)
        of = dict(zip(names, spec.assign_blocks(names)))
        chosen = [
            layer for layer in candidates
            if of[layer.name] is not None and blocks.index(of[layer.name]) >= start
        ]
    return [layer.name for layer in chosen]


def unfreeze_policy_layers(model, policy) -> list[str]:
    """Names of the backbone layers an unfreeze policy makes trainable (input to output).

    Only layers with trainable weights are listed (and counted by `N`/`P%` policies);
    BatchNormalization layers are never listed: they stay frozen, in inference mode.

    Args:
        model: A classifier from `build_classifier` (or its backbone model).
        policy: `"all"`, `"none"`, an int, `"top:N"`, `"top:P%"`, `"re:<regex>"` or a block name
            (see the module docstring).

    Returns:
        Layer names, in the backbone's layer order.

    Raises:
        ValueError: Bad syntax, an unknown block (the message lists the backbone's blocks), a
            regex that matches nothing, or a model without a registered backbone.

    Example:
        >>> model = recipes.build_classifier("resnet50", 10, image_size=32)
        >>> recipes.unfreeze_policy_layers(model, "conv5")[:2]
        ['conv5_block1_1_conv', 'conv5_block1_0_conv']
    """
    return _select(_backbone_of(model), policy)


def _set_flags(root, flags):
    # `Layer.trainable = x` cascades to every sublayer: write containers first (pre-order) so
    # that each leaf's own flag is written last.
    def walk(layer):
        yield layer
        for child in getattr(layer, "_layers", []):
            yield from walk(child)

    for layer in walk(root):
        if id(layer) in flags:
            layer.trainable = flags[id(layer)]


def apply_unfreeze_policy(model, policy) -> list[str]:
    """Makes exactly the layers a policy selects trainable; the rest of the backbone is frozen.

    BatchNormalization layers always stay frozen (inference mode). Layers outside the backbone
    (the head) are left as they are. Recompile afterwards (`recipes.train` does) for it to count.

    Args:
        model: A classifier from `build_classifier`.
        policy: See `unfreeze_policy_layers`.

    Returns:
        The names of the unfrozen layers.

    Raises:
        ValueError: As `unfreeze_policy_layers`.

    Example:
        >>> recipes.apply_unfreeze_policy(model, "none")  # freeze the whole backbone
        []
    """
    backbone = _backbone_of(model)
    selected = _select(backbone, policy)
    _set_trainable(model, backbone, set(selected))
    return selected


def _path_to(root, target):
    """The containers from `root` down to `target` (both excluded), or None when not below."""
    for child in getattr(root, "_layers", []):
        if child is target:
            return []
        below = _path_to(child, target)
        if below is not None:
            return [child, *below]
    return None


def _set_trainable(model, backbone, names):
    flags = {}
    if model is not backbone:
        # Containers above the backbone (the model, InferenceModeBackbone) must be trainable for
        # any layer below them to be; only frozen ones are touched, since the flag cascades.
        for layer in [model, *(_path_to(model, backbone) or [])]:
            if not layer.trainable:
                flags[id(layer)] = True
    flags[id(backbone)] = bool(names)
    for layer in backbone._flatten_layers(include_self=False, recursive=True):
        flags[id(layer)] = layer.name in names and not _is_bn(layer)
    _set_flags(model, flags)


# --------------------------------------------------------------------------------------------
# Layer-wise (discriminative) learning rates
# --------------------------------------------------------------------------------------------


def _check_decay(decay):
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 < decay <= 1:
        raise ValueError(f"layer_lr_decay must be a number in (0, 1]; Received: layer_lr_decay={decay!r}")
    return float(decay)


def layer_lr_multipliers(model, decay, policy="all") -> dict[str, float]:
    """Learning-rate multiplier of each unfrozen backbone layer under layer-wise LR decay.

    The head counts as distance 0 (multiplier 1); the backbone's top block is distance 1, the
    block below it 2, and so on down to the input: multiplier = `decay ** distance`. Layers before
    the first named block get the smallest multiplier.

    Args:
        model: A classifier from `build_classifier` (or its backbone).
        decay: In (0, 1], e.g. 0.8.
        policy: Unfreeze policy selecting the layers (default `"all"`).

    Returns:
        `{layer name: multiplier}` in layer order (input to output).

    Raises:
        ValueError: A decay outside (0, 1] or a bad policy.

    Example:
        >>> m = recipes.layer_lr_multipliers(model, 0.5, "conv4")  # resnet50
        >>> m["conv5_block3_3_conv"], m["conv4_block6_3_conv"]
        (0.5, 0.25)
    """
    decay = _check_decay(decay)
    if decay is None:
        raise ValueError("layer_lr_decay must be a number in (0, 1]; Received: layer_lr_decay=None")
    backbone = _backbone_of(model)
    selected = set(_select(backbone, policy))
    spec = backbone_info(backbone.name)
    names = [layer.name for layer in backbone.layers]
    blocks = spec.block_names(names)
    out = {}
    for name, block in zip(names, spec.assign_blocks(names)):
        if name in selected:
            distance = len(blocks) - blocks.index(block) if block is not None else len(blocks) + 1
            out[name] = decay**distance
    return out


@keras.saving.register_keras_serializable(package="recipes")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule (or constant) multiplied by a fixed factor.

    Args:
        schedule: A `LearningRateSchedule` or a float.
        factor: The multiplier.

    Example:
        >>> ScaledSchedule(keras.optimizers.schedules.CosineDecay(1e-3, 100), 0.5)(0)  # 5e-4
    """

    def __init__(self, schedule, factor):
        self.schedule = schedule
        self.factor = float(factor)

    def __call__(self, step):
        base = self.schedule(step) if callable(self.schedule) else self.schedule
        return keras.ops.multiply(keras.ops.cast(base, "float32"), self.factor)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {"schedule": schedule, "factor": self.factor}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="recipes")
class LayerwiseOptimizer(keras.optimizers.MultiOptimizer):
    """`keras.optimizers.MultiOptimizer` that also trains a subset of its variables.

    Two changes to the Keras class, both needed with gradual unfreezing: it accepts gradients for
    a subset of the variables it was built for (frozen blocks send none), and before each step it
    sets every sub-optimizer's step counter to its own, so a block unfrozen late follows the same
    learning-rate schedule as the rest instead of starting it from step 0. `learning_rate` reads
    the default (head) optimizer's rate, so LR loggers work. It saves and loads with the model.

    Args:
        optimizer_map: A `keras.optimizers.OptimizerMap` (variable-path regex -> optimizer).
        loss_scale_factor: Passed to `MultiOptimizer`.
        name: Optimizer name.

    Example:
        >>> opt = recipes.layerwise_optimizer(keras.optimizers.Adam(1e-4), model, decay=0.8)
    """

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None or len(grads) == 0:
            return super().apply(grads, trainable_variables)
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        groups = [[] for _ in self._inner_optimizers]
        for grad, var in zip(grads, trainable_variables):
            idx = self._var_to_optimizer_idx.get(self._var_key(var))
            if idx is None:
                raise ValueError(
                    f"Variable {var.path!r} is not one the optimizer was built for; rebuild it "
                    "(recompile) after changing which layers are trainable."
                )
            groups[idx].append((grad, var))
        for opt, pairs in zip(self._inner_optimizers, groups):
            opt._iterations.assign(self._iterations)
            if pairs:
                sub_grads, sub_vars = zip(*pairs)
                opt.apply(list(sub_grads), list(sub_vars))
        self._iterations.assign_add(1)

    @property
    def learning_rate(self):
        default = getattr(self._optimizer_map, "default_optimizer", None)
        if default is None:
            return super().learning_rate
        return default.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        raise AttributeError(
            "Set the learning rate on the sub-optimizers (`.optimizers`) of a LayerwiseOptimizer."
        )


def layerwise_optimizer(base, model, decay, *, policy="all", layers=None):
    """Wraps an optimizer so deeper backbone blocks get smaller learning rates.

    One copy of `base` per block (same class and settings; learning rate, or schedule, times
    `decay ** distance`, see `layer_lr_multipliers`), routed by variable path; the head and any
    other variable use `base`'s own rate.

    Args:
        base: A Keras optimizer (e.g. the one `recipes.train` compiled), unbuilt or built.
        model: The classifier.
        decay: In (0, 1].
        policy: Which layers get a group (default `"all"`); layers outside get `base`'s rate.
        layers: Explicit layer names instead of `policy`.

    Returns:
        An unbuilt `LayerwiseOptimizer`.

    Raises:
        ValueError: Bad decay or policy.

    Example:
        >>> opt = recipes.layerwise_optimizer(keras.optimizers.Adam(1e-4), model, 0.8)
        >>> model.compile(opt, "sparse_categorical_crossentropy")
    """
    multipliers = layer_lr_multipliers(model, decay, "all")
    if layers is None:
        layers = unfreeze_policy_layers(model, policy)
    layers = set(layers)
    by_factor = {}
    for name, factor in multipliers.items():
        if name in layers:
            by_factor.setdefault(factor, []).append(name)
    config = base.get_config()
    lr = config["learning_rate"]
    if isinstance(lr, dict):
        lr = keras.saving.deserialize_keras_object(lr)
    default = type(base).from_config({**config, "learning_rate": lr})
    mapping = {}
    for i, (factor, names) in enumerate(sorted(by_factor.items(), reverse=True)):
        scaled = ScaledSchedule(lr, factor) if callable(lr) else float(lr) * factor
        sub = type(base).from_config({**config, "learning_rate": scaled, "name": f"{base.name}_group{i}"})
        # Exact layer names, escaped: variable paths are "<layer name>/<variable name>".
        pattern = "(?:" + "|".join(re.escape(n) for n in sorted(names)) + ")/[^/]+"
        mapping[pattern] = sub
    return LayerwiseOptimizer(keras.optimizers.OptimizerMap(default, mapping), name="layerwise")


class _LayerwiseLRCallback(keras.callbacks.Callback):
    """Swaps the optimizer `train` compiled for a `LayerwiseOptimizer` when fitting starts."""

    def __init__(self, decay, layers, variables):
        super().__init__()
        self.decay, self.layers, self.variables = decay, layers, variables

    def on_train_begin(self, logs=None):
        model = self.model
        opt = layerwise_optimizer(model.optimizer, model, self.decay, layers=self.layers)
        opt.build(self.variables)
        # Routing is by variable path; check it sends every variable where the policy says.
        owners = {id(v): layer.name for layer in _backbone_of(model).layers for v in layer.weights}
        for var in self.variables:
            sub = opt._inner_optimizers[opt._var_to_optimizer_idx[opt._var_key(var)]]
            is_default = sub is opt._optimizer_map.default_optimizer
            owner = owners.get(id(var))
            if (owner in self.layers) == is_default:
                raise ValueError(
                    f"Layer-wise LR routing failed for variable {var.path!r} (layer {owner}); "
                    "a head layer probably shares a name with a backbone layer."
                )
        model.optimizer = opt
        if hasattr(model, "_compile_config"):
            # What model.save writes as the optimizer, so model.keras reloads this one.
            model._compile_config.config["optimizer"] = opt
        model.make_train_function(force=True)


# --------------------------------------------------------------------------------------------
# fine_tune
# --------------------------------------------------------------------------------------------


def _gradual_schedule(backbone, selected, epochs):
    """`{epoch: [layer names]}`: one block per epoch from the top, spread over the phase."""
    spec = backbone_info(backbone.name)
    names = [layer.name for layer in backbone.layers]
    groups = {}
    for name, block in zip(names, spec.assign_blocks(names)):
        if name in selected:
            groups.setdefault(block, []).append(name)
    ordered = list(groups.values())[::-1]  # top block first
    schedule = {}
    for j, group in enumerate(ordered):
        epoch = j if len(ordered) <= epochs else j * epochs // len(ordered)
        schedule.setdefault(epoch, []).extend(group)
    return schedule


def _check_lr(name, value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{name} must be a number > 0; Received: {name}={value!r}")


def _merge_history(first, second):
    keys = list(first) + [k for k in second if k not in first]
    n1 = len(next(iter(first.values()), []))
    n2 = len(next(iter(second.values()), []))
    nan = float("nan")
    return {k: list(first.get(k, [nan] * n1)) + list(second.get(k, [nan] * n2)) for k in keys}


def _write_history_csv(path, hist):
    import csv

    keys = sorted(hist)
    n = len(next(iter(hist.values()), []))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for i in range(n):
            writer.writerow([i, *(hist[k][i] for k in keys)])


def _recipe_for(model_or_backbone, recipe, weights, overrides):
    base = recipe if recipe is not None else Recipe().replace(**FINE_TUNE_DEFAULTS)
    given = {k: v for k, v in overrides.items() if v is not None or k == "schedule"}
    if isinstance(model_or_backbone, keras.Model):
        if weights is not None:
            raise ValueError(
                "weights only applies when fine-tuning from a backbone name; a built model keeps "
                f"its own weights; Received: weights={weights!r}"
            )
        built = [k for k in given if k in Recipe().build_kwargs() and k != "augmentation"]
        if built:
            raise ValueError(
                f"Build options {built} only apply when fine-tuning from a backbone name; "
                f"Received: a built model {model_or_backbone.name!r}"
            )
        given["backbone"] = _backbone_of(model_or_backbone).name
        if recipe is None:
            given["weights"] = None  # not "imagenet": the model brings its own weights
    else:
        if model_or_backbone is not None:
            if not isinstance(model_or_backbone, str):
                raise ValueError(
                    "model_or_backbone must be a backbone name or a keras.Model; "
                    f"Received: {type(model_or_backbone).__name__}"
                )
            given["backbone"] = model_or_backbone
        given["weights"] = os.fspath(weights) if weights is not None else (base.weights or "imagenet")
    return base.replace(**given)


def fine_tune(
    model_or_backbone=None,
    data=None,
    *,
    weights=None,
    head_epochs=None,
    epochs=None,
    learning_rate=None,
    fine_tune_learning_rate=None,
    unfreeze=None,
    layer_lr_decay=None,
    gradual=None,
    callbacks=(),
    out=None,
    recipe=None,
    verbose="auto",
    **train_kwargs,
):
    """Two-phase transfer learning: train a new head on the frozen backbone, then fine-tune.

    Phase 1 trains the head for `head_epochs` at `learning_rate` with the backbone frozen.
    Phase 2 unfreezes the layers `unfreeze` selects and trains `epochs` more epochs at
    `fine_tune_learning_rate` (a fresh LR schedule and optimizer state; `warmup_epochs` applies to
    phase 2 only, capped by `train` to leave one epoch). Both phases are `recipes.train` calls on the same model. BatchNorm stays in
    inference mode and frozen throughout (see the module docstring).

    Any `Recipe` field can be passed as a keyword (`schedule="cosine"`, `optimizer="adamw"`,
    `batch_size=32`, `image_size=96`, `augmentation="light"`, `seed=1`, ...); unspecified ones
    come from `recipe`, or from `FINE_TUNE_DEFAULTS` over `Recipe()` when no recipe is given.

    With `out`, the run folder holds what `recipes.train` writes, for the whole run: `model.keras`,
    `recipe.json` (with the fine-tune fields), `history.csv` (both phases, one row per epoch),
    `metrics.json` (with `phase2_start_epoch`), `curves.png` (a line where phase 2 starts); and
    `phase1/`, `phase2/` with each phase's own records. Re-running the same command resumes: a
    finished phase 1 is not repeated, and phase 2 resumes from its last finished epoch.

    Args:
        model_or_backbone: A registry name (default: the recipe's backbone; built with
            `weights`) or a classifier from `build_classifier`.
        data: A `Data` or a source for `load_data` (default: the recipe's dataset).
        weights: `"imagenet"` (Keras' download cache) or a file from `recipes.save_backbone`
            (default: the recipe's weights, else `"imagenet"`); only with a backbone name.
        head_epochs: Phase-1 epochs (default 2; 0 skips phase 1).
        epochs: Phase-2 epochs (default 8).
        learning_rate: Phase-1 (head) learning rate (default 1e-3).
        fine_tune_learning_rate: Phase-2 learning rate (default: `learning_rate / 10`).
        unfreeze: Unfreeze policy for phase 2 (default `"top:30%"`), see
            `unfreeze_policy_layers`.
        layer_lr_decay: None (default: one rate) or a decay in (0, 1]: block at distance `d` from
            the top trains at `lr * decay**d` (`layer_lr_multipliers`), via `LayerwiseOptimizer`
            (a `keras.optimizers.MultiOptimizer`), saved with the model.
        gradual: True unfreezes the selected layers block by block from the top, one block per
            phase-2 epoch (spread out when there are more blocks than epochs), with
            `callbacks.GradualUnfreeze` (default False).
        callbacks: Extra Keras callbacks, used in both phases.
        out: Run folder (default: none written).
        recipe: A `Recipe` to start from (e.g. `Recipe.load("run/recipe.json")`).
        verbose: Keras `fit` verbosity (default "auto").
        **train_kwargs: Other `Recipe` fields, and `strategy` (passed to `train`).

    Returns:
        A `Result`: the fine-tuned model, the merged history, phase-2 test metrics plus `epochs`
        (total), `head_epochs`, `phase2_start_epoch` (0-based index of phase 2's first epoch),
        `head_test_accuracy`, `unfrozen_layers`, `train_seconds`; the run folder; the recipe.

    Raises:
        ValueError: Any bad argument (checked before training starts), including unknown unfreeze
            blocks (the message lists the backbone's blocks).
        WeightsUnavailableError: `"imagenet"` offline and not cached (before any training).

    Example:
        >>> result = recipes.fine_tune("efficientnet_b0", "flowers/", head_epochs=2, epochs=5,
        ...                            unfreeze="block6", layer_lr_decay=0.8, out="runs/flowers")
        >>> result.metrics["test_accuracy"], result.metrics["phase2_start_epoch"]
    """
    from callbacks import GradualUnfreeze

    from .data import Data, describe_source, load_data
    from .training import _check, train

    strategy = train_kwargs.pop("strategy", None)
    recipe = _recipe_for(
        model_or_backbone, recipe, weights,
        dict(train_kwargs, head_epochs=head_epochs, epochs=epochs, learning_rate=learning_rate,
             fine_tune_learning_rate=fine_tune_learning_rate, unfreeze=unfreeze,
             layer_lr_decay=layer_lr_decay, gradual=gradual),
    )
    _check(recipe)
    check_unfreeze_policy(recipe.unfreeze)
    _check_lr("learning_rate", recipe.learning_rate)
    _check_lr("fine_tune_learning_rate", recipe.fine_tune_learning_rate)
    _check_decay(recipe.layer_lr_decay)
    if not isinstance(recipe.gradual, bool):
        raise ValueError(f"gradual must be True or False; Received: gradual={recipe.gradual!r}")
    if recipe.learning_rate is None:
        from .training import OPTIMIZERS

        recipe = recipe.replace(learning_rate=OPTIMIZERS[recipe.optimizer])
    if recipe.fine_tune_learning_rate is None:
        recipe = recipe.replace(fine_tune_learning_rate=recipe.learning_rate / 10)

    if data is None:
        data = recipe.dataset
    if not isinstance(data, Data):
        data = load_data(
            data, batch_size=recipe.batch_size, validation_split=recipe.validation_split,
            test_split=recipe.test_split, seed=recipe.seed,
        )
    recipe = recipe.replace(dataset=data.source or describe_source(data), batch_size=data.batch_size)

    keras.utils.set_random_seed(recipe.seed)
    if isinstance(model_or_backbone, keras.Model):
        model = model_or_backbone
    else:
        from .builder import build_classifier

        if recipe.image_size is None:
            recipe = recipe.replace(image_size=backbone_info(recipe.backbone).default_size)
        kwargs = recipe.build_kwargs()
        if kwargs["augmentation"] is not None:
            from .training import _augmentation_layer

            kwargs["augmentation"] = _augmentation_layer(recipe)  # seeded, as train builds it
        # Raises WeightsUnavailableError / ValueError for unusable weights: before any training.
        model = build_classifier(
            recipe.backbone, data.num_classes, input_shape=data.input_shape,
            trainable_backbone=False, **kwargs,
        )
    backbone = _backbone_of(model)
    selected = _select(backbone, recipe.unfreeze)
    if recipe.layer_lr_decay is not None and "float16" in str(getattr(model.dtype_policy, "name", "")):
        raise ValueError(
            "layer_lr_decay is not supported with float16 mixed precision (Keras wraps the "
            "optimizer in a LossScaleOptimizer, which MultiOptimizer cannot hold); use "
            "bfloat16 or float32, or drop layer_lr_decay."
        )
    if recipe.gradual and not selected:
        raise ValueError(
            f"gradual=True needs an unfreeze policy that selects layers; Received: unfreeze={recipe.unfreeze!r}"
        )

    run_dir = Path(out) if out is not None else None
    phase_dirs = (None, None)
    resume_phase1 = False
    if run_dir is not None:
        phase_dirs = (run_dir / "phase1", run_dir / "phase2")
        resume_phase1 = _prepare_run_dir(run_dir, recipe, phase_dirs)

    # Phase 1: the new head on the frozen backbone.
    _set_trainable(model, backbone, set())
    hist1, seconds1, head_metrics = {}, 0.0, {}
    if recipe.head_epochs > 0:
        if resume_phase1:
            loaded = keras.models.load_model(phase_dirs[0] / "model.keras", compile=False)
            model.set_weights(loaded.get_weights())
            from .training import _read_history

            hist1 = _read_history(phase_dirs[0] / "history.csv")
            head_metrics = json.loads((phase_dirs[0] / "metrics.json").read_text())
        else:
            r1 = train(
                model, data, recipe=recipe.replace(epochs=recipe.head_epochs, warmup_epochs=0),
                callbacks=callbacks, out=phase_dirs[0], strategy=strategy, verbose=verbose,
            )
            hist1, head_metrics = r1.history, r1.metrics
        seconds1 = float(head_metrics.get("train_seconds", 0.0))

    # Phase 2: unfreeze, lower learning rate, continue.
    phase2_callbacks = list(callbacks)
    if recipe.gradual:
        schedule = _gradual_schedule(backbone, set(selected), recipe.epochs)
        phase2_callbacks.append(GradualUnfreeze(schedule, target=backbone, verbose=1 if verbose else 0))
        _set_trainable(model, backbone, set(selected))
        variables = list(model.trainable_variables)  # everything phase 2 will ever train
        _set_trainable(model, backbone, set())
    else:
        _set_trainable(model, backbone, set(selected))
        variables = list(model.trainable_variables)
    if recipe.layer_lr_decay is not None and selected:
        phase2_callbacks.append(_LayerwiseLRCallback(recipe.layer_lr_decay, set(selected), variables))
    r2 = train(
        model, data, recipe=recipe.replace(learning_rate=recipe.fine_tune_learning_rate),
        callbacks=phase2_callbacks, out=phase_dirs[1], strategy=strategy, verbose=verbose,
    )

    n1 = len(next(iter(hist1.values()), []))
    history = _merge_history(hist1, r2.history) if hist1 else dict(r2.history)
    metrics = dict(r2.metrics)
    metrics.update(
        epochs=len(next(iter(history.values()), [])),
        head_epochs=n1,
        phase2_start_epoch=n1,
        unfrozen_layers=len(selected),
        head_train_seconds=round(seconds1, 1),
        fine_tune_train_seconds=r2.metrics.get("train_seconds", 0.0),
        train_seconds=round(seconds1 + float(r2.metrics.get("train_seconds", 0.0)), 1),
    )
    if "test_accuracy" in head_metrics:
        metrics["head_test_accuracy"] = head_metrics["test_accuracy"]
    if run_dir is not None:
        _finish_run(run_dir, phase_dirs, model, recipe, metrics, history, n1)
    return _result(model, history, metrics, run_dir, recipe)


def _result(model, history, metrics, run_dir, recipe):
    from .training import Result

    return Result(model=model, history=history, metrics=metrics, run_dir=run_dir, recipe=recipe)


def _prepare_run_dir(run_dir, recipe, phase_dirs) -> bool:
    """Clears a finished or different earlier run; True when a finished phase 1 can be reused."""
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_file = run_dir / "recipe.json"
    same = recipe_file.is_file() and json.loads(recipe_file.read_text()) == json.loads(
        json.dumps(recipe.to_dict(), default=str)
    )
    finished = (run_dir / "metrics.json").is_file()
    if finished or not same:
        for folder in phase_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        (run_dir / "metrics.json").unlink(missing_ok=True)
    # Written first so that a re-run can tell whether it is the same run.
    recipe.save(recipe_file)
    p1 = phase_dirs[0]
    return (p1 / "metrics.json").is_file() and (p1 / "model.keras").is_file()


def _finish_run(run_dir, phase_dirs, model, recipe, metrics, history, phase2_start):
    from .training import plot_curves

    final_model = phase_dirs[1] / "model.keras"
    if final_model.is_file():
        final_model.replace(run_dir / "model.keras")
    else:
        model.save(run_dir / "model.keras")
    (phase_dirs[0] / "model.keras").unlink(missing_ok=True)  # the head-only model: a duplicate
    recipe.save(run_dir / "recipe.json")
    _write_history_csv(run_dir / "history.csv", history)
    marks = {phase2_start: "fine-tuning starts"} if phase2_start else None
    plot_curves(history, run_dir / "curves.png", marks=marks)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

