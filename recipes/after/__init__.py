"""After training: evaluate, calibrate, predict, export and explain a trained classifier.

Every function takes a run folder (its `recipe.json` gives the data and splits, so the test split
is the one the run held out), a `.keras` file or a built `keras.Model`.

- `evaluate`: per-class report (scikit-learn), confusion matrix, calibration (ECE, NLL, Brier),
  top losses, reliability diagram, test-time augmentation -> `Report`.
- `calibrate`: temperature scaling fitted on the validation split -> a model that reloads with
  no custom objects.
- `predict`: image files, folders or arrays, streamed in batches -> `Predictions` (and a CSV).
- `export`: SavedModel, TFLite fp32 / fp16 / int8, each checked against the Keras model.
- `grad_cam` / `explain`: Grad-CAM heat maps at the registry's feature-map layer.
"""

from .calibration import calibrate, fit_temperature, temperature_of, with_temperature
from .common import open_model
from .evaluation import (
    Report,
    calibration_metrics,
    evaluate,
    expected_calibration_error,
    reliability_bins,
)
from .exporting import FORMATS, export, load_artifact
from .gradcam import explain, grad_cam
from .prediction import Predictions, predict

__all__ = [
    "FORMATS",
    "Predictions",
    "Report",
    "calibrate",
    "calibration_metrics",
    "evaluate",
    "expected_calibration_error",
    "explain",
    "export",
    "fit_temperature",
    "grad_cam",
    "load_artifact",
    "open_model",
    "predict",
    "reliability_bins",
    "temperature_of",
    "with_temperature",
]
