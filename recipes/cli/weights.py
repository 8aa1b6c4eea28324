"""`recipes weights`: ImageNet weight files per backbone, cached or not, and where missing ones go."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["add_parser", "run", "weight_files"]


def add_parser(subparsers):
    """Adds `recipes weights`."""
    p = subparsers.add_parser(
        "weights",
        help="ImageNet weight files: which are in the Keras cache and where missing ones go",
        description=(
            "For each backbone: the file Keras downloads for its ImageNet weights (no top), "
            "whether it is in the Keras cache, its size. Copy missing files into the cache folder "
            "shown (or pass --weights /path/to/file.h5). File names are worked out by asking "
            "keras.applications, which builds each model once; they are remembered afterwards."
        ),
    )
    p.add_argument("--backbone", action="append", help="only this backbone (repeatable)")
    p.add_argument("--alpha", type=float, help="MobileNet width multiplier (default 1.0)")
    p.add_argument("--image-size", type=int,
                   help="input size (MobileNet v1/v2 pick the file by size; default 224)")
    p.add_argument("--urls", action="store_true", help="also print each file's download URL")
    p.set_defaults(func=run)
    return p


def _memo_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "keras-recipes" / "imagenet_weight_files.json"


def weight_files(backbones=None, *, alpha=None, image_size=None, progress=None) -> list[dict]:
    """The ImageNet weight file of each backbone and whether it is in the Keras cache.

    File names come from `recipes.weights.imagenet_weights_file` (which builds the model once);
    they are remembered per Keras version in `~/.cache/keras-recipes/` (`$XDG_CACHE_HOME`), so
    only the first call is slow.

    Args:
        backbones: Registry names (default: all).
        alpha: Width multiplier for MobileNets (default: the family's default).
        image_size: Input size (default: each backbone's default size).
        progress: Optional callable called with each row as it is ready.

    Returns:
        A list of dicts with `backbone`, `file`, `url`, `cached` (bool), `bytes` (None if not
        cached), `path` (where the file is or should go).

    Raises:
        ValueError: An unknown backbone or an unsupported alpha.

    Example:
        >>> [r["file"] for r in weight_files(["resnet50"])]
        ['resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5']
    """
    import warnings

    import keras

    from .. import weights
    from ..registry import backbone_info, list_backbones, validate_alpha

    names = [backbone_info(b).name for b in (backbones or list_backbones())]
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    known = memo.setdefault(keras.__version__, {})
    cache = weights.keras_cache_dir()
    rows, dirty = [], False
    for name in names:
        spec = backbone_info(name)
        a = validate_alpha(spec, alpha) if (alpha is not None and spec.alphas) else spec.default_alpha
        size = image_size or spec.default_size
        key = f"{name}|{a}|{size if spec.family in ('mobilenet', 'mobilenet_v2') else ''}"
        if key not in known:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MobileNetV3's "weights for 224 will be loaded"
                known[key] = list(weights.imagenet_weights_file(name, alpha=a, image_size=size))
            dirty = True
        fname, url = known[key]
        path = cache / fname
        row = {
            "backbone": name, "file": fname, "url": url, "cached": path.is_file(),
            "bytes": path.stat().st_size if path.is_file() else None, "path": str(path),
        }
        rows.append(row)
        if progress is not None:
            progress(row)
    if dirty:
        from ..run import atomic_write_text

        try:
            atomic_write_text(memo_file, json.dumps(memo, indent=1) + "\n")
        except OSError:
            pass  # remembering is an optimization only
    return rows


def _size(n) -> str:
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def run(args) -> int:
    """Prints one row per backbone as it is worked out, then where missing files go."""
    from ..weights import keras_cache_dir

    width = 22

    def show(row):
        cached = "yes" if row["cached"] else "MISSING"
        line = f"{row['backbone']:<{width}} {cached:<8} {_size(row['bytes']):>9}  {row['file']}"
        if args.urls:
            line += f"  {row['url']}"
        print(line, flush=True)

    print(f"{'backbone':<{width}} {'cached':<8} {'size':>9}  file", flush=True)
    rows = weight_files(args.backbone, alpha=args.alpha, image_size=args.image_size, progress=show)
    cache = keras_cache_dir()
    missing = [r for r in rows if not r["cached"]]
    print(f"\nKeras cache folder: {cache}")
    if missing:
        print(
            f"{len(missing)} of {len(rows)} missing. On a machine with internet, download each "
            f"missing file (URLs: add --urls) and copy it into {cache} under the name shown; "
            "weights='imagenet' then loads it offline. Or pass a file: --weights /path/to/file.h5."
        )
    else:
        print(f"All {len(rows)} in the cache.")
    return 0
