"""`RunFolder`: the one place that knows a run folder's files, and writes and reads them.

A run folder holds:

- `model.keras`: the trained model (reloads with `keras.models.load_model`),
- `recipe.json`: the `Recipe` that redoes the run,
- `history.csv`: one row per epoch (both phases for a fine-tune),
- `metrics.json`: test metrics and timings (strict JSON: non-finite values become null),
- `curves.png`: loss and accuracy per epoch,
- `backup/`: Keras' BackupAndRestore state while a run is unfinished (a killed run resumes),
- `phase1/`, `phase2/`: each fine-tuning phase's own run folder.

Every file is written atomically (a temporary file, then a rename), so a kill never leaves half a
file behind. `train`, `fine_tune`, the tuner and every CLI command go through this class.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["RunFolder", "atomic_write_text", "strict_json", "read_history_csv"]


def atomic_write_text(path: Path, text: str) -> Path:
    """Writes `text` to `path` through a temporary file and a rename (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def strict_json(value) -> str:
    """Indented JSON with NaN/inf written as null (Python's default writes invalid `NaN`)."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def read_history_csv(path) -> dict:
    """Per-epoch lists from a `history.csv` (the `epoch` column and all-empty columns dropped;
    other empty or `NA` cells read as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = ("", "NA", "nan", None)  # Keras' CSVLogger writes NA for val_* without validation

    def value(text):
        return math.nan if text in missing else float(text)

    keys = [k for k in (rows[0].keys() if rows else []) if k != "epoch"]
    keys = [k for k in keys if any(r[k] not in missing for r in rows)]  # drop all-NA columns
    return {k: [value(r[k]) for r in rows] for k in keys}


class RunFolder:
    """Paths, saving, loading and resume state of one run folder.

    Args:
        path: The folder (created on the first write).

    Example:
        >>> run = RunFolder("runs/digits")
        >>> run.recipe().epochs, run.metrics()["test_accuracy"]
    """

    MODEL = "model.keras"
    RECIPE = "recipe.json"
    HISTORY = "history.csv"
    METRICS = "metrics.json"
    CURVES = "curves.png"
    BACKUP = "backup"

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    def __fspath__(self):
        return os.fspath(self.path)

    # ------------------------------------------------------------------ paths

    @property
    def model_path(self) -> Path:
        return self.path / self.MODEL

    @property
    def recipe_path(self) -> Path:
        return self.path / self.RECIPE

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def curves_path(self) -> Path:
        return self.path / self.CURVES

    @property
    def backup_dir(self) -> Path:
        return self.path / self.BACKUP

    def file(self, name: str) -> Path:
        """Any other file of the run (`evaluation/report.json`, `results.csv`, ...)."""
        return self.path / name

    def sub(self, name: str) -> RunFolder:
        """A nested run folder (`phase1`, `phase2`, a trial)."""
        return RunFolder(self.path / name)

    # ------------------------------------------------------------------ state

    @property
    def finished(self) -> bool:
        """A finished run has its metrics and its model."""
        return self.metrics_path.is_file() and self.model_path.is_file()

    @property
    def resumable(self) -> bool:
        """An interrupted run left a BackupAndRestore state."""
        return self.backup_dir.is_dir() and any(self.backup_dir.iterdir())

    def start(self) -> bool:
        """Prepares the folder for a training run; True when it resumes an interrupted one.

        A finished earlier run's history is cleared so the new record starts anew.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        resuming = self.resumable
        if not resuming:
            self.history_path.unlink(missing_ok=True)
        return resuming

    def clear(self, *names):
        """Removes files or sub-folders of the run (missing ones are fine)."""
        for name in names:
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing

    def write_text(self, name: str, text: str) -> Path:
        """Atomically writes a text file of the run."""
        return atomic_write_text(self.path / name, text)

    def write_json(self, name: str, value) -> Path:
        """Atomically writes strict JSON (non-finite numbers as null)."""
        return self.write_text(name, strict_json(value))

    def write_csv(self, name: str, rows: list[dict], columns=None) -> Path:
        """Atomically writes rows of dicts as CSV (columns: the union of keys, in order)."""
        if columns is None:
            columns = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in columns})
        return self.write_text(name, buf.getvalue())

    def save_model(self, model) -> Path:
        """Saves `model.keras` atomically (Keras writes a temporary file that is then renamed)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{self.MODEL}.tmp.keras"
        model.save(tmp)
        os.replace(tmp, self.model_path)
        return self.model_path

    def save_recipe(self, recipe) -> Path:
        return self.write_text(self.RECIPE, recipe.to_json())

    def save_metrics(self, metrics: dict) -> Path:
        return self.write_json(self.METRICS, metrics)

    def save_history(self, history: dict) -> Path:
        """Writes `history.csv` from per-epoch lists (one row per epoch, `epoch` first)."""
        keys = sorted(history)
        n = len(next(iter(history.values()), []))
        rows = [{"epoch": i, **{k: history[k][i] for k in keys}} for i in range(n)]
        return self.write_csv(self.HISTORY, rows, columns=["epoch", *keys])

    def save_curves(self, history: dict, *, marks=None) -> Path:
        from .plotting import plot_curves

        return plot_curves(history, self.curves_path, marks=marks)

    def finish(self, model, recipe, metrics: dict, history: dict | None = None, *, marks=None) -> dict:
        """Writes a finished run: model, recipe, metrics, history (the CSV the run logged when
        `history` is None), curves; removes the backup. Returns the history written."""
        if history is None:
            history = self.history() if self.history_path.is_file() else {}
        else:
            self.save_history(history)
        self.save_model(model)
        self.save_recipe(recipe)
        self.save_curves(history, marks=marks)
        self.save_metrics(metrics)  # last: its presence marks the run finished
        self.clear(self.BACKUP)
        return history

    # ------------------------------------------------------------------ reading

    def read_json(self, name: str):
        return json.loads((self.path / name).read_text())

    def recipe(self):
        """The run's `Recipe`."""
        from .config import Recipe

        return Recipe.load(self.recipe_path)

    def metrics(self) -> dict:
        return self.read_json(self.METRICS)

    def history(self) -> dict:
        return read_history_csv(self.history_path)

    def load_model(self, **kwargs):
        """`keras.models.load_model` on the run's `model.keras`.

        Raises:
            ValueError: The run has no model (not finished).
        """
        import keras

        if not self.model_path.is_file():
            raise ValueError(f"Run folder has no {self.MODEL} (not finished?); Received: {str(self.path)!r}")
        return keras.models.load_model(self.model_path, **kwargs)
