"""Presets over Keras' own stopping, checkpoint, backup and NaN callbacks."""

import os

import keras

from callbacks.lr_logger import LearningRateLogger
from callbacks.schedules import check_number, check_positive_int


def _check_monitor(monitor):
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a non-empty str; Received: monitor={monitor!r}")


def early_stopping(
    monitor="val_loss", patience=5, restore_best_weights=True, min_delta=0.0, **kwargs
):
    """Keras ``EarlyStopping`` with recipe defaults.

    Args:
        monitor: str, default ``"val_loss"``.
        patience: int >= 0, default 5. Epochs without improvement to wait.
        restore_best_weights: bool, default True. Roll back to the best epoch
            when stopping (or at the end of training).
        min_delta: float >= 0, default 0.0. Smallest change that counts as an
            improvement.
        **kwargs: Passed to ``keras.callbacks.EarlyStopping`` (``mode``,
            ``baseline``, ``start_from_epoch``, ``verbose``).

    Returns:
        A ``keras.callbacks.EarlyStopping``.

    Raises:
        ValueError: On out-of-range arguments.

    Example:
        >>> model.fit(x, y, validation_split=0.2, epochs=100, callbacks=[early_stopping()])
    """
    _check_monitor(monitor)
    check_positive_int("patience", patience, minimum=0)
    check_number("min_delta", min_delta, low=0)
    return keras.callbacks.EarlyStopping(
        monitor=monitor,
        patience=patience,
        restore_best_weights=restore_best_weights,
        min_delta=min_delta,
        **kwargs,
    )


def checkpoint(path, monitor="val_loss", save_best_only=True, save_weights_only=False, **kwargs):
    """Keras ``ModelCheckpoint`` that keeps the best model.

    Args:
        path: File path; ``.keras`` for full models, ``.weights.h5`` when
            ``save_weights_only``. May contain ``{epoch}`` style fields.
        monitor: str, default ``"val_loss"``.
        save_best_only: bool, default True.
        save_weights_only: bool, default False.
        **kwargs: Passed to ``keras.callbacks.ModelCheckpoint``.

    Returns:
        A ``keras.callbacks.ModelCheckpoint``; parent folders are created.

    Raises:
        ValueError: On a bad monitor or a path with the wrong extension.

    Example:
        >>> model.fit(x, y, validation_split=0.2, callbacks=[checkpoint("runs/a/best.keras")])
    """
    _check_monitor(monitor)
    path = os.fspath(path)
    suffix = ".weights.h5" if save_weights_only else ".keras"
    if not path.endswith(suffix):
        raise ValueError(
            f"path must end with {suffix!r} when save_weights_only={save_weights_only}; "
            f"Received: path={path!r}"
        )
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return keras.callbacks.ModelCheckpoint(
        path,
        monitor=monitor,
        save_best_only=save_best_only,
        save_weights_only=save_weights_only,
        **kwargs,
    )


def backup(directory, save_freq="epoch", delete_checkpoint=True, **kwargs):
    """Keras ``BackupAndRestore``: resume an interrupted ``fit`` where it stopped.

    The backup is written at the end of every epoch (``save_freq="epoch"``);
    a later ``fit`` with the same directory restores the model, optimizer and
    epoch counter and continues with the next epoch. The backup is deleted when
    training finishes normally (``delete_checkpoint=True``).

    Args:
        directory: Backup folder (created if needed). Use one per run.
        save_freq: ``"epoch"`` (default) or an int number of batches.
        delete_checkpoint: bool, default True.
        **kwargs: Passed to ``keras.callbacks.BackupAndRestore``.

    Returns:
        A ``keras.callbacks.BackupAndRestore``.

    Raises:
        ValueError: On an empty directory name.

    Example:
        >>> model.fit(x, y, epochs=50, callbacks=[backup("runs/a/backup")])
    """
    directory = os.fspath(directory)
    if not directory:
        raise ValueError(f"directory must be a non-empty path; Received: directory={directory!r}")
    return keras.callbacks.BackupAndRestore(
        directory, save_freq=save_freq, delete_checkpoint=delete_checkpoint, **kwargs
    )


def terminate_on_nan():
    """Keras ``TerminateOnNaN``: stop training on a NaN or inf batch loss.

    Returns:
        A ``keras.callbacks.TerminateOnNaN``.

    Example:
        >>> model.fit(x, y, callbacks=[terminate_on_nan()])
    """
    return keras.callbacks.TerminateOnNaN()


def default_callbacks(
    run_dir=None, *, patience=5, monitor="val_loss", restore_best_weights=True, log_lr=True,
    resilient=False, divergence_hint="lower the learning rate",
):
    """The trainer's standard callbacks for one run (what ``recipes.train`` uses).

    ``[LearningRateLogger, TerminateOnNaN, EarlyStopping, BackupAndRestore]``:
    the LR logger first, so a ``CSVLogger`` appended after these records the
    rate each epoch used (Keras 3.15 does not log an in-optimizer schedule);
    early stopping only with ``patience``; the backup only with ``run_dir``.

    Note that ``BackupAndRestore`` does not save ``EarlyStopping``'s patience
    counter, so a resumed run starts counting patience afresh.

    With ``resilient=True`` (what ``recipes.train`` uses) the NaN check and the
    backup are those of ``callbacks.resilience``: a NaN/inf loss raises
    ``TrainingDiverged`` (epoch and batch named, the last good backup kept),
    a loss that explodes warns, and an unreadable backup falls back to the
    previous one or restarts with a warning instead of failing.

    Args:
        run_dir: The run's folder (default None: no backup); the backup goes to
            ``run_dir/backup``.
        patience: int >= 0 or None, default 5; 0 or None: no early stopping.
        monitor: str, default ``"val_loss"``.
        restore_best_weights: bool, default True.
        log_lr: bool, default True.
        resilient: bool, default False (Keras' ``TerminateOnNaN`` and
            ``BackupAndRestore``); True: ``StopOnDivergence``,
            ``LossExplosionWarning`` and ``ResilientBackup``.
        divergence_hint: str, what the ``TrainingDiverged`` message and the
            explosion warning advise (``resilient`` only).

    Returns:
        A list of callbacks.

    Raises:
        ValueError: On out-of-range arguments.

    Example:
        >>> model.fit(train_ds, validation_data=val_ds, epochs=30,
        ...           callbacks=default_callbacks("runs/exp1"))
    """
    from callbacks.resilience import LossExplosionWarning, ResilientBackup, StopOnDivergence

    result = [LearningRateLogger()] if log_lr else []
    if resilient:
        result += [StopOnDivergence(divergence_hint), LossExplosionWarning(hint=divergence_hint)]
    else:
        result.append(terminate_on_nan())
    if patience:
        result.append(early_stopping(monitor, patience, restore_best_weights=restore_best_weights))
    if run_dir is not None:
        directory = os.path.join(os.fspath(run_dir), "backup")
        result.append(ResilientBackup(directory) if resilient else backup(directory))
    return result
