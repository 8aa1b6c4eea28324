"""`Recipe`: the one config that flows CLI -> builder -> trainer -> tuner -> run folder.

Every default is decided here: the field defaults, the default learning rate per optimizer (and
its pretrained scale) and the image-size rule for small images; the named presets and the
data-size-aware choice among them are in `recipes.presets`. A Recipe
validates itself at construction, so a bad value fails before any data is loaded or model built,
and it holds only JSON values, so `recipe.json` always redoes the run. CLI flags are generated
from the fields' metadata (`recipes/cli/args.py`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from . import validation as v
from .presets import AUTO, PRESETS, check_preset_needs

__all__ = [
    "Recipe",
    "DEFAULT_BACKBONE",
    "DEFAULT_LEARNING_RATES",
    "PRETRAINED_LR_SCALE",
    "PRESETS",
    "POOLINGS",
    "CUSTOM_PREFIX",
]

#: The backbone bare `recipes train` uses (fast and accurate from scratch on small images).
DEFAULT_BACKBONE = "mobilenet_v3_small"

#: The default recipe's augmentation (inside the model, training only) and label smoothing.
DEFAULT_AUGMENTATION = "translation:0.1"
DEFAULT_LABEL_SMOOTHING = 0.1

#: Optimizer names and their from-scratch peak learning rates (tuned with warmup + cosine).
DEFAULT_LEARNING_RATES = {
    "sgd": 0.1, "adam": 5e-3, "adamw": 5e-3, "rmsprop": 1e-3, "adagrad": 0.05, "nadam": 5e-3,
}

#: Pretrained backbones start at this fraction of the from-scratch rate (Adam: 1e-3, the keras.io
#: transfer-learning default); phase 2 of fine-tuning runs at a tenth of that.
PRETRAINED_LR_SCALE = 0.2

#: Head poolings `build_classifier` accepts.
POOLINGS = ("avg", "max", "flatten")

#: `backbone` of a recipe that trained a model not built from the registry (`custom:<name>`).
CUSTOM_PREFIX = "custom:"

#: `Recipe.schedule` names. `callbacks.SCHEDULE_NAMES` maps the same names to schedules (a test
#: keeps the two equal); the copy lets a Recipe validate without importing Keras, as
#: `recipes.startup` does before TensorFlow is imported.
SCHEDULE_NAMES = ("step", "exponential", "time", "power", "cosine", "cosine_restarts", "linear",
                  "onecycle", "constant")

_SMALL_IMAGE = 64  # images at most this size train from scratch at the backbone's minimum size


def _f(default, help, *, kind, group="training", flag=None, aliases=(), nullable=False,
       choices=None, cli=True):
    """A Recipe field with the metadata the CLI generator reads."""
    meta = {"help": help, "kind": kind, "group": group, "flag": flag, "aliases": tuple(aliases),
            "nullable": nullable, "choices": choices, "cli": cli}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything needed to redo a run; saved as `recipe.json` in every run folder.

    Construct it with keywords (`Recipe(epochs=20, mixup=0.2)`), derive with `replace`, start from
    a named one with `Recipe.preset("fine-tune")`. Every field is checked at construction.

    The defaults are what bare `recipes train` uses (see BENCHMARKS.md for what they reach).
    Each field's help text (shown by `recipes train --help`) is in its metadata.

    Raises:
        ValueError: A bad value, with what was received and what is allowed.

    Example:
        >>> recipe = Recipe(backbone="resnet50", epochs=20, augmentation="light")
        >>> recipe.replace(learning_rate=1e-3).peak_learning_rate
        0.001
    """

    # model and data
    backbone: str = _f(DEFAULT_BACKBONE, "registry name (see `recipes list`)", kind="str", group="model")
    dataset: str = _f("digits", "digits | a folder | idx:<folder> | tfds:<name> | arrays:<file.npz>",
                      kind="str", group="model")
    image_size: int | None = _f(None, "side the backbone sees (default: the backbone's; 32 px for "
                                "small images from scratch)", kind="int", group="model", nullable=True)
    alpha: float | None = _f(None, "MobileNet width multiplier", kind="float", group="model", nullable=True)
    weights: str | None = _f(None, "none | imagenet | a weights file", kind="str", group="model",
                             nullable=True)
    pooling: str = _f("avg", "head pooling", kind="str", group="model", choices=POOLINGS)
    dropout: float = _f(0.2, "dropout before the classifier", kind="float", group="model")
    dense_units: tuple = _f((), "hidden dense layers in the head, e.g. 256,128", kind="ints", group="model")
    l1: float = _f(0.0, "L1 penalty on head kernels", kind="float", group="regularization")
    l2: float = _f(0.0, "L2 penalty on head kernels", kind="float", group="regularization")
    head_batchnorm: bool = _f(False, "BatchNormalization after pooling", kind="bool", group="model")
    regularize_backbone: bool = _f(False, "also apply L1/L2 to backbone kernels", kind="bool",
                                   group="regularization")
    drop_connect_rate: float | None = _f(None, "EfficientNet stochastic depth of the deepest block",
                                         kind="float", group="regularization", nullable=True)
    bn_momentum: float | None = _f(None, "BatchNorm momentum (default 0.9 from scratch, untouched "
                                   "for pretrained weights)", kind="float", group="model", nullable=True)
    # Translation and label smoothing by default: over seeds 0-9 on digits they took bare `recipes
    # train` from 97.7 +- 1.2 % to 98.4 +- 1.1 % (paired +0.8 pt [-0.5, +2.0], within noise) at no
    # measured cost per step; on MNIST -0.4 pt [-1.1, +0.3] (BENCHMARKS.md,
    # benchmarks/default_candidates.py). No flip: it changes digits.
    augmentation: str | None = _f(DEFAULT_AUGMENTATION, "light | medium | heavy | randaugment | "
                                  "'rotation:0.1,zoom:0.2' | none",
                                  kind="str", group="augmentation", flag="--augmentation",
                                  aliases=("--augment",), nullable=True)
    augment_placement: str = _f("model", "where augmentation runs", kind="str", group="augmentation",
                                choices=("model", "data"))
    flip: bool = _f(True, "flips in augmentation (--no-flip for digits and text)", kind="bool",
                    group="augmentation")
    mixup: float = _f(0.0, "MixUp Beta alpha (0: off)", kind="float", group="augmentation")
    cutmix: float = _f(0.0, "CutMix Beta alpha (0: off)", kind="float", group="augmentation")
    label_smoothing: float = _f(DEFAULT_LABEL_SMOOTHING, "label smoothing in [0, 1)", kind="float",
                                group="regularization")
    # optimization
    optimizer: str = _f("adam", "optimizer", kind="str", choices=tuple(DEFAULT_LEARNING_RATES))
    learning_rate: float | None = _f(None, "peak learning rate (default: per optimizer, a fifth of it "
                                     "for pretrained weights)", kind="float", flag="--learning-rate",
                                     aliases=("--lr",), nullable=True)
    weight_decay: float = _f(0.0, "decoupled weight decay (biases and BatchNorm excluded)", kind="float",
                             group="regularization")
    momentum: float = _f(0.9, "SGD/RMSprop momentum", kind="float")
    schedule: str | None = _f("cosine", "LR schedule (see callbacks.make_schedule) or none", kind="str",
                              nullable=True)
    warmup_epochs: int = _f(1, "linear warmup epochs (capped at epochs - 1)", kind="int")
    epochs: int = _f(8, "epochs (fine-tune: phase-2 epochs)", kind="int")
    train_steps: int | None = _f(None, "optimizer-step budget: epochs become train_steps / batches "
                                 "per epoch, decided when the data is known (an explicit "
                                 "--epochs replaces it)", kind="int", nullable=True)
    batch_size: int = _f(64, "batch size", kind="int")
    epoch_passes: int = _f(1, "passes over the training split per epoch (a step budget on small "
                           "data makes epochs of at least 50 steps: less per-epoch overhead)",
                           kind="int")
    crop: str | None = _f(None, "how images of another aspect ratio reach the pipeline size "
                          "(folders, tfds): none stretches, center crops, pad letterboxes",
                          kind="str", group="data", nullable=True, choices=("center", "pad"))
    cache: str | None = _f("auto", "decoded images: auto (in memory when a split is under 256 MB), "
                           "memory, none (decode every epoch) or a cache file prefix such as "
                           "./cache/data", kind="str", group="data", nullable=True)
    validation_split: float = _f(0.1, "fraction held out for validation", kind="float", group="model")
    test_split: float = _f(0.1, "fraction held out for the test", kind="float", group="model")
    seed: int = _f(0, "seed for weights, splits, shuffling and augmentation", kind="int")
    # speed (resolved for the machine by recipes.speed; metrics.json records what ran)
    precision: str = _f("auto", "auto (mixed_float16 on a GPU of compute capability >= 7, else "
                        "float32) | float32 | mixed_float16 | mixed_bfloat16", kind="str",
                        group="speed", choices=("auto", "float32", "mixed_float16", "mixed_bfloat16"))
    jit_compile: str | bool = _f("auto", "XLA: auto (on a GPU, off on a CPU, where it measured "
                                 "slower) | true | false", kind="auto_bool", group="speed")
    steps_per_execution: str | int = _f("auto", "training steps per compiled call: auto (several "
                                        "on a GPU, 1 on a CPU or with a per-batch callback) | N",
                                        kind="auto_int", group="speed")
    grappler: str | bool = _f("auto", "TensorFlow graph optimizations: auto (off for runs of at most 500 "
                              "steps on a CPU, where optimizing each graph took longer than it "
                              "saved; else on) | true | false",
                              kind="auto_bool", group="speed")
    class_weight: str | None = _f(None, "balanced: weight the loss by inverse class frequency "
                                  "(imbalanced data); none: every image counts the same",
                                  kind="str", nullable=True, choices=("balanced",))
    patience: int | None = _f(5, "early-stopping patience in epochs on val_loss (0 or none: off)",
                              kind="int", nullable=True)
    ema: float | None = _f(None, "weight EMA momentum, e.g. 0.999 (Keras' use_ema): validated, "
                           "tested and saved with the averaged weights, BatchNorm statistics "
                           "recomputed for them after training; none: off", kind="float",
                           group="regularization", nullable=True)
    precise_bn: bool = _f(False, "recompute BatchNorm statistics after training: for very short "
                          "runs, whose moving statistics lag the weights (off by default: after a "
                          "cosine decay it measured no gain for its ~7 s)", kind="bool")
    # fine-tuning
    head_epochs: int = _f(0, "phase-1 epochs, head only on the frozen backbone (0 skips)", kind="int",
                          group="fine-tuning")
    unfreeze: str | int = _f("top:30%", "what phase 2 unfreezes: all | none | N | top:N | top:P% | "
                             "re:<regex> | a registry block name", kind="policy", group="fine-tuning")
    fine_tune_learning_rate: float | None = _f(None, "phase-2 learning rate (default: a tenth of the "
                                               "peak)", kind="float", group="fine-tuning",
                                               flag="--fine-tune-learning-rate",
                                               aliases=("--fine-tune-lr",), nullable=True)
    layer_lr_decay: float | None = _f(None, "block at distance d from the top trains at lr * decay**d",
                                      kind="float", group="fine-tuning", nullable=True)
    gradual: bool = _f(False, "unfreeze block by block from the top, one block per epoch",
                       kind="bool", group="fine-tuning")
    linear_probe: bool = _f(False, "fine-tuning starts with a linear probe: a logistic regression "
                            "on the frozen backbone's features, written into the head (before "
                            "any head epochs)", kind="bool", group="fine-tuning")
    # which named recipe this is (set by --preset / Recipe.preset; "auto": chosen for the data)
    preset_name: str = _f(AUTO, "named recipe, or auto: chosen by the training split's size when the "
                     "data is loaded (recipe.json records the choice)", kind="str", cli=False)

    # ------------------------------------------------------------------ construction and checks

    def __post_init__(self):
        # Frozen: normalize once, here.
        if isinstance(self.dense_units, (list, int)):
            units = (self.dense_units,) if isinstance(self.dense_units, int) else self.dense_units
            object.__setattr__(self, "dense_units", tuple(units))
        if isinstance(self.weights, os.PathLike):
            object.__setattr__(self, "weights", os.fspath(self.weights))
        if isinstance(self.augmentation, list):
            object.__setattr__(self, "augmentation", ",".join(map(str, self.augmentation)))
        for f in dataclasses.fields(self):  # types first: the range checks below assume them
            value = getattr(self, f.name)
            if not isinstance(value, float):
                v.check_json_value(f.name, value)
        self._validate()
        for f in dataclasses.fields(self):  # what no range check covers: NaN in a free field
            v.check_json_value(f.name, getattr(self, f.name))

    def _validate(self):
        from .registry import backbone_info, validate_alpha

        if not isinstance(self.backbone, str):
            raise ValueError(f"backbone must be a registry name; Received: backbone={self.backbone!r}")
        if not self.is_custom:
            spec = backbone_info(self.backbone)
            validate_alpha(spec, self.alpha)
            if self.drop_connect_rate is not None and spec.family not in ("efficientnet", "efficientnet_v2"):
                raise ValueError("drop_connect_rate applies to EfficientNet backbones only; "
                                 f"Received: backbone={self.backbone!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be a source name or path; Received: dataset={self.dataset!r}")
        v.check_int("image_size", self.image_size, 1, allow_none=True)
        if not self.is_custom:  # bounded by the backbone: 10000 px would run out of memory later
            v.check_image_size(spec, self.image_size)
        if self.weights is not None and not isinstance(self.weights, str):
            raise ValueError(f"weights must be None, 'imagenet' or a file path; Received: {self.weights!r}")
        v.check_choice("pooling", self.pooling, POOLINGS)
        v.check_rate("dropout", self.dropout)
        for units in self.dense_units:
            v.check_int("dense_units", units, 1)
        for name in ("l1", "l2", "mixup", "cutmix", "weight_decay"):
            v.check_number(name, getattr(self, name), 0)
        for name in ("head_batchnorm", "regularize_backbone", "flip", "precise_bn", "gradual",
                     "linear_probe"):
            v.check_bool(name, getattr(self, name))
        v.check_rate("drop_connect_rate", self.drop_connect_rate, allow_none=True)
        v.check_rate("bn_momentum", self.bn_momentum, allow_none=True)
        v.check_rate("label_smoothing", self.label_smoothing)
        v.check_choice("augment_placement", self.augment_placement, ("model", "data"))
        if self.augmentation is not None:
            from .augment_spec import parse_augmentation

            parse_augmentation(self.augmentation, flip=self.flip)
        v.check_choice("optimizer", self.optimizer, tuple(DEFAULT_LEARNING_RATES))
        v.check_number("learning_rate", self.learning_rate, 0, low_open=True, allow_none=True)
        v.check_number("fine_tune_learning_rate", self.fine_tune_learning_rate, 0, low_open=True,
                       allow_none=True)
        v.check_number("momentum", self.momentum, 0, 1)
        v.check_choice("schedule", self.schedule, SCHEDULE_NAMES, allow_none=True)
        v.check_int("warmup_epochs", self.warmup_epochs, 0)
        v.check_int("epochs", self.epochs, 1)
        v.check_int("train_steps", self.train_steps, 1, allow_none=True)
        v.check_int("epoch_passes", self.epoch_passes, 1)
        v.check_number("ema", self.ema, 0, 1, low_open=True, high_open=True, allow_none=True)
        if self.preset_name != AUTO and self.preset_name not in PRESETS:
            raise v.unknown("preset", self.preset_name, (AUTO, *PRESETS), arg="preset_name")
        v.check_int("batch_size", self.batch_size, 1)
        v.check_rate("validation_split", self.validation_split)
        v.check_rate("test_split", self.test_split)
        if self.validation_split + self.test_split >= 1:
            raise ValueError(
                "validation_split + test_split must leave training data (sum < 1); Received: "
                f"validation_split={self.validation_split}, test_split={self.test_split}"
            )
        v.check_int("seed", self.seed, 0, high=2**32)  # what scikit-learn's split accepts
        v.check_int("patience", self.patience, 0, allow_none=True)
        v.check_choice("class_weight", self.class_weight, ("balanced",), allow_none=True)
        from .speed import PRECISIONS

        v.check_choice("precision", self.precision, PRECISIONS)
        for name in ("jit_compile", "grappler"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or value == "auto"):
                raise ValueError(f"{name} must be 'auto', True or False; Received: {name}={value!r}")
        if self.steps_per_execution != "auto":
            if isinstance(self.steps_per_execution, str):
                raise ValueError("steps_per_execution must be 'auto' or an int >= 1; "
                                 f"Received: steps_per_execution={self.steps_per_execution!r}")
            v.check_int("steps_per_execution", self.steps_per_execution, 1)
        v.check_choice("crop", self.crop, ("center", "pad"), allow_none=True)
        v.check_cache(self.cache)
        v.check_int("head_epochs", self.head_epochs, 0)
        v.parse_unfreeze_policy(self.unfreeze)
        v.check_number("layer_lr_decay", self.layer_lr_decay, 0, 1, low_open=True, high_open=False,
                       allow_none=True)

    # ------------------------------------------------------------------ derived defaults

    @property
    def is_custom(self) -> bool:
        """True when the recipe records a model not built from the registry."""
        return self.backbone.startswith(CUSTOM_PREFIX)

    @property
    def pretrained(self) -> bool:
        """True when the backbone starts from weights (ImageNet or a file)."""
        return self.weights is not None

    @property
    def peak_learning_rate(self) -> float:
        """`learning_rate`, or the optimizer's default (scaled by `PRETRAINED_LR_SCALE` when the
        backbone is pretrained). The one place the default learning rate is decided."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        lr = DEFAULT_LEARNING_RATES[self.optimizer]
        return lr * PRETRAINED_LR_SCALE if self.pretrained else lr

    @property
    def phase2_learning_rate(self) -> float:
        """`fine_tune_learning_rate`, or a tenth of `peak_learning_rate`."""
        if self.fine_tune_learning_rate is not None:
            return float(self.fine_tune_learning_rate)
        return self.peak_learning_rate / 10

    @property
    def effective_warmup_epochs(self) -> int:
        """Warmup capped so at least one epoch runs at the peak rate (a 1-epoch run is allowed)."""
        return min(self.warmup_epochs, self.epochs - 1)

    def image_size_for(self, input_shape) -> int:
        """The side the backbone sees for images of `input_shape` (the one size rule).

        `image_size` when set; else, for images of at most 64 px trained from scratch, the
        backbone's minimum (at least 32: small images don't need the ImageNet resolution); else
        the backbone's default size.
        """
        if self.image_size is not None:
            return self.image_size
        from .registry import backbone_info

        spec = backbone_info(self.backbone)
        if not self.pretrained and max(input_shape[:2]) <= _SMALL_IMAGE:
            return max(spec.min_size, 32)
        return spec.default_size

    # ------------------------------------------------------------------ dict / JSON

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every field, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def check_field_names(cls, names) -> None:
        """Raises the closest-match error for the first name that is not a field."""
        fields = cls.field_names()
        for name in names:
            if name not in fields:
                raise v.unknown("recipe field", name, fields, arg="field",
                                allowed=", ".join(fields))

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        """Builds a Recipe, rejecting unknown keys.

        Raises:
            ValueError: A key that is not a field (closest fields listed) or a bad value.
        """
        cls.check_field_names(values)
        return cls(**values)

    @classmethod
    def preset(cls, name: str = "fast", **changes) -> Recipe:
        """A named recipe (see `recipes.presets.PRESETS`) with `changes` applied on top.

        An `epochs` in `changes` replaces the preset's step budget (`train_steps`) unless that is
        given too. `"auto"` is `Recipe(**changes)`: the preset is chosen for the data at training.

        Raises:
            ValueError: An unknown name (closest matches listed), a bad value, or a preset that
                needs what the recipe lacks (fine-tune without weights).

        Example:
            >>> Recipe.preset("fine-tune", epochs=4).head_epochs
            2
        """
        if name == AUTO:
            return cls.from_dict(changes)
        if not isinstance(name, str) or name not in PRESETS:
            raise v.unknown("preset", name, (AUTO, *PRESETS), arg="preset")
        values = {**PRESETS[name], **changes, "preset_name": name}
        if "epochs" in changes and "train_steps" not in changes:
            values.pop("train_steps", None)
        recipe = cls.from_dict(values)
        check_preset_needs(name, recipe)
        return recipe

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (unknown names rejected as in `from_dict`).

        Setting `epochs` without `train_steps` drops a step budget (the epoch count wins).
        """
        self.check_field_names(changes)
        if "epochs" in changes and "train_steps" not in changes:
            changes["train_steps"] = None
        return dataclasses.replace(self, **changes)

    def diff(self, other: Recipe) -> dict:
        """`{field: (self value, other value)}` for every field that differs."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b[k]}

    def to_dict(self) -> dict:
        """Plain JSON dict (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["dense_units"] = list(self.dense_units)
        return d

    def to_json(self) -> str:
        """Strict JSON (no NaN), indented."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def save(self, path) -> Path:
        """Writes the recipe as JSON (atomically)."""
        from .run import atomic_write_text

        return atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls, path) -> Recipe:
        """Reads a recipe written by `save` (e.g. a run folder's `recipe.json`).

        Raises:
            ValueError: Missing file, invalid JSON, unknown fields or bad values.

        Example:
            >>> recipe = Recipe.load("runs/digits/recipe.json")
            >>> recipes.train(recipe=recipe)
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"Recipe file not found; Received: {str(path)!r}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"Recipe file is not valid JSON ({exc}); Received: {str(path)!r}") from None
        if not isinstance(values, dict):
            raise ValueError(f"Recipe file must hold a JSON object; Received: {str(path)!r}")
        return cls.from_dict(values)

    def build_kwargs(self) -> dict:
        """The keyword arguments `build_classifier` takes from this recipe (augmentation as a
        seeded layer when it runs in the model, so runs repeat exactly)."""
        kwargs = {name: getattr(self, name) for name in BUILD_FIELDS}
        kwargs["image_size"] = self.image_size
        if self.augment_placement == "data" or self.augmentation is None:
            kwargs["augmentation"] = None
        else:
            kwargs["augmentation"] = self.augmentation_layer()
        return kwargs

    def augmentation_layer(self):
        """The seeded augmentation layer this recipe describes (None without augmentation)."""
        if self.augmentation is None:
            return None
        from .augment import augmentation

        return augmentation(self.augmentation, seed=self.seed, flip=self.flip)


#: Fields of Recipe that go to build_classifier.
BUILD_FIELDS = (
    "image_size", "weights", "pooling", "dropout", "dense_units", "l1", "l2", "augmentation",
    "alpha", "bn_momentum", "head_batchnorm", "regularize_backbone", "drop_connect_rate",
)
