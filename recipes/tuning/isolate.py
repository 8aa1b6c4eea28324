"""Isolated trials: each trial trains in a fresh Python process, so memory cannot grow across
trials (KerasTuner #395, #873, #1031).

The parent writes the splits once (`<project>/isolated_data.npz`) and a job file per execution
(`<trial>/isolated_job.json`); the child (`python -m recipes.tuning --run-trial JOB`) rebuilds
the model, trains it, saves the best epoch's weights where KerasTuner's checkpoint goes (Keras'
own `ModelCheckpoint`), and writes its history (`isolated_result.json`). The error kinds it
reports map onto the same outcomes as an in-process trial (see `recipes.tuning.hypermodel`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras_tuner

from ..config import Recipe
from ..run import RunFolder

__all__ = ["CHILD_COMMAND", "fit_isolated", "run_trial_file"]

#: The isolated trial's process, followed by the job file (see `__main__.py`).
CHILD_COMMAND = (sys.executable, "-m", "recipes.tuning", "--run-trial")

_DATA_FILE = "isolated_data.npz"
_JOB_FILE = "isolated_job.json"
_RESULT_FILE = "isolated_result.json"
_LOG_FILE = "isolated.log"


# --------------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------------


def fit_isolated(hypermodel, recipe: Recipe, model, callbacks, continued: bool) -> dict:
    """Trains one execution in a child process; returns its history like `fit_recipe`.

    Args:
        hypermodel: The `RecipeHyperModel` (data, work_dir, objective, verbosity).
        recipe: The execution's Recipe.
        model: The model KerasTuner built (holds the continued trial's weights when `continued`).
        callbacks: KerasTuner's callbacks; its best-epoch checkpoint names the weights file.
        continued: Hyperband continues a trial: hand `model`'s weights to the child.

    Raises:
        keras_tuner.errors.FailedTrialError: An invalid recipe, out of memory, or a child that
            died without a result.
        keras_tuner.errors.FatalValueError: A `ValueError` while training.
        RuntimeError: Any other error of the child (KerasTuner counts the trial as failed).
    """
    kt = keras_tuner
    checkpoint = next(
        (cb.filepath for cb in callbacks if type(cb).__name__ == "SaveBestEpoch"), None
    )
    if checkpoint is None or hypermodel.work_dir is None:
        raise RuntimeError("isolate=True needs KerasTuner's checkpoint callback and a work_dir")
    trial = RunFolder(Path(checkpoint).parent)
    init = None
    if continued:
        init = trial.file("initial.weights.h5")
        model.save_weights(str(init))
    job = {
        "recipe": recipe.to_dict(),
        "data": str(write_data(hypermodel.data, hypermodel.work_dir)),
        "checkpoint": str(checkpoint),
        "initial_weights": None if init is None else str(init),
        "objective": hypermodel.objective,
        "direction": hypermodel.direction,
        "verbose": hypermodel.verbose,
        "result": str(trial.file(_RESULT_FILE)),
    }
    job_file = trial.write_json(_JOB_FILE, job)
    trial.clear(_RESULT_FILE)
    log = trial.file(_LOG_FILE)
    env = {k: x for k, x in os.environ.items() if not k.startswith("KERASTUNER_")}
    with open(log, "w") as out:
        code = subprocess.call(
            [*CHILD_COMMAND, str(job_file)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if not trial.file(_RESULT_FILE).is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise kt.errors.FailedTrialError(
            f"Isolated trial process exited with code {code} (killed for memory?) without a "
            f"result; log {log}: {' | '.join(tail)}"
        )
    result = trial.read_json(_RESULT_FILE)
    error, kind = result.get("error"), result.get("kind")
    if error:
        if kind == "recipe":
            raise kt.errors.FailedTrialError(f"Invalid recipe: {error}")
        if kind == "memory":
            raise kt.errors.FailedTrialError(f"Out of memory: {error}")
        if kind == "diverged":
            raise kt.errors.FailedTrialError(error)
        if kind == "value":
            raise kt.errors.FatalValueError(
                f"{error} (while training in an isolated process, log {log}); the trial's recipe "
                "was valid, so this is not a bad hyperparameter value; the search stops"
            )
        raise RuntimeError(error)
    # Strict JSON carried NaN losses as null; the parent's NaN check needs them back.
    return {
        k: [math.nan if x is None else x for x in values] for k, values in result["history"].items()
    }


def write_data(data, work_dir: Path) -> Path:
    """Writes the train/validation splits once, so every child sees exactly this data."""
    import numpy as np

    path = Path(work_dir) / _DATA_FILE
    if path.is_file():
        return path
    arrays = {}
    for split in ("train", "validation"):
        ds = getattr(data, split)
        xs, ys = [], []
        for x, y in ds if ds is not None else []:
            xs.append(np.asarray(x))
            ys.append(np.asarray(y))
        arrays[f"x_{split}"] = np.concatenate(xs) if xs else np.zeros((0, *data.input_shape), "uint8")
        arrays[f"y_{split}"] = np.concatenate(ys) if ys else np.zeros((0,), "int32")
    meta = {"class_names": list(data.class_names), "input_shape": list(data.input_shape),
            "source": data.source}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------------


def _read_data(path, batch_size, seed):
    import numpy as np
    import tensorflow as tf

    from ..data import Data

    npz = np.load(path)
    meta = json.loads(str(npz["meta"]))

    def pipeline(x, y, shuffle, shuffle_seed):
        if len(y) == 0:
            return None
        ds = tf.data.Dataset.from_tensor_slices((x, y)).cache()
        if shuffle:
            ds = ds.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    x_train, y_train = npz["x_train"], npz["y_train"]
    return Data(
        train=pipeline(x_train, y_train, True, seed),
        validation=pipeline(npz["x_validation"], npz["y_validation"], False, None),
        test=None,
        class_names=meta["class_names"],
        input_shape=tuple(meta["input_shape"]),
        source=meta["source"],
        sizes={"train": len(y_train), "validation": len(npz["y_validation"])},
        batch_size=batch_size,
        make_train=lambda s: pipeline(x_train, y_train, True, s),
    )


def _error(exc: BaseException, kind: str) -> dict:
    return {"error": f"{type(exc).__name__}: {str(exc)[:2000]}", "kind": kind}


def run_trial_file(job_file) -> int:
    """Entry point of an isolated trial: trains the job's recipe, writes its history as JSON.

    The result file holds `{"history": ...}`, or `{"error": text, "kind": kind}` with kind
    `"recipe"` (the Recipe or model could not be made), `"memory"`, `"diverged"` (a NaN/inf loss),
    `"value"` (a ValueError while training) or `"other"`.

    Returns:
        0 (the outcome is in the result file).
    """
    import keras

    from callbacks import TrainingDiverged

    from ..training import build_from_recipe
    from .hypermodel import diverged_message, fit_recipe

    job_file = Path(job_file)
    job = RunFolder(job_file.parent).read_json(job_file.name)
    out = Path(job["result"])
    stage = "recipe"
    try:
        recipe = Recipe.from_dict(job["recipe"])
        data = _read_data(job["data"], recipe.batch_size, recipe.seed)
        model = build_from_recipe(recipe, data)
        if job["initial_weights"]:
            model.load_weights(job["initial_weights"])
        stage = "training"
        checkpoint = keras.callbacks.ModelCheckpoint(
            job["checkpoint"], monitor=job["objective"], mode=job["direction"],
            save_best_only=True, save_weights_only=True,
        )
        payload = {"history": fit_recipe(recipe, model, data, [checkpoint], job["verbose"])}
    except MemoryError as exc:
        payload = _error(exc, "memory")
    except TrainingDiverged as exc:
        payload = {"error": diverged_message(exc, recipe), "kind": "diverged"}
    except ValueError as exc:
        payload = _error(exc, "recipe" if stage == "recipe" else "value")
    except Exception as exc:  # reported to the parent, which decides whether the trial is retried
        payload = _error(exc, "memory" if type(exc).__name__ == "ResourceExhaustedError" else "other")
    RunFolder(out.parent).write_json(out.name, payload)
    return 0
