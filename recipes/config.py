"""`Recipe`: the one config that flows CLI -> builder -> trainer -> tuner -> run folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .registry import closest_matches

__all__ = ["Recipe", "DEFAULT_BACKBONE"]

#: The backbone bare `recipes train` uses (fast and accurate from scratch on small images).
DEFAULT_BACKBONE = "mobilenet_v3_small"

# Fields of Recipe that go to build_classifier unchanged.
_BUILD_FIELDS = (
    "image_size", "weights", "pooling", "dropout", "dense_units", "l1", "l2", "augmentation",
    "alpha", "bn_momentum", "head_batchnorm", "regularize_backbone", "drop_connect_rate",
)


@dataclasses.dataclass
class Recipe:
    """Everything needed to redo a run; saved as `recipe.json` in every run folder.

    The defaults are the settings bare `recipes train` uses: they reach >= 95 % test accuracy on
    digits in under 3 minutes on 2 CPU cores (see BENCHMARKS.md).

    Attributes:
        backbone: Registry name (default `DEFAULT_BACKBONE`).
        dataset: Data source for `load_data` (default `"digits"`).
        image_size: Side the backbone sees (None: the registry default; for images of at most
            64 px trained from scratch, the backbone's minimum, 32 for the default).
        alpha: MobileNet width multiplier.
        weights: None, "imagenet" or a weights file.
        pooling, dropout, dense_units, l1, l2, head_batchnorm, regularize_backbone,
        drop_connect_rate, bn_momentum: Passed to `build_classifier`.
        augmentation: Preset, list or None; `augment_placement` "model" or "data"; `flip` False
            drops flips (digits, text: a mirror image is another class).
        mixup, cutmix, label_smoothing: Batch mixing alphas and label smoothing.
        optimizer, learning_rate, weight_decay, momentum: Optimizer settings (learning_rate None:
            the optimizer's default).
        schedule, warmup_epochs: LR schedule name (see `callbacks.make_schedule`) and linear
            warmup epochs (capped at `epochs - 1`).
        epochs, batch_size, validation_split, test_split, seed: Training loop and data split.
        patience: Early-stopping patience in epochs on `val_loss`, best weights restored
            (default 5; 0 or None: no early stopping).
        precise_bn: Recompute BatchNorm statistics after training (from-scratch runs).
        head_epochs, unfreeze, fine_tune_learning_rate, layer_lr_decay, gradual: Fine-tuning stages
            (used by `recipes.fine_tune`).
    """

    backbone: str = DEFAULT_BACKBONE
    dataset: str = "digits"
    image_size: int | None = None
    alpha: float | None = None
    weights: str | None = None
    pooling: str = "avg"
    dropout: float = 0.2
    dense_units: tuple = ()
    l1: float = 0.0
    l2: float = 0.0
    head_batchnorm: bool = False
    regularize_backbone: bool = False
    drop_connect_rate: float | None = None
    bn_momentum: float | None = None
    augmentation: object = None
    augment_placement: str = "model"
    flip: bool = True
    mixup: float = 0.0
    cutmix: float = 0.0
    label_smoothing: float = 0.0
    optimizer: str = "adam"
    learning_rate: float | None = None
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str | None = "cosine"
    warmup_epochs: int = 1
    epochs: int = 12
    batch_size: int = 64
    validation_split: float = 0.1
    test_split: float = 0.1
    seed: int = 0
    patience: int | None = 5
    precise_bn: bool = True
    head_epochs: int = 0
    unfreeze: object = "top:30%"
    fine_tune_learning_rate: float | None = None
    layer_lr_decay: float | None = None
    gradual: bool = False

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of every field, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> Recipe:
        """Builds a Recipe, rejecting unknown keys.

        Raises:
            ValueError: A key that is not a field; the message lists the closest fields.
        """
        names = cls.field_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            key = unknown[0]
            hint = closest_matches(key, names)
            raise ValueError(
                f"Unknown recipe field; Received: {key!r}."
                + (f" Did you mean: {', '.join(hint)}?" if hint else "")
                + f" Valid fields: {', '.join(names)}"
            )
        values = dict(values)
        if isinstance(values.get("dense_units"), list):
            values["dense_units"] = tuple(values["dense_units"])
        return cls(**values)

    def replace(self, **changes) -> Recipe:
        """A copy with some fields changed (unknown names rejected as in `from_dict`)."""
        return Recipe.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        """Plain JSON-friendly dict."""
        d = dataclasses.asdict(self)
        d["dense_units"] = list(self.dense_units)
        return d

    def save(self, path) -> Path:
        """Writes the recipe as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return path

    @classmethod
    def load(cls, path) -> Recipe:
        """Reads a recipe written by `save` (e.g. a run folder's `recipe.json`).

        Example:
            >>> recipe = Recipe.load("runs/digits/recipe.json")
            >>> recipes.train(recipe.backbone, recipe.dataset, recipe=recipe)
        """
        return cls.from_dict(json.loads(Path(path).read_text()))

    def build_kwargs(self) -> dict:
        """The keyword arguments `build_classifier` takes from this recipe."""
        kwargs = {name: getattr(self, name) for name in _BUILD_FIELDS}
        if self.augment_placement == "data":
            kwargs["augmentation"] = None
        return kwargs
