"""Named recipes (`fast`, `accurate`, `small-data`, `fine-tune`) and the data-size-aware defaults.

A preset is a set of Recipe field changes over `Recipe()`, documented in `PRESET_DOCS` with what
it sets and why (BENCHMARKS.md has what each reached). `Recipe.preset(name)` applies one. A
Recipe whose `preset_name` is `"auto"` (the default) has its preset chosen when the data is known, by
`adapt_to_data`: `small-data` for at most `SMALL_DATA_PER_CLASS` training images per class, else
`fast` (`fine-tune` for pretrained weights). Only fields still at their default take a preset's
value, so what a user set always wins; the run prints what it chose and `recipe.json` records the
resolved recipe (`preset_name` then names the choice), so a run is redone exactly.
"""

from __future__ import annotations

import math

__all__ = [
    "PRESETS", "PRESET_DOCS", "SMALL_DATA_PER_CLASS", "AUTO", "choose_preset", "adapt_to_data",
    "resolve_steps", "check_preset_needs", "MIN_EPOCH_STEPS", "adapt_recipe",
]

#: The `preset` value that means "choose by the training split's size".
AUTO = "auto"

#: A step budget makes epochs of at least this many steps (see `resolve_steps`).
MIN_EPOCH_STEPS = 50

#: At most this many training images per class (on average) is small data.
SMALL_DATA_PER_CLASS = 100

# Augmentation for small and long runs: geometric and photometric, no flips (they change the
# meaning of digits, letters and scans; add `flip=True` and "flip" for photos).
_AUGMENT = "rotation:0.05,translation:0.1,zoom:0.1"

#: Named recipes: field changes over `Recipe()` (`Recipe.preset(name)` applies one).
PRESETS = {
    "fast": {},
    # Scripts and recipe.json files written before the presets say "default".
    "default": {},
    # No weight EMA: measured with Keras' EMA (0.999, BatchNorm statistics recomputed for the
    # averages), digits 0.972 against 0.994 without and MNIST 0.985 against 0.986 (BENCHMARKS.md).
    "accurate": {
        "epochs": 30, "augmentation": _AUGMENT, "flip": False, "label_smoothing": 0.1,
        "patience": None,
    },
    "small-data": {
        "train_steps": 1000, "batch_size": 32, "patience": None,
        "augmentation": _AUGMENT, "flip": False, "label_smoothing": 0.1, "linear_probe": True,
        "head_epochs": 0, "unfreeze": "all", "fine_tune_learning_rate": 1e-3,
    },
    # Two-phase transfer learning: 2 head epochs at 1e-3 (Adam on a pretrained backbone), then the
    # top 30 % at a tenth of it; no warmup (the head starts from a useful backbone).
    "fine-tune": {
        "weights": "imagenet", "head_epochs": 2, "epochs": 8, "warmup_epochs": 0,
        "unfreeze": "top:30%",
    },
}

#: What each preset is for and why it sets what it sets (shown by `recipes train --help`).
PRESET_DOCS = {
    "fast": "the Recipe() defaults: the quickest route to a good model on this hardware (8 epochs, "
            "warmup + cosine Adam, translation 0.1 inside the model and label smoothing 0.1, "
            "which cost no measurable time; issue 11's measured default)",
    "default": "the same as fast",
    "accurate": "a longer schedule (30 epochs, no early stopping: the cosine decay ends it), "
                "rotation/translation/zoom augmentation without flips, label smoothing 0.1; "
                "no weight EMA (--ema 0.999 measured no gain on MNIST and a loss on digits)",
    "small-data": "for at most ~100 labels per class: a budget of 1000 optimizer steps (batches "
                  "of 32) instead of an epoch count (8 epochs of 3 steps learn nothing), as "
                  "epochs of at least 50 steps (one of them warmup); no early stopping (a "
                  "20-image validation split is noise); the accurate preset's augmentation and "
                  "label smoothing; fine-tuning starts with a linear probe (a logistic "
                  "regression on the frozen features, written into the head) instead of head "
                  "epochs, then trains the whole backbone at 1e-3 (Adam): measured on 20 "
                  "MNIST digits per class, 0.79 with the top 30 % at 1e-4, 0.96 so",
    "fine-tune": "two-phase transfer learning from ImageNet weights: 2 head epochs on the frozen "
                 "backbone at 1e-3 (Adam), then the top 30 % of the backbone at a tenth of it "
                 "for 8 epochs, BatchNorm in inference mode",
}


def check_preset_needs(name: str, recipe) -> None:
    """Raises when a preset needs what the recipe lacks (fine-tune without weights).

    Raises:
        ValueError: `name` is "fine-tune" and `recipe.weights` is None.

    Example:
        >>> check_preset_needs("fine-tune", Recipe(weights="imagenet"))  # passes
    """
    if name == "fine-tune" and recipe.weights is None:
        raise ValueError(
            "The fine-tune preset needs pretrained weights: weights='imagenet' or a weights file "
            "(recipes.save_backbone); Received: weights=None. Train from scratch with the fast, "
            "accurate or small-data preset."
        )


def images_per_class(data) -> float:
    """Mean training images per class of a `Data` (its train size when counts are missing)."""
    counts = list(getattr(data, "class_counts", None) or [])
    if counts:
        return sum(counts) / len(counts)
    return data.sizes.get("train", 0) / max(1, data.num_classes)


def choose_preset(recipe, data) -> str:
    """The preset `adapt_to_data` picks: small-data for at most `SMALL_DATA_PER_CLASS` training
    images per class, else fine-tune for pretrained weights, else fast.

    Returns:
        The preset's name.

    Example:
        >>> choose_preset(Recipe(), recipes.load_data("digits"))
        'fast'
    """
    if images_per_class(data) <= SMALL_DATA_PER_CLASS:
        return "small-data"
    return "fine-tune" if recipe.pretrained else "fast"


def adapt_to_data(recipe, data, *, base=None, explicit=(), built=False):
    """Resolves a recipe's `preset="auto"` for `data`, then its step budget.

    Fields that differ from `base` (default `Recipe()`), or are named in `explicit`, were chosen
    by the user and are kept; the others take the chosen preset's values.

    Args:
        recipe: A `Recipe`.
        data: The `Data` it trains on.
        base: The recipe the call started from (default `Recipe()`; `fine_tune`: its preset).
        explicit: Field names given on purpose, even when equal to the base's value.
        built: True when training a built model: the preset's build options (augmentation in
            the model, dropout, ...) are left out, since they cannot change it.

    Returns:
        `(recipe, note)`: the resolved recipe and a line saying what was chosen ("" when
        nothing was: a named preset without a step budget).

    Raises:
        ValueError: A preset field that the recipe's other fields reject.

    Example:
        >>> recipe, note = adapt_to_data(Recipe(), recipes.load_data((x[:200], y[:200])))
        >>> recipe.preset_name, recipe.epochs
        ('small-data', 167)
    """
    from .config import Recipe

    note = ""
    if recipe.preset_name == AUTO:
        base = base if base is not None else Recipe()
        name = choose_preset(recipe, data)
        chosen = set(explicit) | {k for k in PRESETS[name] if getattr(recipe, k) != getattr(base, k)}
        if "epochs" in explicit or recipe.epochs != base.epochs:
            chosen.add("train_steps")  # an epoch count chosen on purpose replaces a step budget
        if built:
            from .config import BUILD_FIELDS

            chosen |= set(BUILD_FIELDS)
        changes = {k: val for k, val in PRESETS[name].items() if k not in chosen}
        recipe = recipe.replace(**changes, preset_name=name)
        note = (f"{images_per_class(data):.0f} training images per class: preset {name}"
                + (f" ({', '.join(f'{k}={val}' for k, val in changes.items())})" if changes else ""))
    recipe, steps_note = resolve_steps(recipe, data)
    return recipe, "; ".join(t for t in (note, steps_note) if t)


def resolve_steps(recipe, data):
    """`epochs` (and `epoch_passes`) from the recipe's `train_steps` budget and the data size.

    An epoch of fewer than `MIN_EPOCH_STEPS` batches becomes several passes over the training
    split (the per-epoch validation and callbacks then cost little next to the steps), unless
    `epoch_passes` was set.

    Returns:
        `(recipe, note)`; the recipe unchanged (and note "") without a budget.

    Example:
        >>> resolve_steps(Recipe(train_steps=100, batch_size=32), data)[0].epochs  # 320 images
        2
        (10 batches, 5 passes make an epoch of 50 steps)
    """
    if recipe.train_steps is None:
        return recipe, ""
    batches = max(1, data.sizes.get("train", 0) // recipe.batch_size)  # whole batches
    passes = recipe.epoch_passes
    if passes == 1 and batches < MIN_EPOCH_STEPS:
        passes = math.ceil(MIN_EPOCH_STEPS / batches)
    epochs = max(1, math.ceil(recipe.train_steps / (batches * passes)))
    recipe = recipe.replace(epochs=epochs, train_steps=recipe.train_steps, epoch_passes=passes)
    each = f"{batches * passes} steps ({passes} passes)" if passes > 1 else f"{batches} steps"
    return recipe, (f"{recipe.train_steps} steps = {epochs} epochs of {each}, "
                    f"batches of {recipe.batch_size}")


def adapt_recipe(recipe, data, *, base=None, explicit=(), built=False,
                 verbose="auto"):
    """`recipes.presets.adapt_to_data`, printing what it chose when that changed the recipe.

    Args:
        recipe: The call's recipe (`preset_name="auto"`: the preset is chosen for `data`).
        data: The loaded `Data`.
        base: The recipe the call started from (default `Recipe()`).
        explicit: Fields passed on purpose (kept even at their default values).
        built: Training a built model (the preset's build options are left out).
        verbose: Keras verbosity; 0 prints nothing.

    Returns:
        The resolved recipe (what `recipe.json` records).

    Raises:
        ValueError: A preset field that the recipe's other fields reject.

    Example:
        >>> recipe = adapt_recipe(Recipe(), data)  # prints "recipes: 16 training images ..."
    """
    resolved, note = adapt_to_data(recipe, data, base=base, explicit=explicit, built=built)
    if note and resolved != recipe and verbose != 0:
        print(f"recipes: {note}", flush=True)
    return resolved
