"""Unfreeze policies: which backbone layers phase 2 of `fine_tune` trains, and setting the flags.

A policy is a str or an int (syntax checked by `recipes.validation.parse_unfreeze_policy`, so a
`Recipe` rejects a bad one at construction; what needs the model is checked here):

- `"all"`: every backbone layer that has trainable weights; `"none"`: nothing (head only).
- an int `n`, or `"top:n"`: the top `n` such layers; `"top:25%"`: the top quarter of them (rounded
  up). Only layers with trainable weights count, and BatchNormalization layers are not counted
  (they are never unfrozen), so `"top:10"` unfreezes exactly 10 layers.
- a block name from the registry (`"conv5"` for ResNet, `"block6"` for EfficientNet, `"block_13"`
  for MobileNetV2, `"mixed9"` for InceptionV3): that block and every block above it.
- `"re:<regex>"`: the layers whose names match `<regex>` (`re.search`), e.g. `"re:^conv5_"`. The
  `re:` prefix cannot be confused with a block name; neither can `"top:"`, `"all"` or `"none"`.
  A string of digits is a block name (MobileNet v1's blocks are `"1"` ... `"13"`), never a count.

BatchNormalization layers always stay frozen, in inference mode (the common safe choice).
"""

from __future__ import annotations

import math
import re

import keras

from .. import compat
from ..compat import own_trainable_variables
from ..registry import backbone_info
from ..validation import parse_unfreeze_policy, unknown

__all__ = ["unfreeze_policy_layers", "apply_unfreeze_policy", "backbone_of", "select_layers",
           "set_trainable", "gradual_schedule"]

_OTHER_POLICIES = "'all', 'none', an int, 'top:N', 'top:P%', 're:<regex>'"


def _is_bn(layer):
    return isinstance(layer, keras.layers.BatchNormalization)


def _learnable(layer):
    # Layers that own weights (conv, dense, depthwise ...). Normalization layers hold statistics,
    # not weights; BatchNormalization is excluded because it is never unfrozen.
    if _is_bn(layer) or isinstance(layer, keras.Model):
        return False
    return bool(own_trainable_variables(layer))


def backbone_of(model):
    """The registry backbone of a classifier from `build_classifier` (or the backbone itself).

    Raises:
        ValueError: Not a keras.Model, or a model without a `recipes.layers.Backbone` layer.

    Example:
        >>> backbone_of(recipes.build_classifier("mobilenet", 3)).name
        'mobilenet'
    """
    from ..weights import find_backbone

    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Expected a keras.Model (a classifier or a backbone); Received: {type(model).__name__}"
        )
    return find_backbone(model)


def select_layers(backbone, policy) -> list[str]:
    """Names of the backbone layers `policy` unfreezes, input to output.

    Args:
        backbone: The backbone model (`backbone_of(model)`).
        policy: See `unfreeze_policy_layers`.

    Returns:
        Layer names, in the backbone's layer order.

    Raises:
        ValueError: Bad syntax, an unknown block (the backbone's blocks listed), or a regex that
            matches no layer with weights.
    """
    kind, value = parse_unfreeze_policy(policy)
    if kind == "none":
        return []
    layers = list(backbone.layers)
    candidates = [layer for layer in layers if _learnable(layer)]
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
                f"Received: unfreeze={policy!r}. Layers: see "
                "recipes.unfreeze_policy_layers(model, 'all')."
            )
    else:
        spec = backbone_info(backbone.name)
        names = [layer.name for layer in layers]
        blocks = spec.block_names(names)
        if value not in blocks:
            count_hint = f" (for the top {value} layers write 'top:{value}')" if value.isdigit() else ""
            raise unknown(
                f"block of {spec.name}", value, blocks, arg="unfreeze",
                allowed=f"{', '.join(blocks)} (input to output){count_hint}; or {_OTHER_POLICIES}",
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
            (see `recipes.finetune.policy`).

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
    return select_layers(backbone_of(model), policy)


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
        >>> recipes.finetune.apply_unfreeze_policy(model, "none")  # freeze the whole backbone
        []
    """
    backbone = backbone_of(model)
    selected = select_layers(backbone, policy)
    set_trainable(model, backbone, set(selected))
    return selected


def _preorder(layer):
    yield layer
    for child in compat.child_layers(layer):
        yield from _preorder(child)


def _path_to(root, target):
    """The containers from `root` down to `target` (both excluded), or None when not below."""
    for child in compat.child_layers(root):
        if child is target:
            return []
        below = _path_to(child, target)
        if below is not None:
            return [child, *below]
    return None


def set_trainable(model, backbone, names):
    """Makes exactly the backbone layers in `names` trainable (never BatchNorm); the head as is.

    Args:
        model: The classifier holding `backbone` (or the backbone itself).
        backbone: `backbone_of(model)`.
        names: Layer names to make trainable; an empty set freezes the whole backbone.

    Example:
        >>> set_trainable(model, backbone_of(model), set())  # phase 1: head only
    """
    flags = {}
    if model is not backbone:
        # Containers above the backbone (the model, the Backbone layer) must be trainable for any
        # layer below them to be; only frozen ones are touched, since the flag cascades.
        for layer in [model, *(_path_to(model, backbone) or [])]:
            if not layer.trainable:
                flags[id(layer)] = True
    flags[id(backbone)] = bool(names)
    for layer in compat.flatten_layers(backbone):
        flags[id(layer)] = layer.name in names and not _is_bn(layer)
    # `Layer.trainable = x` cascades to every sublayer: write containers first (pre-order) so
    # that each leaf's own flag is written last.
    for layer in _preorder(model):
        if id(layer) in flags:
            layer.trainable = flags[id(layer)]


def gradual_schedule(backbone, selected, epochs) -> dict[int, list[str]]:
    """`{epoch: [layer names]}` for `callbacks.GradualUnfreeze`: one block per epoch from the
    top, spread over `epochs` when there are more blocks than epochs.

    Args:
        backbone: The backbone model.
        selected: Names of the layers to unfreeze (e.g. from `select_layers`).
        epochs: Epochs of the phase.

    Example:
        >>> gradual_schedule(backbone, set(select_layers(backbone, "12")), 2)  # mobilenet
        {0: ['conv_dw_13', 'conv_pw_13'], 1: ['conv_dw_12', 'conv_pw_12']}
    """
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
