"""`recipes bench`: latency and throughput per backbone on this machine, optionally as CSV."""

from __future__ import annotations

__all__ = ["add_parser", "run"]

_DEFAULT_BACKBONES = "mobilenet_v3_small,mobilenet_v2,efficientnet_b0,resnet50"


def add_parser(subparsers):
    """Adds `recipes bench`."""
    p = subparsers.add_parser("bench", help="latency/throughput per backbone on this machine")
    p.add_argument("--backbones", default=_DEFAULT_BACKBONES,
                   help=f"comma-separated registry names (default: {_DEFAULT_BACKBONES})")
    p.add_argument("--image-size", type=int, help="default: each backbone's default size")
    p.add_argument("--alpha", type=float, help="MobileNet width multiplier")
    p.add_argument("--batch-size", type=int, default=32, help="throughput batch (default 32)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (default 10)")
    p.add_argument("--train", action="store_true", help="also time training steps")
    p.add_argument("--passes", type=int, default=1,
                   help="with --train: times each side trains, taking turns going first; the best "
                   "pass of each counts (default 1)")
    p.add_argument("--out", help="write the table as CSV")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Measures every backbone, prints the table (and writes the CSV)."""
    import csv
    import io

    from ..bench import benchmark, machine_description
    from ..run import atomic_write_text

    rows = benchmark(args.backbones, image_size=args.image_size, batch_size=args.batch_size,
                     repeats=args.repeats, train=args.train, alpha=args.alpha,
                     passes=args.passes)
    keys = list(rows[0])
    print(f"# {machine_description()}")
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(str(row[k]) for k in keys))
    if args.out:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        print(f"written: {atomic_write_text(args.out, text.getvalue())}")
    return 0
