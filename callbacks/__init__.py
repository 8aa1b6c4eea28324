"""Training callbacks and learning-rate schedules for keras-recipes (pure Keras 3).

* LR decay callbacks with warmup (``StepDecay``, ``ExponentialDecay``, ...),
  each also available as an optimizer schedule via ``.as_schedule``;
  ``make_schedule`` builds one by name; ``Warmup`` wraps any Keras schedule.
* ``OneCycle`` / ``OneCycleSchedule`` (fastai one-cycle with inverse momentum).
* ``find_lr`` / ``LRFinder`` (LR range test).
* Presets over Keras' EarlyStopping, ModelCheckpoint, BackupAndRestore,
  TerminateOnNaN (``default_callbacks``).
* ``ResilientBackup``, ``StopOnDivergence`` (raises ``TrainingDiverged``),
  ``LossExplosionWarning``: runs that survive kills, corrupt backups and NaN.
* ``PreciseBN`` / ``recompute_bn_statistics``, ``GradualUnfreeze``,
  ``Throughput``, ``LearningRateLogger``, ``plot_schedule``.
"""

from callbacks.factory import SCHEDULE_NAMES, make_schedule
from callbacks.lr_finder import LRFinder, LRFinderResult, find_lr
from callbacks.lr_logger import LearningRateLogger
from callbacks.one_cycle import OneCycle, OneCycleSchedule
from callbacks.plotting import plot_schedule
from callbacks.precise_bn import PreciseBN, recompute_bn_statistics
from callbacks.presets import (
    backup,
    checkpoint,
    default_callbacks,
    early_stopping,
    terminate_on_nan,
)
from callbacks.resilience import (
    LossExplosionWarning,
    ResilientBackup,
    ResumableCSVLogger,
    RunWarning,
    StopOnDivergence,
    TrainingDiverged,
)
from callbacks.schedules import (
    ConstantLR,
    CosineDecay,
    CosineRestarts,
    ExponentialDecay,
    LinearDecay,
    PowerDecay,
    ScheduleCallback,
    StepDecay,
    TimeBasedDecay,
)
from callbacks.throughput import Throughput
from callbacks.unfreeze import GradualUnfreeze
from callbacks.warmup import Warmup

__all__ = [
    "SCHEDULE_NAMES",
    "ConstantLR",
    "CosineDecay",
    "CosineRestarts",
    "ExponentialDecay",
    "GradualUnfreeze",
    "LRFinder",
    "LRFinderResult",
    "LearningRateLogger",
    "LinearDecay",
    "LossExplosionWarning",
    "OneCycle",
    "OneCycleSchedule",
    "PowerDecay",
    "PreciseBN",
    "ResilientBackup",
    "ResumableCSVLogger",
    "RunWarning",
    "ScheduleCallback",
    "StepDecay",
    "StopOnDivergence",
    "Throughput",
    "TimeBasedDecay",
    "TrainingDiverged",
    "Warmup",
    "backup",
    "checkpoint",
    "default_callbacks",
    "early_stopping",
    "find_lr",
    "make_schedule",
    "plot_schedule",
    "recompute_bn_statistics",
    "terminate_on_nan",
]
