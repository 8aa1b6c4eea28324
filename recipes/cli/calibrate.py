"""`recipes calibrate`: temperature scaling of a run, fitted on its validation split."""

from __future__ import annotations

from .evaluate import add_model_argument

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes calibrate RUN [--dataset SRC] [--split S] [--out DIR]`."""
    p = subparsers.add_parser(
        "calibrate", help="temperature scaling fitted on the validation split",
        description="Fits one temperature on the validation split (minimum NLL) and writes "
        "RUN/calibrated/ (model.keras with the temperature before its softmax, recipe.json, "
        "calibration.json); `recipes evaluate RUN` then reports ECE before and after.",
    )
    add_model_argument(p)
    p.add_argument("--dataset", help="another data source (default: the run's)")
    p.add_argument("--data-dir", help="tensorflow-datasets data folder (for tfds:<name>)")
    p.add_argument("--split", default="validation", help="where to fit (default validation)")
    p.add_argument("--out", help="output folder (default: RUN/calibrated)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Calibrates, prints the temperature and the validation figures before and after."""
    from ..after import calibrate
    from ..after.common import SPLITS, load_run_data, open_model
    from ..validation import check_choice

    check_choice("split", args.split, SPLITS)
    source = open_model(args.run)
    data = load_run_data(source, args.dataset, data_dir=args.data_dir) if args.dataset else None
    model = calibrate(source, data, split=args.split, out=args.out)
    c = model.calibration
    print(f"temperature {c['temperature']:.4f} (fitted on {c['size']} {c['split']} images)")
    for when in ("before", "after"):
        m = c[when]
        print(f"{when:>6}: ECE {m['ece']:.4f}  NLL {m['nll']:.4f}  Brier {m['brier']:.4f}")
    where = args.out or (source.run.sub("calibrated").path if source.run else None)
    if where:
        print(f"written: {where}")
    return 0
