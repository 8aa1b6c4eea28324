"""Layer-wise (discriminative) learning rates: deeper backbone blocks train at smaller rates.

`layer_lr_multipliers` gives each layer `decay ** distance` (distance 0 is the head, 1 the
backbone's top block, ...); `layerwise_optimizer` turns an optimizer into a `LayerwiseOptimizer`
(a `keras.optimizers.MultiOptimizer` with one copy per block, its rate scaled by
`ScaledSchedule`); `LayerwiseLR` is the callback with which `fine_tune` swaps it in for the
optimizer `recipes.train` compiled. Both classes are registered Keras serializables
(`"recipes>ScaledSchedule"`, `"recipes>LayerwiseOptimizer"`): a saved model reloads with them.
"""

from __future__ import annotations

import re

import keras

from .. import compat
from ..registry import backbone_info
from ..validation import check_number
from .policy import backbone_of, select_layers, unfreeze_policy_layers

__all__ = ["ScaledSchedule", "LayerwiseOptimizer", "layerwise_optimizer", "layer_lr_multipliers",
           "LayerwiseLR"]


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
        >>> m = recipes.finetune.layer_lr_multipliers(model, 0.5, "conv4")  # resnet50
        >>> m["conv5_block3_3_conv"], m["conv4_block6_3_conv"]
        (0.5, 0.25)
    """
    decay = float(check_number("layer_lr_decay", decay, 0, 1, low_open=True, high_open=False))
    backbone = backbone_of(model)
    selected = set(select_layers(backbone, policy))
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
        >>> opt = recipes.finetune.layerwise_optimizer(keras.optimizers.Adam(1e-4), model, decay=0.8)
    """

    def __init__(self, optimizer_map, loss_scale_factor=None, name=None):
        super().__init__(optimizer_map, loss_scale_factor=loss_scale_factor, name=name)
        # The head's optimizer is `OptimizerMap.default_optimizer` (public). Kept as an index into
        # `.optimizers`, not as an attribute: Keras saves every optimizer attribute as its own
        # entry, which would change the layout of model.keras files saved before.
        default = getattr(optimizer_map, "default_optimizer", None)
        self.head_index = self.optimizers.index(default) if default is not None else None

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None or len(grads) == 0:
            return super().apply(grads, trainable_variables)
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
            self.built = True
        groups = {id(opt): [] for opt in self.optimizers}
        for grad, var in zip(grads, trainable_variables):
            sub = compat.multi_optimizer_parts(self, var)
            if sub is None:
                raise ValueError(
                    f"Variable {var.path!r} is not one the optimizer was built for; rebuild it "
                    "(recompile) after changing which layers are trainable."
                )
            groups[id(sub)].append((grad, var))
        for opt in self.optimizers:
            compat.set_iterations(opt, self.iterations)
            pairs = groups[id(opt)]
            if pairs:
                sub_grads, sub_vars = zip(*pairs)
                opt.apply(list(sub_grads), list(sub_vars))
        self.iterations.assign_add(1)

    @property
    def learning_rate(self):
        if getattr(self, "head_index", None) is None:
            return super().learning_rate
        return self.optimizers[self.head_index].learning_rate

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
        layers: Explicit layer names instead of `policy` (default None).

    Returns:
        An unbuilt `LayerwiseOptimizer`.

    Raises:
        ValueError: Bad decay or policy.

    Example:
        >>> opt = recipes.finetune.layerwise_optimizer(keras.optimizers.Adam(1e-4), model, 0.8)
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


class LayerwiseLR(keras.callbacks.Callback):
    """Swaps the optimizer `train` compiled for a `LayerwiseOptimizer` when fitting starts.

    Args:
        decay: Layer-wise LR decay in (0, 1].
        layers: Names of the backbone layers that get their block's rate.
        variables: Every variable the phase will ever train (with gradual unfreezing, more than
            the trainable ones at the start), so the optimizer is built once for all of them.

    Example:
        >>> model.fit(ds, callbacks=[LayerwiseLR(0.8, unfreeze_policy_layers(model, "12"),
        ...                                      model.trainable_variables)])
    """

    def __init__(self, decay, layers, variables):
        super().__init__()
        self.decay, self.layers, self.variables = decay, set(layers), list(variables)

    def on_train_begin(self, logs=None):
        model = self.model
        opt = layerwise_optimizer(model.optimizer, model, self.decay, layers=self.layers)
        opt.build(self.variables)
        # Routing is by variable path; check it sends every variable where the policy says.
        owners = {id(v): layer.name for layer in backbone_of(model).layers for v in layer.weights}
        for var in self.variables:
            is_default = compat.multi_optimizer_parts(opt, var) is opt.optimizers[opt.head_index]
            owner = owners.get(id(var))
            if (owner in self.layers) == is_default:
                raise ValueError(
                    f"Layer-wise LR routing failed for variable {var.path!r} (layer {owner}); "
                    "a head layer probably shares a name with a backbone layer."
                )
        model.optimizer = opt
        compat.set_saved_optimizer(model, opt)  # so model.keras reloads this optimizer
        model.make_train_function(force=True)
