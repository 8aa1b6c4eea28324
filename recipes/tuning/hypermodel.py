"""`RecipeHyperModel`: a KerasTuner HyperModel whose hyperparameters are `Recipe` fields.

Which errors fail a trial: a trial whose Recipe or model cannot be made from its hyperparameter
values (a combination the Recipe refuses, a model `build_classifier` cannot build, an unfreeze
policy that selects nothing of the chosen backbone) fails with "Invalid recipe", as do NaN
losses and out-of-memory errors; the search goes on. A `ValueError` raised while training is not
a bad hyperparameter value (every trial's values were checked before training): it stops the
search as a `keras_tuner.errors.FatalValueError`, so a bug is seen at once, not after
`max_consecutive_failed_trials` wasted trials.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import keras_tuner

from callbacks import TrainingDiverged

from ..config import Recipe
from .space import trial_recipe
from .splits import rebatch

__all__ = ["RecipeHyperModel", "objective_direction"]

# Metrics `compile_classifier` adds whose direction KerasTuner cannot infer from the name.
_OWN_DIRECTIONS = {"top5_accuracy": "max"}


def objective_direction(objective: str) -> str:
    """`"min"` or `"max"`: KerasTuner's own inference from the metric name.

    Args:
        objective: A metric name as in the training logs (`"val_accuracy"`, `"val_loss"`,
            `"val_mae"`, ...).

    Returns:
        `"min"` or `"max"`.

    Raises:
        ValueError: Not a string, or a name whose direction KerasTuner cannot infer.

    Example:
        >>> objective_direction("val_mae"), objective_direction("val_accuracy")
        ('min', 'max')
    """
    if not isinstance(objective, str) or not objective:
        raise ValueError(f"objective must be a metric name; Received: objective={objective!r}")
    direction = _inferred_direction(objective)
    if direction is None:
        raise ValueError(
            "Cannot tell whether the objective is minimized or maximized (KerasTuner does not "
            f"know the metric); Received: objective={objective!r}. Use a metric the classifier "
            "logs: val_accuracy, val_loss, val_top5_accuracy, val_precision, val_recall (or "
            "without val_ to score on training data)."
        )
    return direction


@functools.cache
def _inferred_direction(objective: str):
    # Cached: KerasTuner deserializes a Keras metric to tell, and the table asks per trial.
    from keras_tuner.engine.metrics_tracking import infer_metric_direction

    return infer_metric_direction(objective) or _OWN_DIRECTIONS.get(objective.removeprefix("val_"))


def _invalid_recipe(exc: Exception):
    return keras_tuner.errors.FailedTrialError(f"Invalid recipe: {exc}")


class RecipeHyperModel(keras_tuner.HyperModel):
    """A `keras_tuner.HyperModel` whose hyperparameters are `Recipe` fields.

    `build` makes the classifier with `recipes.build_classifier`; `fit` trains it with
    `recipes.train`, or with the two-phase `recipes.fine_tune` when the recipe has weights, and
    forwards KerasTuner's callbacks (reporting, best-epoch checkpoint, Hyperband's epochs).

    Args:
        data: The `Data` every trial trains and validates on (its test split is never used).
        space: `{hyperparameter name: _Param}` from `space.resolve`.
        base: The `Recipe` every trial starts from (fixed fields, seed, max epochs).
        isolate: Train each trial in a fresh Python process (default False).
        verbose: Keras `fit` verbosity inside trials (default 0).
        work_dir: Folder for the isolated trials' data file (default None; needed with isolate).
        objective: The metric KerasTuner optimizes (default `"val_accuracy"`).

    Example:
        >>> hm = RecipeHyperModel(data, space, Recipe(epochs=2), objective="val_loss")
        >>> tuner = keras_tuner.RandomSearch(hm, objective="val_loss", max_trials=3)
    """

    def __init__(self, data, space, base: Recipe, *, isolate=False, verbose=0, work_dir=None,
                 objective="val_accuracy"):
        super().__init__(name="recipe")
        self.data = data
        self.space = space
        self.base = base
        self.isolate = isolate
        self.verbose = verbose
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.objective = objective
        objective_direction(objective)  # refuse an unknown objective before any trial
        self._execution = 0
        self.last = {}

    @property
    def direction(self) -> str:
        """`"min"` or `"max"` for the objective (KerasTuner's inference)."""
        return objective_direction(self.objective)

    # The space is declared up front with conditions attached (`parent_name`) rather than through
    # `hp.conditional_scope` inside `build`: KerasTuner then needs no build to learn it.
    def declare_hyperparameters(self, hp):
        for param in self.space.values():
            param.declare(hp)

    def recipe(self, values: dict) -> Recipe:
        """The `Recipe` a trial's hyperparameter values stand for.

        Args:
            values: `HyperParameters.values` of a trial (`tuner/epochs`, Hyperband's total
                epochs, becomes `epochs`; other `tuner/*` entries are ignored).

        Returns:
            The Recipe, with the image size the backbone sees (`Recipe.image_size_for`).

        Raises:
            ValueError: The values do not make a valid Recipe.
        """
        changes = {p.name: p.value_in(values) for p in self.space.values() if p.backbone is None}
        backbone = changes.get("backbone", self.base.backbone)
        sized = self.space.get(f"image_size:{backbone}")
        if sized is not None:
            changes["image_size"] = sized.value_in(values)
        if "tuner/epochs" in values:
            changes["epochs"] = int(values["tuner/epochs"])
        recipe = trial_recipe(self.base, changes)
        return recipe.replace(image_size=recipe.image_size_for(self.data.input_shape))

    def build(self, hp):
        """Builds the trial's classifier (uncompiled; `fit` compiles it).

        Raises:
            keras_tuner.errors.FailedTrialError: The values make no valid Recipe, or a model
                `build_classifier` refuses, or an unfreeze policy that selects nothing.
        """
        from ..training import build_from_recipe

        if not hp.space:
            self.declare_hyperparameters(hp)
        try:
            recipe = self.recipe(hp.values)
            model = build_from_recipe(recipe, self.data)
            if recipe.pretrained:
                from ..finetune import unfreeze_policy_layers

                # A block name exists in some backbones only: fail here, not inside fine_tune.
                unfreeze_policy_layers(model, recipe.unfreeze)
        except ValueError as exc:
            raise _invalid_recipe(exc) from exc
        return model

    def begin_trial(self):
        """Resets the per-trial state (execution count, last results)."""
        self._execution = 0
        self.last = {}

    def run_recipe(self, values: dict, epochs=None, initial_epoch=0) -> Recipe:
        """The Recipe one execution trains: the trial's, for the epochs still to run.

        Raises:
            keras_tuner.errors.FailedTrialError: The values make no valid Recipe.
        """
        try:
            recipe = self.recipe(values)
            total = int(epochs) if epochs is not None else recipe.epochs
            changes = dict(
                epochs=max(1, total - int(initial_epoch)),
                # Executions of one trial must differ, or averaging them would measure nothing.
                seed=recipe.seed + self._execution,
                # KerasTuner scores and checkpoints the epoch-end weights; statistics recomputed
                # after fit would change neither, only cost time (retrain keeps the setting).
                precise_bn=False,
            )
            if initial_epoch:
                changes.update(warmup_epochs=0, head_epochs=0)
            return recipe.replace(**changes)
        except ValueError as exc:
            raise _invalid_recipe(exc) from exc

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, verbose=None, **kwargs):
        """Trains one execution of a trial; returns a `keras.callbacks.History` of its epochs.

        Hyperband passes `epochs` (the trial's total) and `initial_epoch` (epochs already trained
        by the trial it continues, whose weights KerasTuner loaded into `model`): the remaining
        epochs run with a fresh optimizer and schedule, without warmup or a fine-tuning head phase.

        Raises:
            keras_tuner.errors.FailedTrialError: NaN/inf loss, out of memory, or values that make
                no valid Recipe (the trial is marked failed, the search goes on).
            keras_tuner.errors.FatalValueError: The objective is not among the trial's metrics,
                or a `ValueError` while training (a bug, not a bad value: the search stops).
        """
        import keras

        kt = keras_tuner
        if args or kwargs:
            raise kt.errors.FatalValueError(
                f"RecipeHyperModel.fit takes no data arguments (the data is fixed at construction); "
                f"Received: {len(args)} positional, keywords {sorted(kwargs)}"
            )
        callbacks = list(callbacks or [])
        run = self.run_recipe(hp.values, epochs, initial_epoch)
        self._execution += 1
        try:
            if self.isolate:
                from .isolate import fit_isolated

                history = fit_isolated(self, run, model, callbacks, continued=bool(initial_epoch))
            else:
                history = self._fit_here(run, model, callbacks)
        except (kt.errors.FailedTrialError, kt.errors.FatalError):
            raise
        except TrainingDiverged as exc:
            raise kt.errors.FailedTrialError(diverged_message(exc, run)) from exc
        except MemoryError as exc:
            raise kt.errors.FailedTrialError(f"Out of memory: {exc}") from exc
        except ValueError as exc:
            raise kt.errors.FatalValueError(
                f"{type(exc).__name__} while training a trial: {exc}. The trial's recipe was "
                "valid, so this is not a bad hyperparameter value; the search stops (re-run to "
                "resume it once the cause is fixed)."
            ) from exc
        except Exception as exc:
            if type(exc).__name__ == "ResourceExhaustedError":
                raise kt.errors.FailedTrialError(
                    f"Out of memory: {str(exc).splitlines()[0][:300]}"
                ) from exc
            raise
        n = len(next(iter(history.values()), []))
        self.last = {"epochs": n, "objective": None}
        check_finite(history, run)
        if self.objective not in history:
            raise kt.errors.FatalValueError(
                f"The objective {self.objective!r} is not a metric of this model; Received "
                f"metrics: {', '.join(k for k in history if k != 'learning_rate')}"
            )
        values = [x for x in history[self.objective] if math.isfinite(x)]
        if values:
            self.last["objective"] = (min if self.direction == "min" else max)(values)
        result = keras.callbacks.History()
        result.history = history
        result.epoch = list(range(n))
        return result

    def _fit_here(self, recipe, model, callbacks) -> dict:
        data = dataclasses.replace(rebatch(self.data, recipe.batch_size), test=None)
        return fit_recipe(recipe, model, data, callbacks, self.verbose)


def fit_recipe(recipe: Recipe, model, data, callbacks, verbose) -> dict:
    """Trains a built model as the recipe says (`fine_tune` when pretrained); returns its history."""
    if recipe.pretrained:
        from ..finetune import fine_tune

        result = fine_tune(model, data, recipe=recipe, callbacks=callbacks, verbose=verbose)
    else:
        from ..training import train

        result = train(model, data, recipe=recipe, callbacks=callbacks, verbose=verbose)
    return result.history


def diverged_message(exc, recipe: Recipe) -> str:
    """The failed trial's message for a `TrainingDiverged` (in the words of `check_finite`)."""
    return (f"loss became {exc.loss} at epoch {exc.epoch} batch {exc.batch} "
            f"(optimizer={recipe.optimizer}, learning_rate={recipe.peak_learning_rate}); the trial "
            "is marked failed")


def check_finite(history: dict, recipe: Recipe):
    """Fails the trial when the loss became NaN or infinite in some epoch.

    Raises:
        keras_tuner.errors.FailedTrialError: Names the epoch, the optimizer and the rate.
    """
    for key in ("loss", "val_loss"):
        for epoch, value in enumerate(history.get(key, [])):
            if not math.isfinite(value):
                raise keras_tuner.errors.FailedTrialError(
                    f"{key} became {value} in epoch {epoch + 1} (optimizer={recipe.optimizer}, "
                    f"learning_rate={recipe.peak_learning_rate}); the trial is marked failed"
                )
