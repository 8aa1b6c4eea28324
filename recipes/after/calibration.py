"""`calibrate`: temperature scaling (Guo et al. 2017) fitted on the validation split.

One scalar `T` divides the logits before the softmax; it minimizes the validation negative
log-likelihood (scipy's bounded scalar search on log T). The returned model is the same model with
a core `keras.layers.Rescaling(1/T)` layer named `temperature` between its logits and its softmax,
so it reloads with `keras.models.load_model` and no custom objects, and exports like any other.
Argmax (hence accuracy) is unchanged.
"""

from __future__ import annotations

import numpy as np

from .. import validation as v
from .common import collect, load_run_data, logits_layer, logits_model, open_model, split_of

__all__ = ["calibrate", "fit_temperature", "with_temperature", "temperature_of",
           "TEMPERATURE_LAYER", "CALIBRATED_DIR", "CALIBRATION_FILE"]

#: Name of the layer that holds the temperature.
TEMPERATURE_LAYER = "temperature"
#: Sub-folder of a run where the calibrated model goes (a run folder itself).
CALIBRATED_DIR = "calibrated"
#: The fitted temperature and the validation figures before/after, in `CALIBRATED_DIR`.
CALIBRATION_FILE = "calibration.json"

_LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]: far beyond what a trained classifier needs


def fit_temperature(logits, labels) -> float:
    """The temperature that minimizes the negative log-likelihood of `softmax(logits / T)`.

    Args:
        logits: `(N, C)` pre-softmax scores.
        labels: `(N,)` integer labels.

    Returns:
        `T > 0` (above 1 softens an over-confident model).

    Example:
        >>> fit_temperature(10 * logits, labels) > fit_temperature(logits, labels)
        True
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.asarray(logits, "float64")
    labels = np.asarray(labels).reshape(-1).astype(int)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise ValueError(f"Needs (N, C) logits and N labels; Received: logits of shape "
                         f"{logits.shape}, {len(labels)} labels")
    rows = np.arange(len(labels))

    def nll(log_t):
        return -np.mean(log_softmax(logits / np.exp(log_t), axis=1)[rows, labels])

    found = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded")
    return float(np.exp(found.x))


def with_temperature(model, temperature: float):
    """`model` with `softmax(logits / temperature)` as its output (a new model, shared layers).

    A model that already has a temperature gets the new one instead (never two).

    Raises:
        ValueError: A temperature that is not a positive number, or a model without logits.
    """
    import keras

    temperature = v.check_number("temperature", temperature, 0, low_open=True)
    logits, _ = logits_layer(model)
    x = keras.layers.Rescaling(1.0 / temperature, name=TEMPERATURE_LAYER, dtype="float32")(logits)
    out = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(model.inputs, out, name=model.name)


def temperature_of(model) -> float:
    """The model's temperature (1.0 when it has no temperature layer)."""
    return logits_layer(model)[1]


def calibrate(model_or_run, data=None, *, split="validation", out=None, write=None):
    """Fits temperature scaling on the validation split and returns the calibrated model.

    Args:
        model_or_run: A run folder, a `.keras` file or a `keras.Model`.
        data: A `Data`, a source or `(x, y)` (default: the run's dataset, split with its seed).
        split: Where the temperature is fitted (default "validation", never the test split
            that `evaluate` reports on).
        out: Folder for the calibrated run (`model.keras`, `recipe.json`, `calibration.json`;
            default `<run>/calibrated`; a model in memory writes nothing without `out`).
        write: Write the files (default: when there is a folder to write to).

    Returns:
        The calibrated `keras.Model`; `recipes.after.temperature_of(model)` gives `T`.

    Raises:
        ValueError: A bad model or run, no data, a split the data does not have.

    Example:
        >>> model = recipes.calibrate("runs/digits")  # writes runs/digits/calibrated/
        >>> recipes.evaluate("runs/digits").calibrated["ece"]
    """
    from .evaluation import calibration_metrics

    src = open_model(model_or_run)
    lm, old = logits_model(src.model)
    data = load_run_data(src, data)
    ds = split_of(data, split)
    result = collect(lm, ds)
    logits, probs = (o.astype("float64") for o in result["outputs"])
    labels = result["labels"].astype(int)
    temperature = fit_temperature(logits, labels)
    calibrated = with_temperature(src.model, temperature)
    from scipy.special import softmax

    summary = {
        "temperature": temperature, "previous_temperature": old, "split": split,
        "size": int(len(labels)),
        "before": calibration_metrics(probs, labels),
        "after": calibration_metrics(softmax(logits / temperature, axis=1), labels),
    }
    folder = None
    if write is None or write:
        try:
            folder = src.out_dir(CALIBRATED_DIR, out)
        except ValueError:
            if write:
                raise
    if folder is not None:
        folder.save_model(calibrated)
        if src.recipe is not None:
            folder.save_recipe(src.recipe)
        folder.write_json(CALIBRATION_FILE, summary)
    calibrated.calibration = summary  # the figures, for the caller (not saved with the model)
    return calibrated
