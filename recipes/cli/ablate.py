"""`recipes ablate`: run a study (Recipe changes against a baseline) with several seeds."""

from __future__ import annotations

from .args import add_recipe_arguments, recipe_from_args

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes ablate STUDY` (and `--list`)."""
    p = subparsers.add_parser(
        "ablate", help="what each trick is worth on your data: a study, several seeds",
        description="Trains every row of a study once per seed (a run folder per cell; re-run to "
        "resume) and writes results.csv, table.md (mean ± std, paired 95 %% interval against "
        "the baseline, verdict) and plot.png under OUT/STUDY. The split is fixed by --seed "
        "(default 0); seeds 0..N-1 vary weights, shuffling and augmentation.",
    )
    p.add_argument("study", nargs="?", metavar="STUDY", help="the study (see --list)")
    p.add_argument("--list", action="store_true", help="name the studies and their rows, then exit")
    p.add_argument("--seeds", type=int, default=3, help="seeds per row (default 3)")
    p.add_argument("--related", metavar="SRC",
                   help="related source the pretraining study pretrains on (e.g. idx:<mnist folder>)")
    p.add_argument("--out", default="ablations", help="folder (default: ablations); the study "
                   "writes under OUT/STUDY")
    add_recipe_arguments(p, exclude_groups=("fine-tuning",))
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Lists the studies, or runs one and prints the table."""
    from ..ablate import STUDIES, ablate, get_study

    if args.list:
        for spec in STUDIES.values():
            print(f"{spec.name:16s} {spec.summary} (baseline: {spec.baseline}; rows: "
                  f"{', '.join(spec.rows)})")
        return 0
    if not args.study:
        raise ValueError("ablate needs a STUDY (or --list); Received: none. Allowed: "
                         + ", ".join(STUDIES))
    get_study(args.study)  # an unknown name fails before the data is loaded
    recipe = recipe_from_args(args)
    result = ablate(args.study, recipe.dataset, seeds=args.seeds, out=args.out, recipe=recipe,
                    related=args.related, verbose=0)
    print((result.out / "table.md").read_text(), end="")
    print(f"results: {result.out / 'results.csv'}  plot: {result.out / 'plot.png'}")
    return 0
