"""`recipes predict`: class probabilities for image files and folders, as CSV."""

from __future__ import annotations

import sys

from .evaluate import add_model_argument

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes predict RUN PATH... [--top-k K] [--out preds.csv] [--batch-size N]`."""
    p = subparsers.add_parser(
        "predict", help="predict image files or folders (CSV: path, label, probability)",
        description="Predicts image files and folders (recursive), streamed in batches; any size "
        "and channel count is converted to what the model takes. Unreadable files get a row "
        "with an error and are counted at the end.",
    )
    add_model_argument(p)
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=1, help="classes per image (default 1)")
    p.add_argument("--out", help="CSV file (default: print the CSV)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Predicts, writes (or prints) the CSV, then counts the files that could not be read."""
    from ..after import predict

    preds = predict(args.run, args.paths, top_k=args.top_k, batch_size=args.batch_size,
                    out=args.out)
    if args.out is None:
        import csv

        rows = preds.rows(args.top_k)
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    ok = len(preds) - len(preds.errors)
    where = f" into {args.out}" if args.out else ""
    print(f"predicted {ok} image(s){where}; {len(preds.errors)} unreadable",
          file=sys.stderr if args.out is None else sys.stdout)
    return 0
