"""`recipes list`: the backbone table (default and minimum sizes, preprocessing, widths)."""

from __future__ import annotations

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes list`."""
    p = subparsers.add_parser("list", help="the backbone table")
    p.add_argument("--params", action="store_true", help="also count parameters (slower)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Prints one row per registry backbone."""
    from ..registry import backbone_info, list_backbones

    rows = []
    for name in list_backbones():
        spec = backbone_info(name)
        params = f"{spec.count_params() / 1e6:.1f}M" if args.params else "-"
        alphas = ",".join(f"{a:g}" for a in spec.alphas) or "-"
        rows.append((name, spec.default_size, spec.min_size, params, spec.preprocessing, alphas))
    header = ("backbone", "default", "min", "params", "preprocessing", "alphas")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    if not args.params:
        print("(add --params to count parameters; builds each backbone once)")
    return 0
