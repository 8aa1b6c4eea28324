"""`RunFolder`: the one place that knows a run folder's files, and writes and reads them.

A run folder holds:

- `model.keras`: the trained model (reloads with `keras.models.load_model`),
- `recipe.json`: the `Recipe` that redoes the run,
- `history.csv`: one row per epoch (both phases for a fine-tune),
- `metrics.json`: test metrics and timings (strict JSON: non-finite values become null),
- `curves.png`: loss and accuracy per epoch,
- `backup/`: Keras' BackupAndRestore state while a run is unfinished (a killed run resumes),
- `phase1/`, `phase2/`: each fine-tuning phase's own run folder,
- `.lock`: while a run trains into the folder, which process does (`RunFolder.lock`).

Every file is written atomically (a temporary file, then a rename), so a kill never leaves half a
file behind. `train`, `fine_tune`, the tuner and every CLI command go through this class.

Guarantees (`RunFolder.start` and `RunFolder.lock`): a folder holds one run. Re-running the same
recipe resumes an interrupted run; a different recipe is refused (`RunFolderMismatch`, listing the
differing fields) unless `overwrite=True`; a second process training into a busy folder is refused
(`RunFolderInUse`), and the lock of a process that died does not block.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

__all__ = [
    "RunFolder", "RunFolderInUse", "RunFolderMismatch", "atomic_write_text", "strict_json",
    "read_history_csv",
]


class RunFolderInUse(RuntimeError):
    """Another live process is training into the run folder (its `.lock` names it)."""


class RunFolderMismatch(ValueError):
    """The run folder holds a run with another recipe; `differences` maps field -> (old, new)."""

    def __init__(self, message, differences=None):
        super().__init__(message)
        self.differences = dict(differences or {})


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


def _has_rows(path: Path) -> bool:
    """A CSV with at least one row under its header (a run that logged an epoch)."""
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip()) > 1
    except OSError:
        return False


def _process_start(pid: int):
    """The process's start time in clock ticks (Linux `/proc`), None elsewhere: a recycled pid
    has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _process_alive(pid: int, started=None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    except OSError:
        return False
    try:  # a killed process its parent has not reaped yet is a zombie: dead all the same
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


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
    LOCK = ".lock"

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

    def start(self, recipe=None, *, overwrite=False) -> bool:
        """Prepares the folder for a training run; True when it resumes an interrupted one.

        With a `recipe`, the folder's `recipe.json` decides first: the same recipe resumes an
        interrupted run (or re-trains a finished one, which the new run then replaces); another
        recipe is refused unless `overwrite`, which clears the earlier run. The recipe is then
        written, before any training, so an interrupted run can be told apart from another.
        Without one (the old behaviour), an interrupted run resumes, whatever its recipe.

        A finished earlier run's history is cleared so the new record starts anew.

        Args:
            recipe: The `Recipe` about to train (default None: not compared, not written).
            overwrite: Clear an earlier run with another recipe instead of refusing (default
                False).

        Returns:
            True when the run resumes from `backup/`.

        Raises:
            RunFolderMismatch: (a ValueError) The folder holds a run with another recipe, or a
                `recipe.json` that cannot be read, and `overwrite` is False; the message lists
                the differing fields and the two ways out.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if recipe is not None:
            if overwrite:
                self.clear(self.BACKUP, self.HISTORY, self.METRICS, self.MODEL, self.CURVES)
            else:
                self.check_recipe(recipe)
        resuming = self.resumable
        if not resuming:
            self.history_path.unlink(missing_ok=True)
        if recipe is not None:
            self.save_recipe(recipe)  # first, so that a re-run can tell whether it is this run
        return resuming

    def check_recipe(self, recipe, *, started=None) -> None:
        """Refuses a `recipe` other than the one of the run already in the folder.

        A folder without `recipe.json`, or with nothing but its recipe, takes any recipe.

        Args:
            recipe: The `Recipe` about to train.
            started: Whether the folder holds epochs worth keeping (default None: a backup, a
                history or a finished run in the folder itself; a caller whose epochs live in
                sub-folders, such as `fine_tune`'s phases, says so).

        Raises:
            RunFolderMismatch: The differing fields (`Recipe.diff`), or an unreadable
                `recipe.json`, with the ways out: `overwrite=True` (CLI `--overwrite`) or
                another folder (`out=`, CLI `--out`).
        """
        if not self.recipe_path.is_file():
            return
        if started is None:
            started = self.resumable or self.finished or _has_rows(self.history_path)
        if not started:
            return  # a run that stopped before its first epoch: nothing to keep
        ways_out = ("Re-run with the same settings to resume it (a finished run is redone), pass "
                    "overwrite=True (CLI: --overwrite) to replace it, or choose another folder "
                    "(out=..., CLI: --out)")
        try:
            previous = self.recipe()
        except ValueError as exc:
            raise RunFolderMismatch(
                f"{self.path} holds a run whose {self.RECIPE} cannot be read ({exc}), so it "
                f"cannot be resumed safely. {ways_out}."
            ) from None
        differences = previous.diff(recipe)
        if not differences:
            return
        state = "an interrupted" if self.resumable else ("a finished" if self.finished else "a")
        shown = "; ".join(f"{k}: was {a!r}, now {b!r}" for k, (a, b) in list(differences.items())[:8])
        more = f" (and {len(differences) - 8} more)" if len(differences) > 8 else ""
        raise RunFolderMismatch(
            f"{self.path} holds {state} run with other settings; training into it would mix "
            f"two runs. Differences: {shown}{more}. {ways_out}.",
            differences,
        )

    # ------------------------------------------------------------------ lock

    @property
    def lock_path(self) -> Path:
        return self.path / self.LOCK

    def lock_owner(self) -> dict | None:
        """The live process holding the folder's lock (`pid`, `host`, `since`), or None when the
        folder is free or its lock was left by a process that no longer runs."""
        try:
            owner = json.loads(self.lock_path.read_text())
            pid = int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no lock, or half a lock: its writer died while writing it
        if owner.get("host") != socket.gethostname():
            return owner  # cannot check a process on another machine: assume it runs
        return owner if _process_alive(pid, owner.get("started")) else None

    def acquire_lock(self) -> None:
        """Marks the folder as being trained into by this process (see `lock`).

        Raises:
            RunFolderInUse: A live process holds it: "D is in use by process N since ...".
        """
        self.path.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self.lock_owner()
                if owner is not None:
                    where = "" if owner.get("host") == me["host"] else f" on {owner.get('host')}"
                    raise RunFolderInUse(
                        f"{self.path} is in use by process {owner['pid']}{where} since "
                        f"{owner.get('since', '?')}; wait for it to finish, or train into another "
                        f"folder (out=..., CLI: --out). If that process is gone, delete "
                        f"{self.lock_path}."
                    ) from None
                self.lock_path.unlink(missing_ok=True)  # stale: its process died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            return
        raise RunFolderInUse(f"{self.path}: could not take its lock {self.lock_path} (another "
                             "process keeps taking it)")

    def release_lock(self) -> None:
        """Removes this process's lock (a lock of another process is left alone)."""
        try:
            owner = json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            self.lock_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self):
        """Holds the folder's lock for the `with` block (released on exit and on exceptions).

        Raises:
            RunFolderInUse: Another live process holds it.

        Example:
            >>> with RunFolder("runs/a").lock():
            ...     ...  # train into runs/a
        """
        self.acquire_lock()
        try:
            yield self
        finally:
            self.release_lock()

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
        """Saves `model.keras` atomically: the portable inference model of `model`.

        What is written is `recipes.portable_model(model)`: the same predictions and weights
        from Keras core layers and ops only, uncompiled, so `keras.models.load_model` needs no
        `import recipes` (the optimizer state, the training loss and the augmentation stay with
        the in-memory model and `backup/`). A model with custom layers that have no core
        equivalent is saved as it is (a warning names them). Keras writes a temporary file,
        which is then renamed.
        """
        import warnings

        from .portable import custom_objects_in, portable_model

        self.path.mkdir(parents=True, exist_ok=True)
        portable = portable_model(model, strict=False)
        left = custom_objects_in(portable)
        if left:
            warnings.warn(f"{self.model_path} needs the package that defines {', '.join(left)} "
                          "to load (no Keras core equivalent)", stacklevel=2)
        tmp = self.path / f".{self.MODEL}.tmp.keras"
        portable.save(tmp)
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
        self.clear(self.BACKUP, f"{self.BACKUP}.unreadable")  # (set aside by ResilientBackup)
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
            ValueError: The run has no model (not finished), or a `model.keras` that is not a
                valid Keras model file (truncated, empty); the message names it.
        """
        from .portable import load_model_file

        if not self.model_path.is_file():
            raise ValueError(f"Run folder has no {self.MODEL} (not finished?); Received: {str(self.path)!r}")
        return load_model_file(self.model_path, **kwargs)
