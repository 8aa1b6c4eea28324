"""The backbone registry: the one table every other module reads.

Each entry says how keras.applications builds the backbone, which input sizes it accepts, the exact
preprocessing its ImageNet weights expect, which resolutions and width multipliers have published
weights, and how its layers group into named blocks (for fine-tuning by block name).
"""

from __future__ import annotations

import dataclasses
import functools
import re

from . import validation as v
from .validation import closest_matches  # noqa: F401  (kept importable from here)

__all__ = [
    "PREPROCESSING_MODES",
    "BackboneSpec",
    "backbone_info",
    "list_backbones",
]

#: caffe: RGB->BGR and ImageNet mean subtraction, no scaling; tf: x/127.5 - 1;
#: torch: x/255 then ImageNet mean/std; embedded: the backbone rescales raw 0-255 input itself.
PREPROCESSING_MODES = ("caffe", "tf", "torch", "embedded")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What the package knows about one backbone.

    Attributes:
        name: Registry name, e.g. `"resnet50"`.
        builder: Name of the `keras.applications` function, e.g. `"ResNet50"`.
        family: The `keras.applications` module, e.g. `"resnet"`.
        default_size: Input size of its ImageNet weights (and our default `image_size`).
        min_size: Smallest input side keras.applications accepts.
        preprocessing: One of `PREPROCESSING_MODES`.
        weight_sizes: Input sizes with published ImageNet weights.
        alphas: Width multipliers with published weights (empty when the family has none).
        block_pattern: Regex whose first group names a layer's block (`"conv5"`, `"block6"`).
        block_marks_end: True when the pattern matches the *last* layer of a block (InceptionV3's
            `mixedN` concatenations) rather than every layer in it.
        builder_kwargs: Extra arguments the builder needs (e.g. `include_preprocessing=True`).
        cam_layer: The layer Grad-CAM reads, the last convolutional feature map (`recipes.grad_cam`);
            None means the backbone's last 4-D output (MobileNetV3's last activation has an
            auto-generated name, so it is found by shape).
    """

    name: str
    builder: str
    family: str
    default_size: int
    min_size: int
    preprocessing: str
    weight_sizes: tuple[int, ...]
    alphas: tuple[float, ...] = ()
    block_pattern: str = r"^(block\d+)"
    block_marks_end: bool = False
    builder_kwargs: tuple[tuple[str, object], ...] = ()
    cam_layer: str | None = None

    @property
    def default_alpha(self) -> float | None:
        """1.0 for families with width multipliers, else None."""
        return 1.0 if self.alphas else None

    def get_builder(self):
        """Returns the `keras.applications` function that builds this backbone."""
        import keras

        return getattr(keras.applications, self.builder)

    def preprocess_input(self):
        """Returns keras.applications' own `preprocess_input` for this family (the reference)."""
        import keras

        return getattr(keras.applications, self.family).preprocess_input

    def count_params(self, alpha: float | None = None) -> int:
        """Number of backbone parameters (no classification top), computed by building it once.

        Args:
            alpha: Width multiplier (default: the family's default).

        Returns:
            The parameter count, independent of input size for these convolutional backbones.
        """
        return _count_params(self.name, alpha)

    def block_names(self, layer_names) -> list[str]:
        """Orders the block names found in a built backbone's layer names (input to output)."""
        blocks = []
        for block in self.assign_blocks(layer_names):
            if block is not None and block not in blocks:
                blocks.append(block)
        return blocks

    def assign_blocks(self, layer_names) -> list[str | None]:
        """Block name of each layer (None for layers before the first block, e.g. the input)."""
        pattern = re.compile(self.block_pattern)
        names = list(layer_names)
        found = [pattern.match(n) for n in names]
        if not self.block_marks_end:
            out, current = [], None
            for m in found:
                if m:
                    current = m.group(1)
                out.append(current)
            return out
        # The matching layer closes its block: earlier unmatched layers belong to it.
        out, pending, last = [None] * len(names), [], None
        for i, m in enumerate(found):
            pending.append(i)
            if m:
                for j in pending:
                    out[j] = m.group(1)
                pending, last = [], m.group(1)
        for j in pending:  # layers after the last marker (none in keras.applications)
            out[j] = last
        return out

    def to_dict(self) -> dict:
        """A JSON-friendly view of the spec."""
        d = dataclasses.asdict(self)
        d["builder_kwargs"] = dict(self.builder_kwargs)
        d["alphas"] = list(self.alphas)
        d["weight_sizes"] = list(self.weight_sizes)
        return d


def _spec(name, builder, family, default, minimum, mode, weight_sizes=None, **kw):
    weight_sizes = tuple(weight_sizes) if weight_sizes else (default,)
    kw["builder_kwargs"] = tuple(sorted(kw.get("builder_kwargs", {}).items()))
    return BackboneSpec(name, builder, family, default, minimum, mode, weight_sizes, **kw)


_RESNET = dict(block_pattern=r"^(conv\d)_", cam_layer="conv5_block3_out")
_RESNET_V2 = dict(block_pattern=r"^(conv\d)_", cam_layer="post_relu")
_EFF = dict(block_pattern=r"^(stem|block\d|top)", cam_layer="top_activation")
_EFF_V2 = dict(block_pattern=r"^(stem|block\d|top)", cam_layer="top_activation", builder_kwargs={"include_preprocessing": True})
_V3 = dict(
    alphas=(0.75, 1.0),
    block_pattern=r"^(expanded_conv(?:_\d+)?|conv(?:_\d+)?)(?:_|$)",
    builder_kwargs={"include_preprocessing": True},
)

_SPECS = [
    _spec("vgg16", "VGG16", "vgg16", 224, 32, "caffe", cam_layer="block5_conv3"),
    _spec("vgg19", "VGG19", "vgg19", 224, 32, "caffe", cam_layer="block5_conv4"),
    _spec("resnet50", "ResNet50", "resnet", 224, 32, "caffe", **_RESNET),
    _spec("resnet101", "ResNet101", "resnet", 224, 32, "caffe", **_RESNET),
    _spec("resnet152", "ResNet152", "resnet", 224, 32, "caffe", **_RESNET),
    _spec("resnet50_v2", "ResNet50V2", "resnet_v2", 224, 32, "tf", **_RESNET_V2),
    _spec("resnet101_v2", "ResNet101V2", "resnet_v2", 224, 32, "tf", **_RESNET_V2),
    _spec("resnet152_v2", "ResNet152V2", "resnet_v2", 224, 32, "tf", **_RESNET_V2),
    _spec(
        "inception_v3", "InceptionV3", "inception_v3", 299, 75, "tf",
        block_pattern=r"^(mixed\d+)$", block_marks_end=True, cam_layer="mixed10",
    ),
    _spec("xception", "Xception", "xception", 299, 71, "tf", cam_layer="block14_sepconv2_act"),
    _spec(
        "mobilenet", "MobileNet", "mobilenet", 224, 32, "tf", (128, 160, 192, 224),
        alphas=(0.25, 0.5, 0.75, 1.0), block_pattern=r"^conv_(?:dw_|pw_|pad_)?(\d+)",
        cam_layer="conv_pw_13_relu",
    ),
    _spec(
        "mobilenet_v2", "MobileNetV2", "mobilenet_v2", 224, 32, "tf", (96, 128, 160, 192, 224),
        alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4), block_pattern=r"^(Conv1|block_\d+|Conv_1)",
        cam_layer="out_relu",
    ),
    _spec("mobilenet_v3_small", "MobileNetV3Small", "mobilenet_v3", 224, 32, "embedded", **_V3),
    _spec("mobilenet_v3_large", "MobileNetV3Large", "mobilenet_v3", 224, 32, "embedded", **_V3),
    _spec("densenet121", "DenseNet121", "densenet", 224, 32, "torch", block_pattern=r"^(conv\d)_",
          cam_layer="relu"),
    _spec("densenet169", "DenseNet169", "densenet", 224, 32, "torch", block_pattern=r"^(conv\d)_",
          cam_layer="relu"),
    _spec("densenet201", "DenseNet201", "densenet", 224, 32, "torch", block_pattern=r"^(conv\d)_",
          cam_layer="relu"),
]
for _i, _size in enumerate((224, 240, 260, 300, 380, 456, 528, 600)):
    _SPECS.append(
        _spec(f"efficientnet_b{_i}", f"EfficientNetB{_i}", "efficientnet", _size, 32, "embedded", **_EFF)
    )
for _suffix, _builder, _size in (
    ("b0", "B0", 224), ("b1", "B1", 240), ("b2", "B2", 260), ("b3", "B3", 300),
    ("s", "S", 384), ("m", "M", 480), ("l", "L", 480),
):
    _SPECS.append(
        _spec(
            f"efficientnet_v2_{_suffix}", f"EfficientNetV2{_builder}", "efficientnet_v2", _size, 32,
            "embedded", **_EFF_V2,
        )
    )

_REGISTRY: dict[str, BackboneSpec] = {s.name: s for s in _SPECS}
# Keras spellings ("ResNet50V2", "efficientnetb0", "mobilenetv2") resolve to registry names.
_ALIASES = {s.builder.lower(): s.name for s in _SPECS}
_ALIASES.update({s.name.replace("_", ""): s.name for s in _SPECS})


def list_backbones() -> list[str]:
    """Names of every registered backbone, sorted.

    Returns:
        A sorted list such as `["densenet121", ..., "vgg19"]`.

    Example:
        >>> "resnet50" in recipes.list_backbones()
        True
    """
    return sorted(_REGISTRY)


def backbone_info(name: str) -> BackboneSpec:
    """Looks up a backbone's spec by registry or Keras name.

    Args:
        name: A registry name (`"resnet50_v2"`) or a Keras spelling (`"ResNet50V2"`).

    Returns:
        The `BackboneSpec`; `.count_params()` gives its parameter count.

    Raises:
        ValueError: Unknown name; the message lists the closest registered names.

    Example:
        >>> recipes.backbone_info("efficientnet_b0").preprocessing
        'embedded'
    """
    if isinstance(name, BackboneSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"Backbone must be a name (str); Received: backbone={name!r}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key.replace("_", ""), key) if key not in _REGISTRY else key
    if key in _REGISTRY:
        return _REGISTRY[key]
    hint = v.closest_matches(key, _REGISTRY)
    hint = f" Did you mean: {', '.join(hint)}?" if hint else ""
    raise ValueError(
        f"Unknown backbone; Received: backbone={name!r}.{hint} "
        f"Run `recipes list` for all {len(_REGISTRY)} backbones."
    )


def validate_alpha(spec: BackboneSpec, alpha) -> float | None:
    """Checks a width multiplier against the family's published ones.

    Returns:
        The alpha to pass to the builder (None for families without one).

    Raises:
        ValueError: The family has no width multiplier, or `alpha` is not among the allowed values.
    """
    if alpha is None:
        return spec.default_alpha
    if not spec.alphas:
        raise ValueError(
            f"{spec.name} has no width multiplier; Received: alpha={alpha!r}. "
            f"Backbones with alpha: {', '.join(s.name for s in _SPECS if s.alphas)}."
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or float(alpha) not in spec.alphas:
        raise ValueError(
            f"alpha must be one of {list(spec.alphas)} for {spec.name}; Received: alpha={alpha!r}"
        )
    return float(alpha)


@functools.cache
def _count_params(name: str, alpha: float | None) -> int:
    spec = backbone_info(name)
    size = max(spec.min_size, 32)
    kwargs = dict(spec.builder_kwargs)
    if spec.alphas:
        kwargs["alpha"] = validate_alpha(spec, alpha)
    model = spec.get_builder()(
        include_top=False, weights=None, input_shape=(size, size, 3), **kwargs
    )
    return int(model.count_params())
