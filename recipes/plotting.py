"""Every figure keras-recipes writes: training curves, tuner trials, image grids.

Figures use the Agg canvas from `callbacks.plotting` (no pyplot, so a notebook's backend is left
alone); schedule and LR-finder plots live there too (`callbacks.plot_schedule`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callbacks.plotting import new_figure, save_figure

__all__ = ["plot_curves", "plot_trials", "image_grid"]

_MIN_TILE = 64  # digits are 8x8: blow small images up so a grid is readable


def plot_curves(history: dict, path, *, marks=None) -> Path:
    """Writes loss and accuracy per epoch (train and validation) as a PNG.

    Args:
        history: Per-epoch logs as lists.
        path: Destination PNG.
        marks: Optional `{epoch: label}` drawn as vertical lines (e.g. where fine-tuning began).

    Returns:
        The path written.

    Example:
        >>> plot_curves(result.history, "curves.png", marks={2: "fine-tuning starts"})
    """
    fig = new_figure(figsize=(10, 4), dpi=90)
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            if history.get(name):
                epochs = range(1, len(history[name]) + 1)
                ax.plot(epochs, history[name], style, marker="o", ms=3, label=name)
        for epoch, label in (marks or {}).items():
            ax.axvline(epoch + 0.5, color="grey", ls=":", label=label)
        _finish(ax, xlabel="epoch", title=key)
    return Path(save_figure(fig, path))


def _finish(ax, *, xlabel, title=None, ylabel=None):
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an empty legend warns
        ax.legend()


def plot_trials(rows: list[dict], objective: str, direction: str, path) -> Path:
    """Writes a tuner's trials: each completed trial's objective, the best so far, failures.

    Args:
        rows: Trial rows with `trial`, `status` and the objective's value.
        objective: The metric name (e.g. `"val_accuracy"`).
        direction: `"min"` or `"max"`.
        path: Destination PNG.

    Returns:
        The path written.
    """
    from matplotlib.ticker import MaxNLocator

    xs, ys, fails, best, best_so_far = [], [], [], None, []
    ids = [int(r["trial"]) if str(r["trial"]).isdigit() else i for i, r in enumerate(rows)]
    for i, row in zip(ids, rows):
        value = row.get(objective)
        if row["status"] == "COMPLETED" and value is not None:
            xs.append(i)
            ys.append(value)
            if best is None or (value < best if direction == "min" else value > best):
                best = value
        elif row["status"] != "RUNNING":
            fails.append(i)
        best_so_far.append(best)
    fig = new_figure(figsize=(7, 4), dpi=90)
    ax = fig.subplots()
    if xs:
        ax.plot(xs, ys, "o", label=objective)
    steps = [(i, b) for i, b in zip(ids, best_so_far) if b is not None]
    if steps:
        ax.step([s[0] for s in steps], [s[1] for s in steps], where="post", label="best so far")
    if fails:
        floor = min(ys) if ys else 0.0
        ax.plot(fails, [floor] * len(fails), "x", color="red", label="failed")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _finish(ax, xlabel="trial", ylabel=objective)
    return Path(save_figure(fig, path))


def image_grid(columns, path) -> Path:
    """Writes image batches side by side as one PNG (a column per batch, a row per image).

    Args:
        columns: Arrays of shape `(n, height, width, channels)`, values in 0-255; small images
            are enlarged so each tile is at least 64 px.
        path: Destination PNG.

    Returns:
        The path written.
    """
    from PIL import Image

    path = Path(path)
    n, height, width, channels = columns[0].shape
    scale = max(1, -(-_MIN_TILE // min(height, width)))
    pad = 2
    tile_h, tile_w = height * scale, width * scale
    grid = np.full(
        (n * (tile_h + pad) + pad, len(columns) * (tile_w + pad) + pad, channels), 255, "uint8"
    )
    for c, batch in enumerate(columns):
        tiles = np.clip(np.rint(batch), 0, 255).astype("uint8")
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
        for r in range(n):
            top, left = pad + r * (tile_h + pad), pad + c * (tile_w + pad)
            grid[top:top + tile_h, left:left + tile_w] = tiles[r]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid[..., 0] if channels == 1 else grid).save(path, format="PNG")
    return path
