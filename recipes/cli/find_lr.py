"""`recipes find-lr`: the LR range test on the recipe's model and data, with a suggestion."""

from __future__ import annotations

from .args import EXPLICIT_NONE, add_recipe_arguments, data_from_args, recipe_from_args

__all__ = ["add_parser", "run"]


def _plot_path(text):
    return EXPLICIT_NONE if text.strip().lower() in ("", "none") else text


def add_parser(subparsers):
    """Adds `recipes find-lr` (the Recipe flags except the fine-tuning ones, and the range)."""
    p = subparsers.add_parser(
        "find-lr", help="LR range test: suggest a learning rate",
        description="Trains the recipe's model for --steps batches while the LR grows "
        "exponentially from --start to --end, records the smoothed loss, restores the model and "
        "suggests a learning rate (the LR at the loss minimum / 10).",
    )
    add_recipe_arguments(p, exclude_groups=("fine-tuning",))
    g = p.add_argument_group("range test")
    g.add_argument("--start", type=float, default=1e-7, help="first LR (default 1e-7)")
    g.add_argument("--end", type=float, default=10.0, help="last LR (default 10)")
    g.add_argument("--steps", type=int, default=100, help="steps (default 100)")
    g.add_argument("--smoothing", type=float, default=0.98, help="loss smoothing (default 0.98)")
    g.add_argument("--diverge", type=float, default=4.0,
                   help="stop when the loss exceeds this times its minimum (default 4)")
    g.add_argument("--plot", type=_plot_path, default="lr_find.png",
                   help="PNG of loss vs LR (default lr_find.png; none: no plot)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Runs the range test, then prints the suggestions."""
    import callbacks

    from ..lr_find import find_lr

    recipe = recipe_from_args(args)
    # A bad range fails before the data is loaded (find_lr checks it again, for library callers).
    callbacks.LRFinder(start=args.start, end=args.end, steps=args.steps, smoothing=args.smoothing,
                       diverge=args.diverge)
    data = data_from_args(args, recipe)
    plot = None if args.plot is EXPLICIT_NONE else args.plot
    print(f"LR range test: {recipe.backbone} on {data.source} ({data.sizes.get('train', '?')} "
          f"training images), {args.steps} steps from {args.start:g} to {args.end:g}", flush=True)
    result = find_lr(
        None, data, start=args.start, end=args.end, steps=args.steps, smoothing=args.smoothing,
        diverge=args.diverge, plot=plot, recipe=recipe,
    )
    for name, value in result.suggestions.items():
        print(f"{name:>8}: {value:.3g}")
    print(f"suggested learning rate: {result.suggestion:.3g}" + (f"  plot: {plot}" if plot else ""))
    return 0
