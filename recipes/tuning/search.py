"""`search`: KerasTuner's tuners over `Recipe`s, with a resume guard, failed trials and a record
of every trial.

Resume is safe: the search arguments are stored in `<project>/search_args.json`; re-running with
different ones raises instead of silently keeping the old ones (KerasTuner #234, #803, #143).
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path

import keras_tuner

from .. import validation as v
from ..run import RunFolder
from ..speed import frozen_survivors
from .hypermodel import RecipeHyperModel, objective_direction
from .result import RESULTS_FILE, TRIAL_INFO, SearchResult, better, fmt, last_line
from .space import backbone_list, base_recipe, check_keys, jsonable, resolve, searched_values

__all__ = ["TUNERS", "SearchFailedError", "search"]

#: Tuner names and the KerasTuner classes they use.
TUNERS = {
    "random": "RandomSearch",
    "grid": "GridSearch",
    "bayesian": "BayesianOptimization",
    "hyperband": "Hyperband",
}

_ARGS_FILE = "search_args.json"
# Arguments that may change between runs of one project: they do not change what a trial means.
_MAY_CHANGE = ("max_trials", "max_consecutive_failed_trials", "isolate")


class SearchFailedError(RuntimeError):
    """Too many trials failed in a row; the message names the last error and the results table."""


# --------------------------------------------------------------------------------------------
# The tuner: KerasTuner's, plus a progress line and a per-trial record
# --------------------------------------------------------------------------------------------


class _TrialRecords:
    """Mixed into KerasTuner's tuner classes: per-trial timing/epochs file and a progress line."""

    progress = True
    #: A `recipes.speed.frozen_survivors` scope while `search` runs (None: a plain collection).
    survivors = None

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_started = time.time()
        self.hypermodel.begin_trial()

    def on_trial_end(self, trial):
        import keras

        seconds = time.time() - getattr(self, "_trial_started", time.time())
        last = dict(self.hypermodel.last)
        try:
            recipe = jsonable(self.hypermodel.recipe(trial.hyperparameters.values).to_dict())
        except ValueError:
            recipe = None  # a failed trial whose values make no Recipe
        info = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            "seconds": round(seconds, 1),
            "epochs": last.get("epochs"),
            "objective": last.get("objective"),
            "tuner_id": self.tuner_id,
            "message": last_line(trial.message) if trial.status != "COMPLETED" else "",
            "recipe": recipe,
        }
        RunFolder(self.get_trial_dir(trial.trial_id)).write_json(TRIAL_INFO, info)
        if self.progress:
            print(_progress_line(self, trial, info), flush=True)
        try:
            super().on_trial_end(trial)
        finally:
            # KerasTuner clears the session before the next build; clearing here as well frees
            # the finished trial's graphs and datasets before the oracle picks the next one.
            # The graphs TensorFlow keeps anyway are frozen out of the later trials' collections.
            keras.backend.clear_session()
            if self.survivors is not None:
                self.survivors.collected()
            else:
                gc.collect()


def _progress_line(tuner, trial, info) -> str:
    hm = tuner.hypermodel
    best = _best_on_disk(Path(tuner.project_dir), hm.direction)
    value = info["objective"]
    parts = [f"[{info['tuner_id']}] trial {trial.trial_id} {trial.status:<9}"]
    parts.append(f"{hm.objective}={value:.4f}" if value is not None else f"{hm.objective}=-")
    if best is not None:
        parts.append(f"best={best:.4f}")
    parts.append(f"epochs={info['epochs'] if info['epochs'] is not None else '-'}")
    parts.append(f"{info['seconds']:.1f}s")
    searched = searched_values(hm.space, trial.hyperparameters.values)
    text = " ".join(parts)
    if searched:
        text += " | " + " ".join(f"{k}={fmt(x)}" for k, x in searched.items())
    if trial.status != "COMPLETED" and trial.message:
        text += f" | {last_line(trial.message)}"
    return text


def _best_on_disk(project_dir: Path, direction) -> float | None:
    best = None
    for info_file in project_dir.glob(f"trial_*/{TRIAL_INFO}"):
        try:
            info = RunFolder(info_file.parent).read_json(TRIAL_INFO)
        except (OSError, ValueError):
            continue
        value = info.get("objective")
        if info.get("status") == "COMPLETED" and better(value, best, direction):
            best = value
    return best


def _liveness(role, tuner, project: RunFolder):
    """Workers beat, the chief watches the beats (`recipes.tuning.heartbeat`), so that a killed
    worker's trial is given up instead of hanging the chief; nothing on one machine."""
    import contextlib

    from .heartbeat import Heartbeat, Watchdog

    if role == "worker":
        return Heartbeat(project.path, tuner.tuner_id)
    if role == "chief":
        return Watchdog(tuner.oracle, project.path)
    return contextlib.nullcontext()


def _tuner_class(name):
    base = getattr(keras_tuner, TUNERS[name])
    return type(f"Recipe{base.__name__}", (_TrialRecords, base), {})


# --------------------------------------------------------------------------------------------
# Projects: role, name, resume guard
# --------------------------------------------------------------------------------------------


def _role() -> str:
    """"chief", "worker" or "single", from KerasTuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _dataset_tag(dataset) -> str:
    import re

    tag = re.sub(r"[^A-Za-z0-9]+", "_", str(dataset).rstrip("/").split("/")[-1]).strip("_")
    return tag or "data"


def _diff(saved, now, prefix="") -> list[str]:
    out = []
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now), key=str):
            if key not in saved:
                out.append(f"{prefix}{key}: not set before, now {now[key]!r}")
            elif key not in now:
                out.append(f"{prefix}{key}: was {saved[key]!r}, now not set")
            else:
                out += _diff(saved[key], now[key], f"{prefix}{key}.")
        return out
    if saved != now:
        out.append(f"{prefix.rstrip('.')}: was {saved!r}, now {now!r}")
    return out


def _check_project(project: RunFolder, args: dict, role: str):
    """Refuses to resume a project whose stored arguments differ (KerasTuner would ignore them)."""
    if not project.file(_ARGS_FILE).is_file():
        if role != "worker" and project.file("oracle.json").is_file():
            raise ValueError(
                f"{project.path} holds a KerasTuner project without {_ARGS_FILE} (not started by "
                "recipes.search, or by an older version), so its arguments cannot be checked. "
                "Pass overwrite=True (CLI: --overwrite) to start over, or use another project_name."
            )
        return
    saved = project.read_json(_ARGS_FILE)
    keep = {k: x for k, x in saved.items() if k not in _MAY_CHANGE}
    now = {k: x for k, x in jsonable(args).items() if k not in _MAY_CHANGE}
    differences = _diff(keep, now)
    if differences:
        raise ValueError(
            f"The search in {project.path} was started with different arguments, and KerasTuner "
            f"would silently keep the old ones. Differences: {'; '.join(differences[:8])}"
            + (f" (and {len(differences) - 8} more)" if len(differences) > 8 else "")
            + ". Re-run with the original arguments to resume it, pass overwrite=True (CLI: "
            "--overwrite) to delete it and start over, or choose another project_name."
        )


def _check_arguments(tuner, max_trials, max_epochs, executions_per_trial,
                     max_consecutive_failed_trials, seed, isolate, callbacks):
    v.check_choice("tuner", tuner, tuple(TUNERS))
    v.check_int("max_epochs", max_epochs, 1)
    v.check_int("executions_per_trial", executions_per_trial, 1)
    v.check_int("max_consecutive_failed_trials", max_consecutive_failed_trials, 1)
    v.check_int("seed", seed, 0)
    v.check_int("max_trials", max_trials, 1, allow_none=True)
    if max_trials is None and tuner != "hyperband":
        raise ValueError(f"max_trials=None is only for tuner='hyperband'; Received: tuner={tuner!r}")
    if isolate and callbacks:
        raise ValueError(
            "callbacks cannot reach trials running in their own process; drop them or isolate=False"
        )


# --------------------------------------------------------------------------------------------
# search
# --------------------------------------------------------------------------------------------


def search(
    data,
    *,
    backbones=("mobilenet_v2",),
    tuner="hyperband",
    max_trials=20,
    max_epochs=10,
    objective="val_accuracy",
    search_space=None,
    weights=None,
    directory="tuning",
    project_name=None,
    overwrite=False,
    executions_per_trial=1,
    seed=0,
    isolate=False,
    callbacks=(),
    tuner_options=None,
    max_consecutive_failed_trials=3,
    verbose=0,
    progress=True,
    **fixed,
) -> SearchResult:
    """Searches recipes (backbone, image size, learning rate, ...) with a KerasTuner tuner.

    Default search space (each with the base recipe's value as default, which grid search tries
    first): `backbone` (from `backbones`), `image_size` (per backbone: the size
    `Recipe.image_size_for` picks, plus 64 px for small images from scratch, else half the
    default size to the default plus the sizes with weights), `learning_rate` (log range around
    `Recipe.peak_learning_rate`), `optimizer` (adam/sgd/adamw/rmsprop/adagrad), `dropout` (0-0.5),
    `l2`, `augmentation` (None/"light"/"medium"), `label_smoothing` (0-0.2), `schedule`,
    `batch_size` and, only when fine-tuning, `unfreeze`. Fields passed in `**fixed` leave the space.

    `search_space` entries override or fix any `Recipe` field (see `SEARCHABLE_FIELDS`):
    a list is a choice, a tuple `(min, max)` / `(min, max, "log")` / `(min, max, step)` a range, a
    single value fixes it, and a dict says the same in JSON form (`{"values": [...], "default": x}`,
    `{"min": a, "max": b, "sampling": "log", "step": s, "default": x}`, `{"value": x}`).

    Re-running with the same `directory` and `project_name` resumes: finished trials are kept, an
    interrupted one restarts from its first epoch (KerasTuner #439). Arguments that differ from the
    stored ones raise (only `max_trials`, `max_consecutive_failed_trials` and `isolate` may change).

    A NaN loss, out of memory or hyperparameter values that make no valid Recipe fail the trial
    (`keras_tuner.errors.FailedTrialError`) and the search goes on; a `ValueError` while training
    stops it (see `recipes.tuning.hypermodel`).

    Distributed search uses KerasTuner's own mechanism: set `KERASTUNER_TUNER_ID` ("chief" runs
    the oracle and blocks until the search is done; any other id is a worker),
    `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` before calling (the `recipes tune --chief /
    --worker` CLI does this). Every process must pass the same arguments. Workers write trial
    checkpoints into their own `directory`: use a shared folder for `best_model()` on the chief.
    In a shared folder workers also write heartbeats (`<project>/workers/`): the chief gives up
    the trial of a worker that died (KerasTuner retries it if `max_retries_per_trial` allows, else
    it is FAILED) and finishes instead of waiting forever (see `recipes.tuning.heartbeat`).

    Args:
        data: A `Data` from `load_data` (or a source for it, loaded with the fixed batch size and
            splits). Trials train on `train` and are scored on `validation`; `test` is never used.
        backbones: Backbone names (or one comma-separated string) to choose from (default
            `("mobilenet_v2",)`).
        tuner: `"random"`, `"grid"`, `"bayesian"` or `"hyperband"` (default).
        max_trials: Most trials to run (default 20; with Hyperband a continued trial counts too,
            and None runs full Hyperband iterations).
        max_epochs: Epochs per trial; Hyperband's maximum (default 10).
        objective: Metric to optimize (default `"val_accuracy"`); KerasTuner infers whether it is
            minimized (`val_loss`, `val_mae`, ...) or maximized.
        search_space: Overrides of the default space (default None).
        weights: Pretrained backbone weights (`"imagenet"` or a file from `save_backbone`): every
            trial fine-tunes in two phases with `recipes.fine_tune`, from the "fine-tune" preset
            (default None: from scratch).
        directory: Folder of tuning projects (default `"tuning"`).
        project_name: Project folder (default `"<dataset>_<tuner>"`).
        overwrite: Delete an existing project and start over (default False).
        executions_per_trial: Trainings per trial, with seeds `seed`, `seed + 1`, ...; the
            objective is their mean (default 1).
        seed: Seed of the oracle and of every trial's training (default 0).
        isolate: Train every trial in a fresh Python process (default False). Memory cannot grow
            across trials, at the price of a Python/TensorFlow start-up per trial; the splits are
            written once to `<project>/isolated_data.npz`; `callbacks` cannot be used.
        callbacks: Extra Keras callbacks for every trial's fit (deep-copied per trial by KerasTuner).
        tuner_options: Extra arguments of the KerasTuner tuner, e.g. `{"factor": 2}` (Hyperband),
            `{"num_initial_points": 3}` (Bayesian), `{"max_retries_per_trial": 1}` (default None).
        max_consecutive_failed_trials: Failed trials in a row that stop the search (default 3).
        verbose: Keras `fit` verbosity inside trials (default 0).
        progress: Print one line per finished trial (default True).
        **fixed: `Recipe` fields fixed for every trial (e.g. `optimizer="sgd"`, `alpha=0.25`).

    Returns:
        A `SearchResult`. Also written: `<project>/results.csv`, `results.png` and
        `best_recipe.json` (not by workers, which return once no trial is left for them).

    Raises:
        ValueError: Unknown tuner, backbone, search-space key or fixed field (closest listed), a
            value that cannot work, an objective without a known direction, a resumed project
            whose arguments differ, or a `ValueError` while training a trial.
        SearchFailedError: `max_consecutive_failed_trials` trials failed in a row.

    Example:
        >>> data = recipes.load_data("digits", batch_size=64)
        >>> result = recipes.search(data, backbones=["mobilenet"], tuner="random", max_trials=5,
        ...                         max_epochs=3, alpha=0.25, search_space={"optimizer": "sgd"})
        >>> result.best_recipe.learning_rate, result.table()[0]["status"]
    """
    _check_arguments(tuner, max_trials, max_epochs, executions_per_trial,
                     max_consecutive_failed_trials, seed, isolate, callbacks)
    direction = objective_direction(objective)
    backbones = backbone_list(backbones)
    check_keys(dict(search_space or {}), fixed, weights is not None)
    base, data = base_recipe(data, backbones, fixed, weights, seed=int(seed), max_epochs=int(max_epochs))
    if data.validation is None and objective.startswith("val_"):
        raise ValueError(
            f"objective {objective!r} needs a validation split; Received: data without one "
            "(load it with validation_split > 0)"
        )
    space = resolve(data, backbones, search_space, fixed, base)

    role = _role()
    directory = Path(directory)
    if project_name is None:
        project_name = f"{_dataset_tag(base.dataset)}_{tuner}"
    project = RunFolder(directory / project_name)
    args = {
        "tuner": tuner, "objective": objective, "max_epochs": int(max_epochs),
        "backbones": backbones, "weights": None if weights is None else str(weights),
        "seed": int(seed), "executions_per_trial": int(executions_per_trial),
        "tuner_options": dict(tuner_options or {}), "fixed": jsonable(fixed),
        "search_space": {name: p.to_spec() for name, p in space.items()},
        "data": {"source": data.source, "sizes": dict(data.sizes), "classes": len(data.class_names),
                 "input_shape": list(data.input_shape)},
        "max_trials": max_trials,
        "max_consecutive_failed_trials": int(max_consecutive_failed_trials), "isolate": bool(isolate),
    }
    if overwrite and role != "worker" and project.path.exists():
        shutil.rmtree(project.path)
    _check_project(project, args, role)
    if role != "worker":
        project.write_json(_ARGS_FILE, jsonable(args))

    hypermodel = RecipeHyperModel(
        data, space, base, isolate=isolate, verbose=verbose, work_dir=project.path,
        objective=objective,
    )
    kwargs = dict(
        objective=keras_tuner.Objective(objective, direction),
        # KerasTuner treats seed=0 as "no seed" (`seed or random.randint(...)`).
        seed=int(seed) + 1,
        max_consecutive_failed_trials=int(max_consecutive_failed_trials),
        executions_per_trial=int(executions_per_trial),
        directory=str(directory), project_name=project_name,
        overwrite=False,  # done above, so the stored arguments survive
    )
    if tuner == "hyperband":
        kwargs["max_epochs"] = int(max_epochs)
    else:
        kwargs["max_trials"] = max_trials
    kwargs.update(tuner_options or {})
    tuner_obj = _tuner_class(tuner)(hypermodel, **kwargs)
    tuner_obj.progress = progress
    if tuner == "hyperband" and role != "worker":
        # Hyperband's constructor takes no max_trials, its oracle honours one.
        tuner_obj.oracle.max_trials = max_trials
    result = SearchResult(project.path, tuner_obj, hypermodel, data, args, role=role)
    try:
        with _liveness(role, tuner_obj, project), frozen_survivors() as tuner_obj.survivors:
            tuner_obj.search(callbacks=list(callbacks), verbose=0)
    except RuntimeError as exc:
        if not str(exc).startswith("Number of consecutive failures"):
            raise
        if role != "worker":
            result.save_table()
        rows = [r for r in result.table() if r["status"] != "COMPLETED"]
        last = rows[-1]["message"] if rows else last_line(exc)
        raise SearchFailedError(
            f"Search stopped: {max_consecutive_failed_trials} trial(s) in a row failed "
            f"(max_consecutive_failed_trials={max_consecutive_failed_trials}). Last error: {last}. "
            f"Every trial: {project.file(RESULTS_FILE)}. Fix the cause and re-run to continue, "
            "or allow more failures."
        ) from None
    if role != "worker":
        result.save_table()
    return result
