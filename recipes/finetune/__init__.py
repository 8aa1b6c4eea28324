"""Fine-tuning: `fine_tune` (two `recipes.train` phases), unfreeze policies, layer-wise rates.

- `policy`: which backbone layers an unfreeze policy selects, and setting the trainable flags.
- `layerwise`: `layer_lr_multipliers`, `layerwise_optimizer`, `LayerwiseOptimizer`,
  `ScaledSchedule` (registered Keras objects: saved models reload with them).
- `probe`: `linear_probe`, a scikit-learn logistic regression on the frozen features written
  into the head (the small-data preset's start of fine-tuning).
- `two_phase`: `fine_tune`, the orchestration.

Example:
    >>> from recipes.finetune import fine_tune, unfreeze_policy_layers
    >>> result = fine_tune("mobilenet_v2", "flowers/", unfreeze="block_13", out="runs/flowers")
"""

from ..presets import PRESETS
from ..validation import parse_unfreeze_policy
from .layerwise import LayerwiseOptimizer, ScaledSchedule, layer_lr_multipliers, layerwise_optimizer
from .policy import apply_unfreeze_policy, unfreeze_policy_layers
from .probe import PROBE_C_GRID, linear_probe
from .two_phase import fine_tune

#: The fields `fine_tune` uses when no recipe is given: `Recipe.preset("fine-tune")`'s changes.
FINE_TUNE_DEFAULTS = PRESETS["fine-tune"]

#: Checks an unfreeze policy's syntax (no model needed): `recipes.validation.parse_unfreeze_policy`.
check_unfreeze_policy = parse_unfreeze_policy

__all__ = [
    "FINE_TUNE_DEFAULTS",
    "LayerwiseOptimizer",
    "PROBE_C_GRID",
    "ScaledSchedule",
    "apply_unfreeze_policy",
    "check_unfreeze_policy",
    "fine_tune",
    "layer_lr_multipliers",
    "layerwise_optimizer",
    "linear_probe",
    "unfreeze_policy_layers",
]
