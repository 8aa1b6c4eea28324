"""Callbacks that keep a run recoverable: a backup that survives a kill mid-write, and a stop on
divergence that says where it happened and keeps the last good backup.

* ``ResilientBackup``: Keras ``BackupAndRestore`` that writes its files atomically, keeps the
  previous epoch's backup (``double_checkpoint``), skips epochs whose loss is not finite, and, when
  the backup cannot be read (truncated, corrupt, another model), restores the previous one or
  restarts from scratch with a one-line warning naming the folder. Never blocks a run.
* ``StopOnDivergence``: Keras ``TerminateOnNaN`` that records the epoch and batch and raises
  ``TrainingDiverged`` (so no NaN model is saved and the backup of the last good epoch stays).
* ``LossExplosionWarning``: warns once when the loss or ``val_loss`` grows far above its best.
* ``ResumableCSVLogger``: Keras ``CSVLogger`` whose file holds exactly the epochs the backup
  restored, then the new ones (no duplicates after a kill, no stale rows after a restart).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings

import keras
import numpy as np

__all__ = [
    "LossExplosionWarning", "ResilientBackup", "ResumableCSVLogger", "RunWarning",
    "StopOnDivergence", "TrainingDiverged",
]


class RunWarning(RuntimeWarning):
    """What these callbacks warn about: a run that goes on, but not as asked (an unreadable
    backup, an exploding loss). One line each; the `recipes` CLI prints them as such."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite.

    Attributes:
        epoch: 1-based epoch where it happened.
        batch: 1-based batch of that epoch.
        loss: The value (nan or inf).
    """

    def __init__(self, message, *, epoch=None, batch=None, loss=None):
        super().__init__(message)
        self.epoch, self.batch, self.loss = epoch, batch, loss


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number: not a loss to judge


class StopOnDivergence(keras.callbacks.TerminateOnNaN):
    """Raises ``TrainingDiverged`` at the first NaN/inf batch loss, naming the epoch and batch.

    Raising (Keras' ``raise_error=True``) rather than stopping gracefully skips every later
    epoch-end and train-end hook: no backup of NaN weights is written and the last good one is not
    deleted, and the caller does not save a NaN model.

    Args:
        hint: Text appended to the message, e.g. what to change (default: lower the rate).

    Example:
        >>> model.fit(x, y, callbacks=[StopOnDivergence()])  # raises TrainingDiverged
    """

    def __init__(self, hint="lower the learning rate"):
        super().__init__(raise_error=True)
        self.hint = hint
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or _finite(loss):
            return
        value = float(loss)
        name = "NaN" if np.isnan(value) else ("inf" if value > 0 else "-inf")
        epoch, batch = self._epoch + 1, int(batch) + 1
        hint = f"; {self.hint}" if self.hint else ""
        raise TrainingDiverged(f"loss became {name} at epoch {epoch} batch {batch}{hint}",
                               epoch=epoch, batch=batch, loss=value)


class LossExplosionWarning(keras.callbacks.Callback):
    """Warns once when an epoch's ``loss`` or ``val_loss`` explodes: above ``limit``, or
    ``factor`` times its best so far.

    A loss that explodes without reaching inf (Adam at a rate of 50: ``val_loss`` 1e23) is a run
    that diverged, although no NaN stops it.

    Args:
        factor: How many times the best value counts as exploding (default 100).
        limit: A value no sane classification loss reaches (default 1e6).
        hint: Text appended to the warning (default: the learning rate is too high).

    Attributes:
        warned: `(key, epoch, value)` of the warning given, else None.
    """

    def __init__(self, factor=100.0, limit=1e6, hint="the learning rate is probably too high"):
        super().__init__()
        self.factor, self.limit, self.hint = float(factor), float(limit), hint
        self._best = {}
        self.warned = None

    def on_train_begin(self, logs=None):
        self._best, self.warned = {}, None

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            value = (logs or {}).get(key)
            if value is None or not _finite(value):
                continue
            value, best = float(value), self._best.get(key)
            grew = best is not None and best > 0 and value > self.factor * best
            if (grew or value > self.limit) and self.warned is None:
                self.warned = (key, epoch + 1, value)
                how = (f"{value / best:.3g} times its best, {best:.3g}" if grew
                       else f"above {self.limit:.3g}")
                warnings.warn(f"{key} exploded to {value:.3g} at epoch {epoch + 1} ({how}); "
                              f"{self.hint}", RunWarning, stacklevel=2)
            self._best[key] = value if best is None else min(best, value)


class ResilientBackup(keras.callbacks.BackupAndRestore):
    """Keras ``BackupAndRestore`` that a kill, a corrupt file or a NaN loss cannot break.

    Differences from Keras' callback: ``latest.weights.h5`` and ``training_metadata.json`` are
    written to temporary files and renamed (a kill never leaves half a file); the previous epoch's
    backup is kept (``double_checkpoint=True``) and restored when the latest cannot be read; when
    neither can (truncated, corrupt, weights of another model), the backup is moved aside and the
    run restarts from epoch 1 with one warning naming the folder, never an error. An epoch whose
    logs hold a non-finite loss is not backed up, and a run that stopped on one keeps its backup.

    Attributes:
        restored_epoch: Epochs the restored backup had finished (0: started from scratch).
        restarted: True when an unreadable backup was discarded.

    Args:
        backup_dir: The backup folder.
        save_freq: ``"epoch"`` (default) or a number of batches.
        delete_checkpoint: Remove the backup when training ends normally (default True).
    """

    def __init__(self, backup_dir, save_freq="epoch", delete_checkpoint=True):
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=True,
                         delete_checkpoint=delete_checkpoint)
        self.restored_epoch = 0
        self.restarted = False
        self._diverged = False
        from recipes.compat import backup_paths  # lazy: recipes imports callbacks

        (self._weights_file, self._metadata_file, self._prev_weights_file,
         self._prev_metadata_file) = backup_paths(self)

    # ------------------------------------------------------------------ restore

    def on_train_begin(self, logs=None):
        self._diverged = False
        self.restored_epoch, self.restarted = 0, False
        if not os.path.isdir(self.backup_dir):
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        saved = self._snapshot()
        errors = []
        for candidate in ("latest", "previous"):
            try:
                if candidate == "previous":
                    self._use_previous()
                epoch = self._check_metadata()
                self._load_model()
                self.restored_epoch = epoch
                return
            except Exception as exc:  # any unreadable state: try the next, else start over
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
                self._restore(saved)
        self._discard()
        self.restarted = True
        warnings.warn(
            f"The backup in {self.backup_dir} cannot be read ({errors[0]}); it was moved to "
            f"{self._discarded_dir()} and the run restarts from epoch 1.", RunWarning,
            stacklevel=2,
        )

    def _check_metadata(self) -> int:
        """The finished epochs the metadata records (0 without a backup); raises when it is
        unreadable, or missing next to the weights."""
        if os.path.exists(self._metadata_file):
            with open(self._metadata_file) as f:
                epoch = json.load(f)["epoch"]
            if not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"bad epoch {epoch!r} in {self._metadata_file}")
            return epoch
        if os.path.exists(self._weights_file):
            raise ValueError(f"{self._metadata_file} is missing")
        return 0

    def _use_previous(self):
        if not os.path.exists(self._prev_weights_file):
            raise FileNotFoundError("no previous backup")
        shutil.copyfile(self._prev_weights_file, self._weights_file)
        if os.path.exists(self._prev_metadata_file):
            shutil.copyfile(self._prev_metadata_file, self._metadata_file)
        else:
            raise FileNotFoundError("no previous training metadata")

    def _state(self):
        """What a backup holds: the model's weights, then the optimizer's variables."""
        variables = list(self.model.weights)
        if self.model.optimizer is not None:
            variables += list(self.model.optimizer.variables)
        return variables

    def _snapshot(self):
        return [(v, np.array(v.numpy())) for v in self._state()]

    def _load_model(self):
        if os.path.exists(self._weights_file) and is_state_file(self._weights_file):
            read_state(self._weights_file, self._state())
            from recipes.compat import set_initial_epoch

            set_initial_epoch(self.model, self._check_metadata())
        else:  # a backup Keras wrote (an earlier version of this package)
            super()._load_model()

    def _restore(self, saved):
        # A load that failed half-way may have set some variables: put every one back.
        for variable, value in saved:
            variable.assign(value)

    def _discarded_dir(self):
        return f"{os.fspath(self.backup_dir).rstrip(os.sep)}.unreadable"

    def _discard(self):
        target = self._discarded_dir()
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(self.backup_dir, target)
        except OSError:
            shutil.rmtree(self.backup_dir, ignore_errors=True)

    # ------------------------------------------------------------------ save

    def on_train_batch_end(self, batch, logs=None):
        if not _finite((logs or {}).get("loss")):
            self._diverged = True
            return
        super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self._diverged or not _finite((logs or {}).get("loss")):
            self._diverged = True
            return  # keep the last good epoch's backup
        super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if self._diverged:
            return
        super().on_train_end(logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        if os.path.exists(self._weights_file) and os.path.exists(self._metadata_file):
            # The pair that was complete becomes the previous backup (atomically, file by file).
            _atomic_copy(self._weights_file, self._prev_weights_file)
            _atomic_copy(self._metadata_file, self._prev_metadata_file)
        tmp_weights = os.path.join(self.backup_dir, ".latest.tmp.weights.h5")
        # Not `save_weights`: Keras' object-graph walk took 0.2-0.7 s per epoch for a 1.5M
        # parameter model (a quarter of a digits epoch); the same arrays in order take ~0.03 s.
        write_state(tmp_weights, self._state())
        metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})
        tmp_meta = os.path.join(self.backup_dir, ".training_metadata.tmp.json")
        with open(tmp_meta, "w") as f:
            f.write(metadata)
        os.replace(tmp_weights, self._weights_file)
        os.replace(tmp_meta, self._metadata_file)


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """Keras ``CSVLogger`` that continues the rows of the epochs a ``ResilientBackup`` restored.

    Put it after the backup in the callback list (its ``on_train_begin`` runs first). Rows of
    epochs the backup did not restore (written after its last save, or of a run that restarted)
    are dropped, so the file holds one row per epoch of the model being trained.

    Args:
        filename: The CSV file.
        backup: The run's ``ResilientBackup`` (None: a plain ``CSVLogger`` that appends when
            `append`).
        append: Append to an existing file (without `backup`; default False).
    """

    def __init__(self, filename, backup=None, append=False, **kwargs):
        super().__init__(os.fspath(filename), append=append, **kwargs)
        self.backup = backup

    def on_train_begin(self, logs=None):
        if self.backup is not None:
            keep = self.backup.restored_epoch
            self.append = keep > 0 and os.path.exists(self.filename)
            if self.append:
                _keep_rows(self.filename, keep)
        super().on_train_begin(logs)


def _keep_rows(path, epochs):
    """Rewrites the CSV with its header and the rows of epochs `0 .. epochs - 1` only."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    column = header.index("epoch") if "epoch" in header else None
    kept = [r for i, r in enumerate(body)
            if (int(float(r[column])) if column is not None and r[column:column + 1] else i) < epochs]
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *kept])  # the excel dialect, as CSVLogger writes
    os.replace(tmp, path)


_STATE_FORMAT = "keras-recipes-backup/1"


def write_state(path, variables) -> None:
    """Writes the variables' values, in order, to an HDF5 file (raw bytes plus their dtype, so
    bfloat16 and other non-HDF5 types round-trip)."""
    import h5py

    values = [np.array(v.numpy(), order="C") for v in variables]  # not ascontiguousarray: 0-d
    with h5py.File(path, "w") as f:
        f.attrs["format"] = _STATE_FORMAT
        # One attribute for all (an attribute per dataset doubled the write time).
        f.attrs["dtypes"] = json.dumps([value.dtype.name for value in values])
        f.attrs["paths"] = json.dumps([str(v.path) for v in variables])
        for i, value in enumerate(values):
            f.create_dataset(f"{i:05d}", data=value.view(f"u{value.dtype.itemsize}"))


def is_state_file(path) -> bool:
    """True when `path` is a file `write_state` wrote (False for Keras' `.weights.h5`)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == _STATE_FORMAT
    except OSError:  # truncated or not HDF5: `read_state` names the problem
        return True


def _dtype(name) -> np.dtype:
    import ml_dtypes  # bfloat16 and the float8 types (a Keras dependency)

    name = str(name)
    return np.dtype(getattr(ml_dtypes, name) if hasattr(ml_dtypes, name) else name)


def read_state(path, variables) -> None:
    """Assigns the values `write_state` wrote to `variables` (the same model and optimizer).

    Raises:
        ValueError: The file holds another number of values, or one of another shape or dtype
            (a backup of another model); nothing is assigned then.
    """
    import h5py

    with h5py.File(path, "r") as f:
        names = sorted(f.keys())
        if len(names) != len(variables):
            raise ValueError(f"The backup {path} holds {len(names)} values; this model and its "
                             f"optimizer have {len(variables)}")
        dtypes, paths = json.loads(f.attrs["dtypes"]), json.loads(f.attrs["paths"])
        values = []
        for name, kind, saved, variable in zip(names, dtypes, paths, variables):
            value = np.asarray(f[name]).view(_dtype(kind))
            if value.shape != tuple(variable.shape) or value.dtype != _dtype(variable.dtype):
                raise ValueError(
                    f"The backup {path} holds {saved} as {value.dtype}"
                    f"{list(value.shape)}; this model's {variable.path} is "
                    f"{variable.dtype}{list(variable.shape)}")
            values.append(value)
    for variable, value in zip(variables, values):
        variable.assign(value)


def _atomic_copy(src, dst):
    tmp = f"{dst}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
