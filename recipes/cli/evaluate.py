"""`recipes evaluate`: per-class report, confusion matrix, calibration and top losses of a run."""

from __future__ import annotations

__all__ = ["add_parser", "run", "add_model_argument"]


def add_model_argument(p):
    """The positional RUN argument every after-training command takes."""
    p.add_argument("run", metavar="RUN", help="run folder (or a .keras file)")


def add_parser(subparsers):
    """Adds `recipes evaluate RUN [--dataset SRC] [--split S] [--tta] [--out DIR]`."""
    p = subparsers.add_parser(
        "evaluate", help="per-class report, confusion matrix, calibration, top losses of a run",
        description="Evaluates a run on the split it held out (its recipe.json gives the data "
        "and splits): writes RUN/evaluation/report.json (scikit-learn's per-class precision/"
        "recall/F1, ECE, NLL, Brier), confusion.png, top_losses.png, reliability.png.",
    )
    add_model_argument(p)
    p.add_argument("--dataset", help="another data source (default: the run's)")
    p.add_argument("--data-dir", help="tensorflow-datasets data folder (for tfds:<name>)")
    p.add_argument("--split", default="test", help="test (default), validation or train")
    p.add_argument("--tta", action="store_true",
                   help="also evaluate with test-time augmentation (flips if the run trained "
                        "with flips)")
    p.add_argument("--out", help="output folder (default: RUN/evaluation)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Evaluates, prints the per-class table and where the files went."""
    from ..after import evaluate
    from ..after.common import SPLITS, load_run_data, open_model
    from ..validation import check_choice

    check_choice("split", args.split, SPLITS)
    source = open_model(args.run)
    data = load_run_data(source, args.dataset, data_dir=args.data_dir) if args.dataset else None
    report = evaluate(source, data,
                      split=args.split, tta=args.tta, out=args.out)
    print(report.table())
    if report.files:
        print(f"written: {report.files['report.json'].parent}")
    return 0
