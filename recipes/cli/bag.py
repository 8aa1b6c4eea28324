"""`recipes bag`: train N members on bootstrap resamples and combine them into one model."""

from __future__ import annotations

from .args import add_recipe_arguments, data_from_args, default_out, recipe_from_args, verbosity

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes bag` (the train flags plus `--members` and `--method`)."""
    p = subparsers.add_parser(
        "bag", help="bagging: members on bootstrap resamples, one ensemble model",
        description="Trains --members classifiers, member i with seed+i on a bootstrap resample "
        "of the training split; writes OUT/member<i>/ run folders and the ensemble's "
        "model.keras and metrics.json in OUT. Re-run to resume.",
    )
    p.add_argument("--members", type=int, default=5, help="number of members (default 5)")
    p.add_argument("--method", default="average", help="average | vote | stack (default average)")
    add_recipe_arguments(p, exclude_groups=("fine-tuning",))
    p.add_argument("--out", help="folder (default: runs/<dataset>_<backbone>_bag)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Trains the members, prints each member's and the ensemble's test accuracy."""
    from .. import validation as v
    from ..bagging import bagging
    from ..ensemble import METHODS

    v.check_int("members", args.members, 2)
    v.check_choice("method", args.method, METHODS)
    recipe = recipe_from_args(args)
    out = args.out or default_out(recipe, "_bag")
    data = data_from_args(args, recipe)
    print(f"bagging {args.members} x {recipe.backbone} on {recipe.dataset} into {out}", flush=True)
    result = bagging(data=data, members=args.members, method=args.method, out=out,
                     recipe=recipe, verbose=verbosity())
    _print_accuracies(result.metrics)
    print(f"ensemble: {out}/model.keras")
    return 0


def _print_accuracies(metrics):
    for i, acc in enumerate(metrics["member_test_accuracy"]):
        print(f"member {i}: test accuracy {_fmt(acc)}")
    print(f"{metrics['method']} of {metrics['members']}: test accuracy {_fmt(metrics['test_accuracy'])}")


def _fmt(x):
    return "n/a" if x is None else f"{x:.4f}"
