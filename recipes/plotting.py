"""Every figure keras-recipes writes: training curves, tuner trials, image grids.

Figures use the Agg canvas from `callbacks.plotting` (no pyplot, so a notebook's backend is left
alone); schedule and LR-finder plots live there too (`callbacks.plot_schedule`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callbacks.plotting import new_figure, save_figure

__all__ = ["plot_curves", "plot_trials", "image_grid", "plot_confusion", "plot_reliability",
           "plot_top_losses", "plot_grad_cam", "plot_ablation"]

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


def plot_confusion(confusion, class_names, path) -> Path:
    """Writes a row-normalized confusion matrix (row = true class) with class names on the axes.

    Args:
        confusion: `(C, C)` counts, row = true class, column = predicted.
        class_names: The C names.
        path: Destination PNG.

    Returns:
        The path written.
    """
    counts = np.asarray(confusion, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    n = len(class_names)
    side = min(14.0, 3.0 + 0.45 * n)
    fig = new_figure(figsize=(side + 1.0, side), dpi=90)
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), [str(c) for c in class_names], rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), [str(c) for c in class_names])
    if n <= 30:  # numbers stay readable up to about 30 classes
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix (normalized by true class)")
    return Path(save_figure(fig, path))


def plot_reliability(bins: dict, path, *, ece=None) -> Path:
    """Writes a reliability diagram: accuracy per confidence bin against the diagonal.

    Args:
        bins: `recipes.after.reliability_bins(...)`: `edges`, `confidence`, `accuracy`, `count`.
        path: Destination PNG.
        ece: Expected calibration error shown in the title (default none).

    Returns:
        The path written.
    """
    edges = np.asarray(bins["edges"])
    acc = np.nan_to_num(np.asarray(bins["accuracy"], float))
    conf = np.asarray(bins["confidence"], float)
    count = np.asarray(bins["count"])
    width = np.diff(edges)
    fig = new_figure(figsize=(9, 4), dpi=90)
    ax, hist = fig.subplots(1, 2)
    ax.bar(edges[:-1], acc, width=width, align="edge", edgecolor="black", alpha=0.8,
           label="accuracy")
    filled = count > 0
    ax.bar(edges[:-1][filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled],
           align="edge", color="red", alpha=0.3, label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _finish(ax, xlabel="confidence", ylabel="accuracy",
            title="reliability" + (f" (ECE {ece:.3f})" if ece is not None else ""))
    hist.bar(edges[:-1], count, width=width, align="edge", edgecolor="black")
    _finish(hist, xlabel="confidence", ylabel="predictions", title="confidence histogram")
    return Path(save_figure(fig, path))


def _show_image(ax, image):
    image = np.clip(np.asarray(image, float), 0, 255) / 255.0
    if image.ndim == 3 and image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_top_losses(images, true, predicted, probabilities, path, *, columns=4) -> Path:
    """Writes the most confidently wrong images with true / predicted class and probability.

    Args:
        images: `(N, H, W, C)` images in 0-255, worst first.
        true, predicted: Class names per image.
        probabilities: Probability of the predicted class per image.
        path: Destination PNG.
        columns: Images per row (default 4).

    Returns:
        The path written.
    """
    n = len(images)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    fig = new_figure(figsize=(2.6 * cols, 3.2 * rows), dpi=90)
    axes = np.asarray(fig.subplots(rows, cols)).reshape(-1)
    for ax in axes[n:]:
        ax.axis("off")
    for ax, image, t, p, prob in zip(axes, images, true, predicted, probabilities):
        _show_image(ax, image)
        ax.set_title(f"true {t}\npred {p} ({prob:.2f})", fontsize=9)
    return Path(save_figure(fig, path))


def plot_grad_cam(image, heat, title, path, *, alpha=0.45) -> Path:
    """Writes an image beside its Grad-CAM heat map overlaid on it.

    Args:
        image: `(H, W, C)` image in 0-255.
        heat: `(H, W)` heat map in [0, 1].
        title: Text above the overlay (e.g. the class and its probability).
        path: Destination PNG.
        alpha: Opacity of the heat map (default 0.45).

    Returns:
        The path written.
    """
    fig = new_figure(figsize=(6, 3.2), dpi=90)
    left, right = fig.subplots(1, 2)
    _show_image(left, image)
    left.set_title("image")
    _show_image(right, image)
    right.imshow(np.asarray(heat, float), cmap="jet", alpha=alpha, vmin=0, vmax=1,
                 interpolation="bilinear")
    right.set_title(str(title))
    return Path(save_figure(fig, path))


def plot_ablation(summary, path, *, title="", baseline=None, scatter=None) -> Path:
    """Writes an ablation study's rows: mean test accuracy with ± std error bars.

    Args:
        summary: Rows from `recipes.ablate.report.summarize` (row, mean, std, ...).
        path: Destination PNG.
        title: Figure title.
        baseline: The baseline row, drawn in another colour and as a dashed line.
        scatter: A column (e.g. `"latency_ms"`) to plot accuracy against instead of bars.

    Returns:
        The path written.
    """
    rows = [s for s in summary if s.get("mean") is not None]
    fig = new_figure(figsize=(max(5, 1.1 * len(rows) + 2), 4), dpi=90)
    ax = fig.subplots()
    means = [100 * s["mean"] for s in rows]
    stds = [100 * (s.get("std") or 0.0) for s in rows]
    if scatter:
        xs = [s.get(scatter) for s in rows]
        for s, x, m, e in zip(rows, xs, means, stds):
            if x is not None:
                ax.errorbar([x], [m], yerr=[e], fmt="o", capsize=4)
                ax.annotate(s["row"], (x, m), textcoords="offset points", xytext=(4, 4))
        _finish(ax, xlabel=scatter.replace("_", " "), ylabel="test accuracy (%)", title=title)
    else:
        colours = ["tab:grey" if s["row"] == baseline else "tab:blue" for s in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=colours)
        ax.set_xticks(range(len(rows)), [s["row"] for s in rows], rotation=30, ha="right")
        base = [m for s, m in zip(rows, means) if s["row"] == baseline]
        if base:
            ax.axhline(base[0], color="tab:grey", ls="--", lw=1)
        if means:
            low = min(m - e for m, e in zip(means, stds))
            ax.set_ylim(max(0.0, low - 5), min(100.0, max(m + e for m, e in zip(means, stds)) + 2))
        _finish(ax, xlabel="row", ylabel="test accuracy (%)", title=title)
    fig.tight_layout()
    return Path(save_figure(fig, path))
