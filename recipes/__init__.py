"""keras-recipes: Keras 3 image classifiers that take raw pixels, with training tricks built in.

Example:
    >>> import recipes
    >>> result = recipes.train("mobilenet", "digits", out="runs/digits")
    >>> result.metrics["test_accuracy"]
"""

import os as _os

# TensorFlow's C++ start-up chatter drowns the CLI's output; users can still override it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Imported for their registered Keras objects: a fresh process can then load_model() any saved
# model (augmentation layers, smoothed loss, mixed metrics) without custom_objects.
from . import augment, mixing  # noqa: E402, F401
from .augment import apply_augmentation, augmentation  # noqa: E402
from .builder import POOLINGS, build_classifier  # noqa: E402
from .config import DEFAULT_BACKBONE, Recipe  # noqa: E402
from .data import DEFAULT_DATASET, Data, load_data  # noqa: E402
from .ensemble import ensemble  # noqa: E402
from .finetune import (  # noqa: E402 (also registers the layer-wise optimizer for load_model)
    apply_unfreeze_policy,
    fine_tune,
    layer_lr_multipliers,
    unfreeze_policy_layers,
)
from .layers import BackbonePreprocessing, InferenceModeBackbone, ToRGB  # noqa: E402
from .lr_find import find_lr  # noqa: E402
from .metrics import MacroPrecision, MacroRecall  # noqa: E402
from .mixing import MixedAccuracy, SmoothedCrossentropy, mix_batches  # noqa: E402
from .registry import BackboneSpec, backbone_info, list_backbones  # noqa: E402
from .training import OPTIMIZERS, SCHEDULES, Result, make_optimizer, plot_curves, train  # noqa: E402
from .tuning import (  # noqa: E402
    SEARCHABLE_FIELDS,
    TUNERS,
    RecipeHyperModel,
    SearchFailedError,
    SearchResult,
    resolve_search_space,
    search,
)
from .weights import (  # noqa: E402
    WeightsUnavailableError,
    find_backbone,
    imagenet_weights_file,
    keras_cache_dir,
    save_backbone,
)

__version__ = "0.1.0"

__all__ = [
    "BackbonePreprocessing",
    "BackboneSpec",
    "DEFAULT_BACKBONE",
    "DEFAULT_DATASET",
    "InferenceModeBackbone",
    "Data",
    "MacroPrecision",
    "MacroRecall",
    "MixedAccuracy",
    "OPTIMIZERS",
    "POOLINGS",
    "Recipe",
    "RecipeHyperModel",
    "SEARCHABLE_FIELDS",
    "SearchFailedError",
    "SearchResult",
    "TUNERS",
    "Result",
    "SCHEDULES",
    "SmoothedCrossentropy",
    "ToRGB",
    "WeightsUnavailableError",
    "apply_augmentation",
    "augmentation",
    "backbone_info",
    "build_classifier",
    "ensemble",
    "find_backbone",
    "find_lr",
    "fine_tune",
    "layer_lr_multipliers",
    "unfreeze_policy_layers",
    "apply_unfreeze_policy",
    "imagenet_weights_file",
    "keras_cache_dir",
    "list_backbones",
    "load_data",
    "make_optimizer",
    "mix_batches",
    "plot_curves",
    "resolve_search_space",
    "save_backbone",
    "search",
    "train",
]
