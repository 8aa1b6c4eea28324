"""`recipes train`: train a classifier from the Recipe the flags describe."""

from __future__ import annotations

from .args import add_recipe_arguments, data_from_args, default_out, recipe_from_args, verbosity

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes train` (every Recipe flag except the fine-tuning ones)."""
    p = subparsers.add_parser(
        "train", help="train a classifier (bare: mobilenet_v3_small on digits, offline)",
        description="Builds, trains and evaluates a classifier; writes a run folder (model.keras, "
        "recipe.json, history.csv, metrics.json, curves.png). Re-run the same command to resume.",
    )
    add_recipe_arguments(p, exclude_groups=("fine-tuning",))
    p.add_argument("--out", help="run folder (default: runs/<dataset>_<backbone>); re-run to resume")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Trains, then prints the test accuracy and the run folder."""
    from ..training import train

    recipe = recipe_from_args(args)
    out = args.out or default_out(recipe)
    data = data_from_args(args, recipe)
    print(f"training {recipe.backbone} on {recipe.dataset} ({data.sizes.get('train', '?')} images) "
          f"for {recipe.epochs} epoch(s) into {out}", flush=True)
    result = train(data=data, recipe=recipe, out=out, verbose=verbosity())
    acc = result.metrics.get("test_accuracy")
    acc_text = f"{acc:.4f}" if acc is not None else "n/a (no test split)"
    print(f"test accuracy: {acc_text}  run folder: {result.run_dir}")
    return 0
