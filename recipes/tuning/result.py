"""`SearchResult`: every trial of a search, the best recipe and model, retrain and refine.

All trial information is read from the project folder (KerasTuner's `trial.json` files and the
`recipes_trial.json` record beside each), so a worker of a distributed search, or a process
started after the chief exited, needs no connection to the oracle.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from ..config import Recipe
from ..run import RunFolder
from .space import _Param, jsonable, searched_values
from .splits import rebatch, with_validation_in_train

__all__ = ["SearchResult", "TRIAL_INFO", "RESULTS_FILE"]

#: Per-trial record beside KerasTuner's `trial.json`: status, seconds, epochs, objective, recipe.
TRIAL_INFO = "recipes_trial.json"
#: The table of every trial, in the project folder.
RESULTS_FILE = "results.csv"
_PLOT_FILE = "results.png"
_BEST_RECIPE_FILE = "best_recipe.json"


def fmt(value) -> str:
    """A table cell: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def last_line(message) -> str:
    """The last non-empty line of a (traceback) message, at most 300 characters."""
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def better(a, b, direction) -> bool:
    """Whether objective value `a` beats `b` (None beats nothing and loses to everything)."""
    if b is None:
        return a is not None
    if a is None:
        return False
    return a < b if direction == "min" else a > b


class SearchResult:
    """What `search` returns: every trial, the best recipe and model, and follow-ups.

    Attributes:
        project_dir: The KerasTuner project folder.
        tuner: The KerasTuner tuner (for anything this class does not cover).
        hypermodel: The `RecipeHyperModel` (its space turns trial values into recipes).
        args: The search arguments stored in `search_args.json`.
        role: `"single"`, `"chief"` or a worker's id.

    Example:
        >>> result = recipes.search(data, backbones=["mobilenet"], tuner="random", max_trials=3)
        >>> result.best_recipe.save("best.json")   # recipes train --recipe best.json
        >>> model = result.best_model()
        >>> final = result.retrain(epochs=10)       # train + validation, from scratch
    """

    def __init__(self, project_dir, tuner, hypermodel, data, args, role="single"):
        self.project_dir = Path(project_dir)
        self.tuner = tuner
        self.hypermodel = hypermodel
        self.args = args
        self.role = role
        self._data = data
        self._folder = RunFolder(self.project_dir)

    @property
    def objective(self) -> str:
        """The metric optimized."""
        return self.args["objective"]

    @property
    def direction(self) -> str:
        """`"min"` or `"max"`, as KerasTuner infers it for the objective."""
        return self.hypermodel.direction

    def _trials(self):
        out = []
        for trial_file in sorted(self.project_dir.glob("trial_*/trial.json")):
            trial = RunFolder(trial_file.parent)
            try:
                state = trial.read_json(trial_file.name)
            except (OSError, ValueError):
                continue  # being written by another process
            info = trial.read_json(TRIAL_INFO) if trial.file(TRIAL_INFO).is_file() else {}
            out.append((state, info))
        return out

    def table(self) -> list[dict]:
        """Every trial as a dict: trial, status, objective, the searched values, epochs, seconds.

        Returns:
            One dict per trial in trial order; `status` is KerasTuner's (`COMPLETED`, `FAILED`,
            `INVALID`, `RUNNING`); the objective is None unless completed; Hyperband adds
            `total_epochs` and `continues` (the trial whose weights it started from); `message`
            is the last line of a failure.
        """
        rows = []
        hyperband = self.args["tuner"] == "hyperband"
        for state, info in self._trials():
            values = state.get("hyperparameters", {}).get("values", {})
            status = state.get("status")
            if status == "RUNNING" and info.get("status") in ("FAILED", "INVALID"):
                status = "FAILED"  # the oracle stopped the search before recording it
            row = {
                "trial": state.get("trial_id"),
                "status": status,
                self.objective: state.get("score") if status == "COMPLETED" else None,
            }
            row.update(searched_values(self.hypermodel.space, values))
            row["epochs"] = info.get("epochs")
            if hyperband:
                row["total_epochs"] = values.get("tuner/epochs")
                row["continues"] = values.get("tuner/trial_id", "")
            row["seconds"] = info.get("seconds")
            row["worker"] = info.get("tuner_id")
            message = last_line(state.get("message")) or info.get("message", "")
            row["message"] = message if status != "COMPLETED" else ""
            rows.append(row)
        return rows

    def _best(self) -> dict:
        best = None
        for state, _ in self._trials():
            score = state.get("score")
            if state.get("status") != "COMPLETED" or score is None or not math.isfinite(score):
                continue
            if best is None or better(score, best["score"], self.direction):
                best = state
        if best is None:
            raise ValueError(f"No completed trial in {self.project_dir} yet")
        return best

    @property
    def best_trial_id(self) -> str:
        """Id of the best completed trial."""
        return self._best()["trial_id"]

    @property
    def best_score(self) -> float:
        """The best trial's objective value (its best epoch)."""
        return float(self._best()["score"])

    @property
    def best_hyperparameters(self) -> dict:
        """The best trial's searched values, by `Recipe` field name."""
        return searched_values(self.hypermodel.space, self._best()["hyperparameters"]["values"])

    @property
    def best_recipe(self) -> Recipe:
        """The `Recipe` of the best trial (its total epochs; `recipes train --recipe` redoes it)."""
        return self.hypermodel.recipe(self._best()["hyperparameters"]["values"])

    def best_model(self):
        """The best trial's model at its best epoch, reloaded from KerasTuner's checkpoint.

        Returns:
            A compiled `keras.Model` (the best recipe's loss and metrics), so `evaluate` works.

        Raises:
            ValueError: No completed trial, or its checkpoint is not in this project folder (in a
                distributed search without a shared folder it is on the worker that ran it).
        """
        from keras_tuner.engine.trial import Trial

        from ..training import compile_classifier, make_optimizer

        state = self._best()
        trial_dir = self.project_dir / f"trial_{state['trial_id']}"
        if not any(trial_dir.glob("checkpoint*")):
            raise ValueError(
                f"No checkpoint for trial {state['trial_id']} in {trial_dir}; in a distributed "
                "search it is written on the worker that ran the trial (use a shared directory)."
            )
        model = self.tuner.load_model(Trial.load(str(trial_dir / "trial.json")))
        recipe = self.best_recipe
        compile_classifier(
            model, self._data.num_classes,
            optimizer=make_optimizer(recipe.optimizer, recipe.peak_learning_rate, momentum=recipe.momentum),
            label_smoothing=recipe.label_smoothing, mixing=bool(recipe.mixup or recipe.cutmix),
        )
        return model

    def retrain(self, data=None, *, epochs=None, out=None, verbose="auto", overwrite=False):
        """Trains the best recipe from scratch on train + validation and evaluates on test.

        The result differs from `best_model()` (KerasTuner #689, #1020) because it is a different
        run: more data (validation joins training), all `epochs` with the schedule planned for
        them rather than a checkpoint at the best epoch, precise BatchNorm statistics when the
        recipe asks for them, a fresh start where Hyperband continued a trial from another's
        weights with a new optimizer, and another random order. Judge it on the test split, which
        the search never saw.

        Args:
            data: The `Data` (default: the search's).
            epochs: Epochs (default: the best trial's total epochs).
            out: Run folder (a path or a `RunFolder`) that `train` / `fine_tune` write (default:
                none).
            verbose: Keras `fit` verbosity (default "auto").
            overwrite: Replace a run of another recipe in `out` (default False: refused, see
                `recipes.train`).

        Returns:
            A `recipes.Result` (test metrics in `.metrics`).

        Example:
            >>> final = result.retrain(epochs=20, out="runs/best")
            >>> final.metrics["test_accuracy"]
        """
        recipe = self.best_recipe
        if epochs is not None:
            recipe = recipe.replace(epochs=epochs)
        # Without a validation split there is nothing to stop early on.
        recipe = recipe.replace(patience=None)
        # Re-batched to the winning trial's batch size: its learning rate was tuned for it.
        base = rebatch(data if data is not None else self._data, recipe.batch_size)
        full = with_validation_in_train(base, recipe.seed)
        out = RunFolder(out).path if out is not None else None
        if recipe.pretrained:
            from ..finetune import fine_tune

            return fine_tune(recipe.backbone, full, recipe=recipe, out=out, verbose=verbose,
                             overwrite=overwrite)
        from ..training import train

        return train(recipe.backbone, full, recipe=recipe, out=out, verbose=verbose,
                     overwrite=overwrite)

    def refined_search_space(self, factor=3) -> dict:
        """A narrower space around the best trial: ranges shrunk `factor` times, choices fixed.

        A log range keeps `factor`-th of its log-width, centred on the best value (moved inside
        the original bounds); linear ranges likewise; choices (backbone, optimizer, image size,
        ...) are fixed to the best trial's value.

        Args:
            factor: Shrink factor, > 1 (default 3).

        Returns:
            `{field: spec}` for `search(search_space=...)`; the backbone comes back as
            `"backbone"` (pass it as `backbones=[...]`).

        Raises:
            ValueError: `factor` is not a number > 1, or no trial completed.
        """
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or factor <= 1:
            raise ValueError(f"factor must be a number > 1; Received: factor={factor!r}")
        values = self._best()["hyperparameters"]["values"]
        best = self.best_recipe
        out = {}
        for p in self.hypermodel.space.values():
            if p.backbone is not None:
                if p.backbone == best.backbone:
                    out["image_size"] = {"value": best.image_size}
                continue
            value = p.value_in(values)
            if p.kind in ("int", "float"):
                out[p.name] = _narrow(p, value, factor)
            else:
                out[p.name] = {"value": jsonable(value)}
        return out

    def refine(self, data=None, *, factor=3, max_trials=None, tuner=None, project_name=None, **changes):
        """Runs a second, narrower search around the best trial in a new project.

        Args:
            data: The `Data` (default: the search's).
            factor: Shrink factor for ranges (default 3); see `refined_search_space`.
            max_trials: Default: the first search's.
            tuner: Default: the first search's.
            project_name: Default: `"<project>_refined"`.
            **changes: Other `search` arguments to change.

        Returns:
            The second search's `SearchResult`.
        """
        from .search import search

        space = self.refined_search_space(factor)
        backbone = space.pop("backbone")["value"]
        a = self.args
        kwargs = dict(
            backbones=[backbone], tuner=tuner or a["tuner"],
            max_trials=max_trials if max_trials is not None else a["max_trials"],
            max_epochs=a["max_epochs"], objective=a["objective"], search_space=space,
            weights=a["weights"], directory=str(self.project_dir.parent),
            project_name=project_name or f"{self.project_dir.name}_refined",
            executions_per_trial=a["executions_per_trial"], seed=a["seed"],
            tuner_options=a["tuner_options"],
            max_consecutive_failed_trials=a["max_consecutive_failed_trials"], isolate=a["isolate"],
        )
        kwargs.update(a["fixed"])
        kwargs.update(changes)
        return search(data if data is not None else self._data, **kwargs)

    def save_table(self) -> Path:
        """Writes `results.csv`, `results.png` (objective per trial and best so far) and
        `best_recipe.json` into the project folder; returns the CSV path."""
        from ..plotting import plot_trials

        rows = self.table()
        path = self._folder.write_csv(RESULTS_FILE, rows, columns=None if rows else ["trial"])
        plot_trials(rows, self.objective, self.direction, self._folder.file(_PLOT_FILE))
        try:
            self._folder.write_text(_BEST_RECIPE_FILE, self.best_recipe.to_json())
        except ValueError:
            pass  # no completed trial yet
        return path

    def summary(self) -> str:
        """The table as aligned text (one line per trial), as the CLI prints it."""
        rows = self.table()
        if not rows:
            return "(no trials)"
        columns = list(dict.fromkeys(k for row in rows for k in row if k != "message"))
        cells = [[fmt(r.get(c)) if r.get(c) is not None else "-" for c in columns] for r in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
        lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in cells]
        return "\n".join(lines)


def _narrow(p: _Param, best, factor) -> dict:
    low, high = p.low, p.high
    if p.sampling == "log":
        width = math.log(high / low) / factor
        lo = max(low, best * math.exp(-width / 2))
        hi = min(high, lo * math.exp(width))
        lo = max(low, hi * math.exp(-width))
    else:
        width = (high - low) / factor
        lo = max(low, best - width / 2)
        hi = min(high, lo + width)
        lo = max(low, hi - width)
    if p.kind == "int":
        lo, hi = math.floor(lo), math.ceil(hi)
    step = p.step
    if step is not None and p.sampling == "linear":
        lo = round(low + math.floor((lo - low) / step + 1e-9) * step, 10)
        hi = round(low + math.ceil((hi - low) / step - 1e-9) * step, 10)
    if not lo < hi:
        return {"value": best}
    spec = {"min": lo, "max": hi, "sampling": p.sampling, "default": min(max(best, lo), hi)}
    if step is not None:
        spec["step"] = step
    return spec
