"""`recipes train`: train a classifier from the Recipe the flags describe."""

from __future__ import annotations

import contextlib
import sys

from .args import (
    add_recipe_arguments,
    add_worker_arguments,
    data_from_args,
    default_out,
    explicit_fields,
    recipe_from_args,
    report_skipped,
    verbosity,
)

__all__ = [
    "add_parser", "run", "add_overwrite_argument", "one_line_warnings", "report_failure",
    "run_failed",
]


def add_parser(subparsers):
    """Adds `recipes train` (every Recipe flag except the fine-tuning ones)."""
    p = subparsers.add_parser(
        "train", help="train a classifier (bare: mobilenet_v3_small on digits, offline)",
        description="Builds, trains and evaluates a classifier; writes a run folder (model.keras, "
        "recipe.json, history.csv, metrics.json, curves.png). Re-run the same command to resume.",
    )
    add_recipe_arguments(p, exclude_groups=("fine-tuning",))
    p.add_argument("--out", help="run folder (default: runs/<dataset>_<backbone>); re-run to resume")
    add_overwrite_argument(p)
    add_worker_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Trains, then prints the test accuracy and the run folder."""
    from ..training import adapt_recipe, train

    recipe = recipe_from_args(args)
    out = args.out or default_out(recipe)
    data = data_from_args(args, recipe)
    report_skipped(data, out)
    recipe = adapt_recipe(recipe, data, explicit=explicit_fields(args))
    where = worker_text(args, out)
    print(f"training {recipe.backbone} on {recipe.dataset} ({data.sizes.get('train', '?')} images) "
          f"for {recipe.epochs} epoch(s) {where}", flush=True)
    try:
        with one_line_warnings(args):
            result = train(data=data, recipe=recipe, out=out, verbose=verbosity(),
                           workers=args.workers, worker_index=args.worker_index,
                           overwrite=args.overwrite)
    except run_failed() as exc:
        return report_failure(args, exc)
    acc = result.metrics.get("test_accuracy")
    acc_text = f"{acc:.4f}" if acc is not None else "n/a (no test split)"
    print(f"test accuracy: {acc_text}  run folder: {result.run_dir or 'written by worker 0'}")
    return 0


def add_overwrite_argument(p):
    """`--overwrite`: replace a run of other settings in `--out` (refused without it)."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run with other settings in --out (without it: refused; "
                   "the same settings resume or redo it)")


def run_failed() -> tuple:
    """The errors a run ends with that are not bad arguments: exit 1 with one line."""
    from callbacks import TrainingDiverged

    from ..run import RunFolderInUse

    return (TrainingDiverged, RunFolderInUse)


@contextlib.contextmanager
def one_line_warnings(args):
    """Prints the run's own warnings (`callbacks.RunWarning`: an unreadable backup, an exploding
    loss) as `recipes <command>: warning: ...`, one line each; others as Python does."""
    import warnings

    from callbacks import RunWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunWarning):
            print(f"recipes {args.command}: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def report_failure(args, exc) -> int:
    """Prints `recipes <command>: error: <one line>` on stderr; returns 1."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    print(f"recipes {args.command}: error: {text}", file=sys.stderr, flush=True)
    return 1


def worker_text(args, out) -> str:
    """Where the run goes: `into <out>`, or which worker this is and who writes the folder."""
    if args.workers is None or args.worker_index == 0:
        return f"into {out}" + (" (worker 0, coordinator)" if args.workers else "")
    return f"as worker {args.worker_index} (worker 0 writes the run folder; this one writes nothing)"
