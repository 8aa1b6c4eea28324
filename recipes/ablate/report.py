"""What an ablation's runs add up to: mean ± std per row, the paired difference to the baseline
with its 95 % interval, a verdict, and `table.md`.

The seeds are paired: seed k of a row and seed k of the baseline share the data split (and, for
ensembles, nothing else), so the difference per seed removes the split's luck from the noise.
The interval is Student's t on those differences (`mean ± t(0.975, n-1) * sd / sqrt(n)`), at
least one test image wide on each side (accuracy moves in steps of one image).
"""

from __future__ import annotations

import math
import statistics

__all__ = ["summarize", "paired_interval", "verdict", "markdown_table", "METRIC"]

#: The column every study compares.
METRIC = "test_accuracy"


def paired_interval(diffs, confidence=0.95, resolution=0.0):
    """`(mean, low, high)` of paired differences; low/high are None for fewer than 2 pairs.

    Args:
        diffs: Row minus baseline, one per seed.
        confidence: Default 0.95.
        resolution: The smallest half-width (default 0). `ablate` passes one test image
            (`1 / test size`): accuracies move in such steps, so seeds that all differ by
            exactly one image give a zero spread that proves nothing.
    """
    diffs = [float(d) for d in diffs]
    if not diffs:
        return None, None, None
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, None, None
    from scipy import stats

    t = stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1)
    half = max(t * statistics.stdev(diffs) / math.sqrt(len(diffs)), resolution)
    return mean, mean - half, mean + half


def verdict(low, high) -> str:
    """`helps` (the whole interval above 0), `hurts` (below 0), else `within noise`."""
    if low is None or high is None:
        return "n/a (one seed)"
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return "within noise"


def summarize(rows, order, baseline, metric=METRIC, resolution=0.0):
    """One summary per study row, in `order`.

    Args:
        rows: Result rows (dicts with `row`, `seed` and `metric`; `train_seconds`,
            `latency_ms` when present).
        order: Row names in table order.
        baseline: The baseline row's name.
        metric: The compared column (default `test_accuracy`).
        resolution: Smallest interval half-width (see `paired_interval`; default 0).

    Returns:
        A list of dicts: row, n, mean, std, diff, low, high, verdict, and the means of
        `train_seconds` and `latency_ms` where the rows have them.
    """
    by_row = {name: {} for name in order}
    for r in rows:
        if r.get(metric) is not None and r["row"] in by_row:
            by_row[r["row"]][int(r["seed"])] = r
    base = by_row.get(baseline, {})
    out = []
    for name in order:
        cells = by_row[name]
        values = [float(c[metric]) for c in cells.values()]
        summary = {"row": name, "n": len(values),
                   "mean": statistics.fmean(values) if values else None,
                   "std": statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)}
        for extra in ("train_seconds", "latency_ms"):
            got = [float(c[extra]) for c in cells.values() if c.get(extra) not in (None, "")]
            if got:
                summary[extra] = statistics.fmean(got)
        if name == baseline:
            summary.update(diff=0.0, low=None, high=None, verdict="baseline")
        else:
            paired = sorted(set(cells) & set(base))
            diff, low, high = paired_interval(
                [float(cells[k][metric]) - float(base[k][metric]) for k in paired],
                resolution=resolution)
            summary.update(diff=diff, low=low, high=high,
                           verdict=verdict(low, high) if paired else "n/a (no baseline)")
        out.append(summary)
    return out


def _pt(x):
    return "–" if x is None else f"{round(100 * x, 1) + 0.0:.1f}"


def _signed(x):  # + 0.0: a rounded -0.0 prints as +0.0
    return "–" if x is None else f"{round(100 * x, 1) + 0.0:+.1f}"


def markdown_table(study, summaries, *, changes=None, seeds=None, note="") -> str:
    """`table.md`: one line per row (accuracy in %, difference in points).

    Args:
        study: The `Study`.
        summaries: From `summarize`.
        changes: `{row: text}` shown in a "change" column (default: none).
        seeds: Seeds per row, for the heading.
        note: A line under the table (e.g. the data and epochs).
    """
    extra = [k for k in ("train_seconds", "latency_ms") if any(k in s for s in summaries)]
    head = ["row", *(["change"] if changes else []), "test accuracy % (mean ± std)",
            f"Δ vs {study.baseline} (pt) [95 % CI]", "verdict", "seeds",
            *({"train_seconds": "train s", "latency_ms": "ms / image"}[k] for k in extra)]
    lines = [f"# ablation: {study.name}", "", study.summary + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        acc = "–" if s["mean"] is None else f"{_pt(s['mean'])} ± {_pt(s['std'])}"
        if s["row"] == study.baseline:
            delta = "baseline"
        elif s["low"] is None:
            delta = _signed(s["diff"])
        else:
            delta = f"{_signed(s['diff'])} [{_signed(s['low'])}, {_signed(s['high'])}]"
        cells = [s["row"], *([changes.get(s["row"], "")] if changes else []), acc, delta,
                 s["verdict"], str(s["n"]),
                 *(f"{s[k]:.{1 if k == 'train_seconds' else 2}f}" if k in s else "–" for k in extra)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if seeds is not None:
        lines.append(f"{seeds} seed(s) per row; Δ is paired by seed (same data split), its "
                     "interval Student's t, never narrower than ± one test image. helps / hurts: "
                     "the interval excludes 0.")
    if note:
        lines.append(note)
    return "\n".join(lines) + "\n"
