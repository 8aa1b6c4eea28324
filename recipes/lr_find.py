"""`recipes.find_lr` and `recipes find-lr`: the LR range test on a recipe's model and data."""

from __future__ import annotations

__all__ = ["find_lr", "add_find_lr_parser"]


def find_lr(model, data, *, start=1e-7, end=10.0, steps=100, optimizer="adam", plot=None, **recipe_fields):
    """Runs the learning-rate range test (fastai `lr_find`) and restores the model afterwards.

    The LR grows exponentially per step on the real training data; the smoothed loss is recorded
    until it explodes; weights and optimizer state are then restored. See `callbacks.find_lr`.

    Args:
        model: A compiled `keras.Model`, an uncompiled one (compiled here with `optimizer`), or a
            backbone name (built with `recipe_fields`, e.g. `image_size=32`).
        data: A `Data` (its train split is used), a source for `load_data`, or a `tf.data` dataset.
        start: First LR (default 1e-7).
        end: Last LR (default 10).
        steps: Number of steps (default 100).
        optimizer: Optimizer name when the model is not compiled (default "adam").
        plot: Optional PNG path for the loss-vs-LR curve.
        **recipe_fields: Build options when `model` is a backbone name.

    Returns:
        A `callbacks.LRFinderResult`: `.suggestion` (LR at the smoothed-loss minimum / 10),
        `.suggestions` (minimum, valley, steep), `.lrs`, `.losses`, `.plot(path)`.

    Raises:
        ValueError: Bad range or steps, unknown backbone or optimizer.

    Example:
        >>> result = recipes.find_lr("mobilenet_v3_small", "digits", image_size=32)
        >>> recipes.train("mobilenet_v3_small", "digits", learning_rate=result.suggestion)
    """
    import keras

    import callbacks

    from .data import Data, load_data
    from .training import compile_classifier, make_optimizer

    if not isinstance(data, Data) and not hasattr(data, "element_spec"):
        data = load_data(data)
    dataset = data.train if isinstance(data, Data) else data
    if isinstance(model, str):
        if not isinstance(data, Data):
            raise ValueError("Building from a backbone name needs a Data (for classes and shapes)")
        from .builder import build_classifier

        model = build_classifier(model, data.num_classes, input_shape=data.input_shape, **recipe_fields)
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model or a backbone name; Received: {type(model).__name__}")
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        num_classes = model.output_shape[-1]
        compile_classifier(model, num_classes, optimizer=make_optimizer(optimizer, 1e-3))
    return callbacks.find_lr(model, dataset, start=start, end=end, steps=steps, plot=plot)


def _cmd_find_lr(args):
    from .cli import recipe_from_args
    from .data import load_data

    recipe = recipe_from_args(args)
    data = load_data(
        recipe.dataset, batch_size=recipe.batch_size, seed=recipe.seed, data_dir=args.data_dir
    )
    from .training import _augmentation_layer, _default_image_size

    fields = dict(recipe.build_kwargs(), image_size=_default_image_size(recipe, data.input_shape))
    if fields["augmentation"] is not None:
        fields["augmentation"] = _augmentation_layer(recipe)  # honours --no-flip and the seed
    result = find_lr(
        recipe.backbone, data, start=args.start, end=args.end, steps=args.steps,
        optimizer=recipe.optimizer, plot=args.plot, **fields,
    )
    for name, value in result.suggestions.items():
        print(f"{name:>8}: {value:.3g}")
    print(f"suggested learning rate: {result.suggestion:.3g}" + (f"  plot: {args.plot}" if args.plot else ""))
    return 0


def add_find_lr_parser(subparsers):
    """Registers `recipes find-lr`."""
    from .cli import add_recipe_arguments

    p = subparsers.add_parser("find-lr", help="LR range test: suggest a learning rate")
    add_recipe_arguments(p)
    p.add_argument("--start", type=float, default=1e-7)
    p.add_argument("--end", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--plot", default="lr_find.png", help="PNG of loss vs LR")
    p.set_defaults(func=_cmd_find_lr)
    return p
