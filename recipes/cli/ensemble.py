"""`recipes ensemble`: combine finished run folders into one model (average, vote or stack)."""

from __future__ import annotations

__all__ = ["add_parser", "run"]

#: Recipe fields that decide the split: members must agree on them, or the ensemble's test
#: images include some member's training images.
_SPLIT_FIELDS = ("dataset", "validation_split", "test_split", "seed")


def add_parser(subparsers):
    """Adds `recipes ensemble RUN_DIR RUN_DIR ...`."""
    p = subparsers.add_parser(
        "ensemble", help="combine run folders into one saveable model",
        description="Loads each run's model.keras, combines them (average: mean probability; "
        "vote: majority; stack: logistic regression fitted on the validation split) and writes "
        "OUT/model.keras and OUT/metrics.json with every member's and the ensemble's test "
        "accuracy. The data is reloaded from the first run's recipe.json.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished run folders (two or more)")
    p.add_argument("--method", default="average", help="average | vote | stack (default average)")
    p.add_argument("--weights", help="comma-separated weight per run (average and vote)")
    p.add_argument("--out", required=True, help="folder for model.keras and metrics.json")
    p.add_argument("--data-dir", help="tensorflow-datasets data folder (for tfds:<name>)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Checks the runs, builds the ensemble, writes and prints the accuracies."""
    from .. import validation as v
    from ..bagging import evaluate_model
    from ..ensemble import METHODS, ensemble
    from ..run import RunFolder
    from ..training import prepare_data

    v.check_choice("method", args.method, METHODS)
    if len(args.runs) < 2:
        raise ValueError(f"An ensemble needs at least 2 run folders; Received: {len(args.runs)}")
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise ValueError(f"--weights must be comma-separated numbers; Received: {args.weights!r}") from None
    runs = [RunFolder(r) for r in args.runs]
    for r in runs:
        if not r.finished:
            raise ValueError(f"Not a finished run folder (no model.keras/metrics.json); Received: {str(r.path)!r}")
    recipes_ = [r.recipe() for r in runs]
    first = recipes_[0]
    for r, rec in zip(runs[1:], recipes_[1:]):
        differ = {f: (getattr(first, f), getattr(rec, f)) for f in _SPLIT_FIELDS
                  if getattr(first, f) != getattr(rec, f)}
        if differ:
            raise ValueError(f"Runs were trained on different splits, so one's test images are "
                             f"another's training images; Received: {str(r.path)!r} differs from "
                             f"{str(runs[0].path)!r} in {differ} (use `recipes bag` for seed ensembles)")
    _, data = prepare_data(first, None, data_dir=args.data_dir)
    models = [r.load_model() for r in runs]
    members = [evaluate_model(m, data) for m in models]
    model = ensemble(models, args.method, weights=weights, data=data)
    metrics = {
        "method": args.method,
        "runs": [str(r.path) for r in runs],
        "member_test_accuracy": members,
        "test_accuracy": evaluate_model(model, data),
    }
    out = RunFolder(args.out)
    out.save_model(model)
    out.save_metrics(metrics)
    for r, acc in zip(runs, members):
        print(f"{r.path}: test accuracy {_fmt(acc)}")
    print(f"{args.method} of {len(runs)}: test accuracy {_fmt(metrics['test_accuracy'])}  "
          f"model: {out.model_path}")
    return 0


def _fmt(x):
    return "n/a" if x is None else f"{x:.4f}"
