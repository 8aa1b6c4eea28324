"""The `recipes` command line: list, train, and the subcommands other modules register."""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser", "add_recipe_arguments", "recipe_from_args"]

# Modules that add subcommands through an `add_<name>_parser(subparsers)` function, imported
# lazily so `recipes --help` stays fast and a missing optional piece cannot break the rest.
_PLUGINS = (
    ("recipes.preview", "add_preview_parser"),
    ("recipes.finetune_cli", "add_fine_tune_parser"),
    ("recipes.finetune_cli", "add_weights_parser"),
    ("recipes.lr_find", "add_find_lr_parser"),
    ("recipes.tuning_cli", "add_tune_parser"),
    ("recipes.bench", "add_bench_parser"),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, no traceback
        self.exit(2, f"{self.prog}: error: {message}\n")


def add_recipe_arguments(parser, *, training=True):
    """Adds the arguments shared by train, fine-tune and tune (all default to the Recipe's)."""
    g = parser.add_argument_group("model and data")
    g.add_argument("--backbone", help="registry name (see `recipes list`); default: mobilenet_v3_small")
    g.add_argument("--dataset", help="digits | a folder | idx:<folder> | tfds:<name>; default: digits")
    g.add_argument("--data-dir", help="tensorflow-datasets data folder (for tfds:<name>)")
    g.add_argument("--image-size", type=int, help="side the backbone sees")
    g.add_argument("--alpha", type=float, help="MobileNet width multiplier")
    g.add_argument("--weights", help="none | imagenet | path to a weights file")
    g.add_argument("--dropout", type=float)
    g.add_argument("--l2", type=float)
    g.add_argument("--augment", dest="augmentation",
                   help="light | medium | heavy | randaugment | 'rotation:0.1,zoom:0.2'")
    g.add_argument("--augment-placement", choices=("model", "data"))
    g.add_argument("--no-flip", dest="flip", action="store_const", const=False,
                   help="no flips in augmentation (digits, text)")
    if not training:
        return parser
    t = parser.add_argument_group("training")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", dest="learning_rate", type=float, help="peak learning rate")
    t.add_argument("--optimizer", help="sgd | adam | adamw | rmsprop | adagrad | nadam")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--schedule",
                   help="step | exponential | time | power | cosine | linear | onecycle | constant")
    t.add_argument("--warmup-epochs", type=int)
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--mixup", type=float, help="MixUp Beta alpha (0: off)")
    t.add_argument("--cutmix", type=float, help="CutMix Beta alpha (0: off)")
    t.add_argument("--patience", type=int, help="early-stopping patience in epochs (default 5; 0: off)")
    t.add_argument("--seed", type=int)
    t.add_argument("--recipe", help="start from a recipe.json (e.g. an earlier run's)")
    t.add_argument("--out", help="run folder (default: runs/<dataset>_<backbone>); re-run to resume")
    return parser


_ARG_TO_FIELD = (
    "backbone", "dataset", "image_size", "alpha", "weights", "dropout", "l2", "augmentation",
    "augment_placement", "flip", "epochs", "batch_size", "learning_rate", "optimizer", "weight_decay",
    "schedule", "warmup_epochs", "label_smoothing", "mixup", "cutmix", "patience", "seed",
)


def recipe_from_args(args):
    """Turns parsed arguments into a Recipe (explicit flags override `--recipe` and defaults)."""
    from pathlib import Path

    from .config import Recipe

    if getattr(args, "recipe", None) and not Path(args.recipe).is_file():
        raise ValueError(f"--recipe file not found; Received: {args.recipe!r}")
    recipe = Recipe.load(args.recipe) if getattr(args, "recipe", None) else Recipe()
    changes = {}
    for name in _ARG_TO_FIELD:
        value = getattr(args, name, None)
        if value is None:  # not given on the command line
            continue
        if isinstance(value, str) and value.lower() in ("none", "null"):
            value = None  # `--schedule none`, `--weights none`, `--augment none`
        changes[name] = value
    return recipe.replace(**changes)


def default_out(recipe) -> str:
    """`runs/<dataset>_<backbone>` with the dataset reduced to a file-name-safe tag."""
    import re

    tag = re.sub(r"[^A-Za-z0-9]+", "_", str(recipe.dataset).split("/")[-1] or "data").strip("_")
    return f"runs/{tag or 'data'}_{recipe.backbone}"


def _cmd_list(args):
    from .registry import backbone_info, list_backbones

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


def _cmd_train(args):
    from .training import train

    recipe = recipe_from_args(args)
    out = args.out or default_out(recipe)
    data = recipe.dataset
    if args.data_dir:
        from .data import load_data

        data = load_data(
            recipe.dataset, batch_size=recipe.batch_size, validation_split=recipe.validation_split,
            test_split=recipe.test_split, seed=recipe.seed, data_dir=args.data_dir,
        )
    # A progress bar on a terminal; one line per epoch in logs (CI, nohup).
    verbose = 1 if sys.stdout.isatty() else 2
    result = train(recipe.backbone, data, recipe=recipe, out=out, verbose=verbose)
    acc = result.metrics.get("test_accuracy")
    acc_text = f"{acc:.4f}" if acc is not None else "n/a (no test split)"
    print(f"test accuracy: {acc_text}  run folder: {result.run_dir}")
    return 0


def build_parser():
    """The argparse parser for `recipes` with every available subcommand."""
    parser = _Parser(
        prog="recipes",
        description="Keras image-classification recipes: build, train, fine-tune, tune, measure.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("list", help="the backbone table")
    p.add_argument("--params", action="store_true", help="also count parameters (slower)")
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("train", help="train a classifier (bare: mobilenet_v3_small on digits, offline)")
    add_recipe_arguments(p)
    p.set_defaults(func=_cmd_train)
    for module, function in _PLUGINS:
        try:
            add = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError):
            continue
        add(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the `recipes` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .weights import WeightsUnavailableError

    try:
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"recipes {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except WeightsUnavailableError as exc:
        print(f"recipes {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the last finished epoch",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
