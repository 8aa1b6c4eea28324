"""`recipes.find_lr`: the LR range test (`callbacks.find_lr`) on a recipe's model and data."""

from __future__ import annotations

__all__ = ["find_lr"]


def find_lr(
    model=None,
    data=None,
    *,
    start=1e-7,
    end=10.0,
    steps=100,
    smoothing=0.98,
    diverge=4.0,
    plot=None,
    optimizer=None,
    recipe=None,
    **fields,
):
    """Runs the learning-rate range test (fastai `lr_find`) and restores the model afterwards.

    A superset of `callbacks.find_lr`, which it delegates to: the same keyword arguments, plus
    what it takes to get there from a recipe (a backbone name built with the recipe's options, a
    data source loaded with its splits, an uncompiled model compiled with its optimizer). The LR
    grows exponentially per step on the real training data; the smoothed loss is recorded until
    it explodes; weights and optimizer state are then restored.

    Args:
        model: A compiled `keras.Model`, an uncompiled one (compiled here with the recipe's
            optimizer), a backbone name, or None (default: the recipe's backbone), built with
            the recipe's options at `recipe.image_size_for(data.input_shape)`.
        data: A `Data` (its training pipeline is used), a source for `load_data` (loaded with the
            recipe's batch size, splits and seed), None (default: the recipe's dataset), or a
            `tf.data` dataset of `(x, y)` batches (with a built model only).
        start: First LR (default 1e-7).
        end: Last LR (default 10).
        steps: Number of steps (default 100).
        smoothing: Loss smoothing factor in [0, 1) (default 0.98).
        diverge: Stop when the smoothed loss exceeds `diverge` times its minimum (default 4).
        plot: Optional PNG path for the loss-vs-LR curve.
        optimizer: Optimizer name when the model is not compiled (default: the recipe's, adam).
        recipe: A `Recipe` to start from (default `Recipe()`).
        **fields: Other `Recipe` fields (`image_size=32`, `alpha=0.25`, `weights=...`,
            `batch_size=...`); build options only with a backbone name.

    Returns:
        A `callbacks.LRFinderResult`: `.suggestion` (LR at the smoothed-loss minimum / 10),
        `.suggestions` (minimum, valley, steep), `.lrs`, `.losses`, `.plot(path)`.

    Raises:
        ValueError: A bad range, steps, smoothing or divergence factor, an unknown field,
            backbone or optimizer, build options with a built model, a `tf.data` dataset
            without a built model (all before any model is built), or images whose shape the
            built model does not take (e.g. grayscale data into a 3-channel model).

    Example:
        >>> result = recipes.find_lr("mobilenet_v3_small", "digits", image_size=32, steps=50)
        >>> recipes.train("mobilenet_v3_small", "digits", learning_rate=result.suggestion)
    """
    import keras

    import callbacks

    from .training import (
        build_from_recipe,
        compile_classifier,
        make_optimizer,
        merge_overrides,
        prepare_data,
    )

    # Constructing the finder checks the range arguments before anything is loaded or built.
    callbacks.LRFinder(start=start, end=end, steps=steps, smoothing=smoothing, diverge=diverge)
    recipe = merge_overrides(model, recipe, {"optimizer": optimizer}, fields)
    if hasattr(data, "element_spec"):
        if not isinstance(model, keras.Model):
            raise ValueError(
                "Building from a backbone name needs a Data or a source (for classes and shapes); "
                "Received: data=a tf.data dataset"
            )
        dataset = data
    else:
        recipe, data = prepare_data(recipe, data, batch_size_given="batch_size" in fields)
        dataset = data.train_pipeline(recipe.seed)
    if not isinstance(model, keras.Model):
        keras.utils.set_random_seed(recipe.seed)
        model = build_from_recipe(recipe, data)
    else:
        from .validation import check_model_input

        image_spec = dataset.element_spec[0] if isinstance(dataset.element_spec, tuple) else None
        if image_spec is not None and image_spec.shape.rank:
            check_model_input(model, tuple(image_spec.shape)[1:])
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        opt = make_optimizer(recipe.optimizer, recipe.peak_learning_rate,
                             weight_decay=recipe.weight_decay, momentum=recipe.momentum)
        compile_classifier(model, model.output_shape[-1], optimizer=opt,
                           label_smoothing=recipe.label_smoothing)
    return callbacks.find_lr(model, dataset, start=start, end=end, steps=steps,
                             smoothing=smoothing, diverge=diverge, plot=plot)
