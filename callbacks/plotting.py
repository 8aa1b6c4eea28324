"""PNG plots of learning-rate schedules and LR-finder curves (matplotlib, Agg)."""

import os

import keras
import numpy as np

from callbacks.schedules import ScheduleCallback, check_positive_int


def new_figure(figsize=(6, 4), dpi=100):
    """A matplotlib Figure on an Agg canvas: the one matplotlib setup of keras-recipes.

    No pyplot, so the process-wide backend (e.g. a notebook's) is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path, dpi=None):
    """Writes a figure as PNG (parent folders created) and returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=dpi)
    return path


def schedule_values(schedule, epochs, steps_per_epoch):
    """Evaluate a schedule at every optimizer step of a run.

    Args:
        schedule: A ``LearningRateSchedule`` (called with the step) or a
            decay callback from this package (its ``as_schedule`` is used).
        epochs: int > 0.
        steps_per_epoch: int > 0.

    Returns:
        float64 numpy array of length ``epochs * steps_per_epoch``.

    Raises:
        ValueError: On a non-schedule or non-positive sizes.
    """
    check_positive_int("epochs", epochs)
    check_positive_int("steps_per_epoch", steps_per_epoch)
    if isinstance(schedule, ScheduleCallback):
        schedule = schedule.as_schedule(steps_per_epoch)
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        raise ValueError(
            "schedule must be a LearningRateSchedule or a callbacks decay callback; "
            f"Received: schedule={schedule!r}"
        )
    steps = np.arange(epochs * steps_per_epoch, dtype="float32")
    values = keras.ops.convert_to_numpy(schedule(steps))
    if np.shape(values) != steps.shape:
        # Some schedules only broadcast over scalar steps.
        values = [keras.ops.convert_to_numpy(schedule(int(s))) for s in steps]
    return np.asarray(values, dtype="float64")


def plot_schedule(schedule, epochs, steps_per_epoch, path):
    """Write a PNG of the learning rate over the optimizer steps of a run.

    Args:
        schedule: A ``LearningRateSchedule`` or a decay callback from this
            package (e.g. ``CosineDecay(0.1, 30, warmup_epochs=2)``).
        epochs: int > 0.
        steps_per_epoch: int > 0.
        path: Output ``.png`` path; parent folders are created.

    Returns:
        The path written, as a str.

    Raises:
        ValueError: On a non-schedule or non-positive sizes.

    Example:
        >>> plot_schedule(make_schedule("onecycle", 1e-2, epochs=10, steps_per_epoch=50),
        ...               10, 50, "runs/lr.png")
    """
    values = schedule_values(schedule, epochs, steps_per_epoch)
    figure = new_figure()
    axes = figure.add_subplot()
    axes.plot(np.arange(values.size), values)
    for epoch in range(1, epochs):
        axes.axvline(epoch * steps_per_epoch, color="0.9", linewidth=0.5, zorder=0)
    axes.set_xlabel(f"step ({steps_per_epoch} per epoch)")
    axes.set_ylabel("learning rate")
    axes.set_title(getattr(schedule, "name", None) or type(schedule).__name__)
    return save_figure(figure, path)


def plot_lr_finder(result, path):
    """Write the loss-vs-learning-rate PNG of an LR range test.

    Args:
        result: An :class:`~callbacks.lr_finder.LRFinderResult`.
        path: Output ``.png`` path; parent folders are created.

    Returns:
        The path written, as a str.
    """
    figure = new_figure()
    axes = figure.add_subplot()
    axes.plot(result.lrs, result.raw_losses, color="0.75", linewidth=0.8, label="batch loss")
    axes.plot(result.lrs, result.losses, label="smoothed loss")
    markers = {"valley": "o", "steep": "s", "minimum": "^"}
    for method, lr in result.suggestions.items():
        if np.isfinite(lr):
            loss = np.interp(np.log(lr), np.log(result.lrs), result.losses)
            axes.plot([lr], [loss], markers.get(method, "x"), label=f"{method}: {lr:.2e}")
    axes.set_xscale("log")
    finite = result.losses[np.isfinite(result.losses)]
    if finite.size:
        low, first = float(finite.min()), float(finite[0])
        axes.set_ylim(low - 0.1 * abs(first - low) - 1e-8, first + 0.5 * abs(first - low) + 1e-8)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss")
    axes.legend()
    return save_figure(figure, path)
