"""`recipes fine-tune` and `recipes weights`, registered through the `recipes.cli` plugin hook."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .cli import add_recipe_arguments, default_out, recipe_from_args

__all__ = ["add_fine_tune_parser", "add_weights_parser", "weight_files"]

_POLICY_HELP = (
    "what phase 2 unfreezes: all | none | top:N | top:P%% | re:<regex on layer names> | a block "
    "name from the registry (conv5, block6, block_13, mixed9 ...: that block and all above it); "
    "default top:30%%"
)


def add_fine_tune_parser(subparsers):
    """Adds `recipes fine-tune` (head on a frozen pretrained backbone, then unfreeze)."""
    p = subparsers.add_parser(
        "fine-tune",
        help="transfer learning: train a new head, then unfreeze and fine-tune",
        description=(
            "Phase 1 trains a new head on the frozen pretrained backbone (--head-epochs at --lr); "
            "phase 2 unfreezes what --unfreeze selects and trains --epochs more at --fine-tune-lr. "
            "BatchNorm stays frozen in inference mode. One run folder, one history; re-run the "
            "same command to resume."
        ),
    )
    add_recipe_arguments(p)
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--head-epochs", type=int, help="phase-1 epochs, head only (default 2; 0 skips)")
    g.add_argument("--fine-tune-lr", dest="fine_tune_learning_rate", type=float,
                   help="phase-2 learning rate (default: --lr / 10)")
    g.add_argument("--unfreeze", help=_POLICY_HELP)
    g.add_argument("--layer-lr-decay", type=float,
                   help="discriminative LRs: block at distance d from the top gets lr * decay**d")
    g.add_argument("--gradual", action="store_true", default=None,
                   help="unfreeze block by block from the top, one block per epoch")
    p.set_defaults(func=_cmd_fine_tune)
    return p


_FINE_TUNE_ARGS = ("head_epochs", "fine_tune_learning_rate", "unfreeze", "layer_lr_decay", "gradual")


def _cmd_fine_tune(args):
    from .finetune import FINE_TUNE_DEFAULTS, fine_tune

    if isinstance(args.weights, str) and args.weights.lower() in ("none", "null"):
        raise ValueError(
            "fine-tune needs pretrained weights (imagenet or a file from save_backbone); "
            "Received: --weights none. Use `recipes train` to train from scratch."
        )
    recipe = recipe_from_args(args)
    if not args.recipe:
        # Flags not given fall back to the fine-tuning defaults rather than train's.
        defaults = {k: v for k, v in FINE_TUNE_DEFAULTS.items() if getattr(args, k, None) is None}
        recipe = recipe.replace(**defaults)
    changes = {k: getattr(args, k) for k in _FINE_TUNE_ARGS if getattr(args, k, None) is not None}
    recipe = recipe.replace(**changes)
    out = args.out or f"{default_out(recipe)}_finetune"
    data = recipe.dataset
    if args.data_dir:
        from .data import load_data

        data = load_data(
            recipe.dataset, batch_size=recipe.batch_size, validation_split=recipe.validation_split,
            test_split=recipe.test_split, seed=recipe.seed, data_dir=args.data_dir,
        )
    verbose = 1 if sys.stdout.isatty() else 2
    result = fine_tune(recipe.backbone, data, recipe=recipe, out=out, verbose=verbose)
    m = result.metrics

    def fmt(key):
        return f"{m[key]:.4f}" if key in m else "n/a"

    print(
        f"test accuracy: {fmt('test_accuracy')} (head only: {fmt('head_test_accuracy')})  "
        f"unfrozen layers: {m['unfrozen_layers']}  phase 2 from epoch {m['phase2_start_epoch'] + 1}  "
        f"run folder: {result.run_dir}"
    )
    return 0


def add_weights_parser(subparsers):
    """Adds `recipes weights` (ImageNet weight files: names, cached or not, where they go)."""
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
    p.set_defaults(func=_cmd_weights)
    return p


def _memo_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "keras-recipes" / "imagenet_weight_files.json"


def weight_files(backbones=None, *, alpha=None, image_size=None, progress=None):
    """The ImageNet weight file of each backbone and whether it is in the Keras cache.

    File names come from `recipes.imagenet_weights_file` (which builds the model once); they are
    remembered per Keras version in `~/.cache/keras-recipes/` (`$XDG_CACHE_HOME`), so only the
    first call is slow.

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

    from .registry import backbone_info, list_backbones, validate_alpha
    from .weights import imagenet_weights_file, keras_cache_dir

    names = [backbone_info(b).name for b in (backbones or list_backbones())]
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    version = keras.__version__
    memo.setdefault(version, {})
    cache = keras_cache_dir()
    rows, dirty = [], False
    for name in names:
        spec = backbone_info(name)
        a = validate_alpha(spec, alpha) if (alpha is not None and spec.alphas) else spec.default_alpha
        size = image_size or spec.default_size
        key = f"{name}|{a}|{size if spec.family in ('mobilenet', 'mobilenet_v2') else ''}"
        if key not in memo[version]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # MobileNetV3's "weights for 224 will be loaded"
                memo[version][key] = list(imagenet_weights_file(name, alpha=a, image_size=size))
            dirty = True
        fname, url = memo[version][key]
        path = cache / fname
        row = {
            "backbone": name, "file": fname, "url": url, "cached": path.is_file(),
            "bytes": path.stat().st_size if path.is_file() else None, "path": str(path),
        }
        rows.append(row)
        if progress is not None:
            progress(row)
    if dirty:
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            memo_file.write_text(json.dumps(memo, indent=1) + "\n")
        except OSError:
            pass  # remembering is an optimization only
    return rows


def _size(n):
    if n is None:
        return "-"
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _cmd_weights(args):
    from .weights import keras_cache_dir

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
