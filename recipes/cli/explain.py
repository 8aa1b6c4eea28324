"""`recipes explain`: Grad-CAM heat maps of image files, one PNG per image."""

from __future__ import annotations

import sys

from .evaluate import add_model_argument

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes explain RUN IMAGE... [--class C] [--out DIR]`."""
    p = subparsers.add_parser(
        "explain", help="Grad-CAM heat maps over images (one PNG per image)",
        description="Writes one PNG per image: the image and its Grad-CAM overlay at the "
        "backbone's last feature map, titled with the class and its probability.",
    )
    add_model_argument(p)
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files or folders")
    p.add_argument("--class", dest="class_index",
                   help="class to explain, a name or an index (default: the predicted one)")
    p.add_argument("--out", help="output folder (default: RUN/explain)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Writes the PNGs, prints where, and counts the files that could not be read."""
    from ..after import explain

    result = explain(args.run, args.images, out=args.out, class_index=args.class_index)
    written = result["written"]
    print(f"wrote {len(written)} heat map(s) into {written[0].parent}")
    for path, message in result["errors"].items():
        print(f"skipped {path}: {message}", file=sys.stderr)
    return 0
