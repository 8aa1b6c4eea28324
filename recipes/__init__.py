"""keras-recipes: Keras 3 image classifiers that take raw pixels, with training tricks built in.

The public API is what `__all__` lists: the verbs (`train`, `fine_tune`, `search`, `find_lr`,
`build_classifier`, `load_data`, `ensemble`, ...) and the types they take and return (`Recipe`,
`Data`, `Result`, `RunFolder`, `SearchResult`). Everything else lives in its sub-module
(`recipes.training.make_optimizer`, `recipes.layers.Backbone`, ...).

Example:
    >>> import recipes
    >>> result = recipes.train("mobilenet", "digits", out="runs/digits")
    >>> result.metrics["test_accuracy"]
"""

import os as _os

# TensorFlow's C++ start-up chatter drowns the CLI's output; users can still override it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from . import startup as _startup  # noqa: E402  (pure Python: it runs before TensorFlow)

_startup.choose_cpu_kernels()  # the `recipes` command only; see recipes/startup.py

from callbacks import TrainingDiverged  # noqa: E402  (raised by train, fine_tune)

_startup.remember_flag()  # TensorFlow is imported now: keep the flag it read (runs record it)

# Imported for their registered Keras objects: a fresh process that imports recipes can then
# load_model() any saved model (layers, smoothed loss, mixed metrics, layer-wise optimizer)
# without custom_objects.
from . import augment, layers, metrics, mixing  # noqa: E402, F401
from .ablate import AblationResult, ablate  # noqa: E402
from .after import Report, calibrate, evaluate, export, grad_cam, predict  # noqa: E402
from .augment import augmentation  # noqa: E402
from .bagging import EnsembleResult, bagging, snapshot_ensemble  # noqa: E402
from .builder import build_classifier  # noqa: E402
from .config import DEFAULT_BACKBONE, Recipe  # noqa: E402
from .data import DEFAULT_DATASET, Data, load_data  # noqa: E402
from .distill import distill  # noqa: E402
from .ensemble import ensemble  # noqa: E402
from .finetune import fine_tune, linear_probe, unfreeze_policy_layers  # noqa: E402
from .lr_find import find_lr  # noqa: E402
from .portable import portable_model  # noqa: E402
from .presets import PRESETS  # noqa: E402
from .registry import backbone_info, list_backbones  # noqa: E402
from .run import RunFolder  # noqa: E402
from .training import Result, train  # noqa: E402
from .tuning import SearchResult, search  # noqa: E402
from .weights import WeightsUnavailableError, find_backbone, save_backbone  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "AblationResult",
    "DEFAULT_BACKBONE",
    "DEFAULT_DATASET",
    "Data",
    "EnsembleResult",
    "PRESETS",
    "Recipe",
    "Report",
    "Result",
    "RunFolder",
    "SearchResult",
    "TrainingDiverged",
    "WeightsUnavailableError",
    "ablate",
    "augmentation",
    "backbone_info",
    "bagging",
    "build_classifier",
    "calibrate",
    "distill",
    "ensemble",
    "evaluate",
    "export",
    "find_backbone",
    "find_lr",
    "fine_tune",
    "grad_cam",
    "list_backbones",
    "linear_probe",
    "load_data",
    "portable_model",
    "predict",
    "save_backbone",
    "search",
    "snapshot_ensemble",
    "train",
    "unfreeze_policy_layers",
]
