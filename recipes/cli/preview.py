"""`recipes augment-preview`: a PNG grid of training images next to augmented copies."""

from __future__ import annotations

from .args import add_recipe_arguments, data_from_args, explicit_fields, recipe_from_args

__all__ = ["add_parser", "run"]

#: The augmentation previewed when a recipe file sets none and the flags name none.
DEFAULT_AUGMENTATION = "medium"

_FIELDS = ("dataset", "augmentation", "flip", "seed", "validation_split", "test_split")


def add_parser(subparsers):
    """Adds `recipes augment-preview` (the Recipe's data and augmentation flags, the grid's size)."""
    p = subparsers.add_parser(
        "augment-preview",
        help="write a PNG grid of training images and augmented copies",
        description="Writes a PNG grid: each row an image from the training set, first the "
        "original, then augmented copies (default augmentation: the recipe's; "
        f"{DEFAULT_AUGMENTATION} for a recipe file without one).",
    )
    add_recipe_arguments(p, only=_FIELDS)
    g = p.add_argument_group("grid")
    g.add_argument("--out", default="augment_preview.png",
                   help="output PNG (default: augment_preview.png)")
    g.add_argument("--n", type=int, default=8, help="number of images (rows, default 8)")
    g.add_argument("--repeats", type=int, default=4, help="augmented copies per image (default 4)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Writes the grid, then prints where."""
    from .. import validation as v
    from ..preview import augment_preview, take_images

    v.check_int("n", args.n, 1)
    v.check_int("repeats", args.repeats, 1)
    recipe = recipe_from_args(args)
    if recipe.augmentation is None:
        if "augmentation" in explicit_fields(args):
            raise ValueError("Nothing to preview: --augmentation none builds no layer")
        recipe = recipe.replace(augmentation=DEFAULT_AUGMENTATION)
    layer = recipe.augmentation_layer()
    data = data_from_args(args, recipe)
    images = take_images(data.train_pipeline(recipe.seed), args.n)
    path = augment_preview(images, layer, args.out, n=len(images), repeats=args.repeats)
    print(f"Wrote {path}: {len(images)} {data.source} images x {args.repeats} augmented copies "
          f"({recipe.augmentation}, flip {'on' if recipe.flip else 'off'}, seed {recipe.seed})")
    return 0
