"""`fine_tune`: a new head on the frozen backbone, then unfreeze and keep training.

Layers, as in fastai (`fine_tune` on `fit_one_cycle` on `fit`): `fine_tune` is two `recipes.train`
calls on one model, and `train` is built on `keras.Model.fit`. Phase 1 trains the head with the
backbone frozen; phase 2 makes the layers an unfreeze policy selects trainable (`policy`) and
trains at a lower rate, optionally with layer-wise rates (`layerwise`) and gradual unfreezing
(`callbacks.GradualUnfreeze`). BatchNormalization stays frozen and in inference mode throughout.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

from ..config import Recipe
from ..distribute import connect, local_only
from ..presets import AUTO
from ..run import RunFolder, RunFolderMismatch
from ..training import (
    Result,
    adapt_recipe,
    build_from_recipe,
    merge_overrides,
    prepare_data,
    record_skipped,
    train,
)
from .layerwise import LayerwiseLR
from .policy import backbone_of, gradual_schedule, select_layers, set_trainable

__all__ = ["fine_tune"]

PHASE1, PHASE2 = "phase1", "phase2"


def fine_tune(
    model_or_backbone=None,
    data=None,
    *,
    weights=None,
    head_epochs=None,
    epochs=None,
    learning_rate=None,
    fine_tune_learning_rate=None,
    unfreeze=None,
    layer_lr_decay=None,
    gradual=None,
    callbacks=(),
    out=None,
    recipe=None,
    verbose="auto",
    strategy=None,
    workers=None,
    worker_index=None,
    overwrite=False,
    **fields,
) -> Result:
    """Two-phase transfer learning: train a new head on the frozen backbone, then fine-tune.

    Phase 1 trains the head for `head_epochs` at `recipe.peak_learning_rate` with the backbone
    frozen (no warmup). Phase 2 unfreezes the layers `unfreeze` selects and trains `epochs` more
    epochs at `recipe.phase2_learning_rate` (a fresh schedule and optimizer state; `warmup_epochs`
    applies to phase 2 only). Both phases are `recipes.train` calls on the same model.

    Any `Recipe` field can be passed as a keyword (`schedule="cosine"`, `optimizer="adamw"`,
    `batch_size=32`, `augmentation=None`, `patience=None`, ...); keywords are explicit, None
    included. Named parameters left at None, and unspecified fields, come from `recipe`, or from
    `Recipe.preset("fine-tune")` when no recipe is given.

    With `out`, the run folder holds, for the whole run: `model.keras`, `recipe.json`,
    `history.csv` (both phases, one row per epoch), `metrics.json` (with `phase2_start_epoch`),
    `curves.png` (a mark where phase 2 starts); and `phase1/`, `phase2/` with each phase's own
    records. Re-running the same call resumes: a finished phase 1 is not repeated and phase 2
    resumes from its last finished epoch; a finished earlier run is redone; an earlier run with
    another recipe is refused unless `overwrite=True`. The folder is locked while the run trains.

    Args:
        model_or_backbone: A registry name (default: the recipe's backbone), built with `weights`
            and a frozen backbone; or a classifier from `build_classifier` (it keeps its own
            weights, and the recipe records `weights=None`).
        data: A `Data` or a source for `load_data` (default: the recipe's dataset).
        weights: `"imagenet"` (Keras' download cache) or a file from `recipes.save_backbone`
            (default: the recipe's weights, else `"imagenet"`); only with a backbone name.
        head_epochs: Phase-1 epochs (preset: 2; 0 skips phase 1).
        epochs: Phase-2 epochs (preset: 8).
        learning_rate: Phase-1 (head) rate (default: `recipe.peak_learning_rate`, 1e-3 for Adam
            on pretrained weights).
        fine_tune_learning_rate: Phase-2 rate (default: `recipe.phase2_learning_rate`, a tenth
            of the head's).
        unfreeze: Unfreeze policy for phase 2 (preset: `"top:30%"`), see
            `recipes.unfreeze_policy_layers`.
        layer_lr_decay: None (one rate, default) or a decay in (0, 1]: a block at distance `d`
            from the top trains at `lr * decay**d`, through a `LayerwiseOptimizer` saved with the
            model.
        gradual: True unfreezes the selected layers block by block from the top, one block per
            phase-2 epoch (spread out when there are more blocks than epochs) (default False).
        callbacks: Extra Keras callbacks, used in both phases (default none).
        out: Run folder (default None: nothing written).
        strategy: A `tf.distribute` strategy, passed to `train` (default: as `train`).
        recipe: A `Recipe` to start from (e.g. `Recipe.load("run/recipe.json")`).
        verbose: Keras `fit` verbosity (default "auto").
        workers: Train on several machines (default None): every worker's `"host:port"`, as
            for `recipes.train` (JAX backend; worker 0 writes `out`, the others nothing).
        worker_index: This worker's position in `workers`.
        overwrite: Replace an earlier run in `out` that used another recipe (default False:
            refused, the differing fields listed).
        **fields: Other `Recipe` fields.

    Returns:
        A `Result`: the fine-tuned model, the merged history, phase-2 test metrics plus `epochs`
        (total), `head_epochs`, `phase2_start_epoch` (0-based index of phase 2's first epoch),
        `head_test_accuracy`, `unfrozen_layers`, `train_seconds`; the run folder; the recipe.

    Raises:
        ValueError: Any bad argument, before training starts: bad fields (from `Recipe`),
            `weights` with a built model, an unknown unfreeze block (the backbone's blocks
            listed), a policy that selects nothing with `gradual`, `layer_lr_decay` with float16.
        WeightsUnavailableError: `"imagenet"` offline and not cached (before any training).
        recipes.run.RunFolderMismatch: (a ValueError) `out` holds a run with another recipe.
        recipes.run.RunFolderInUse: Another live process is training into `out`.
        TrainingDiverged: The loss became NaN or infinite in either phase.

    Example:
        >>> result = recipes.fine_tune("efficientnet_b0", "flowers/", head_epochs=2, epochs=5,
        ...                            unfreeze="block6", layer_lr_decay=0.8, out="runs/flowers")
        >>> result.metrics["test_accuracy"], result.metrics["phase2_start_epoch"]
    """
    named = dict(weights=weights, head_epochs=head_epochs, epochs=epochs,
                 learning_rate=learning_rate, fine_tune_learning_rate=fine_tune_learning_rate,
                 unfreeze=unfreeze, layer_lr_decay=layer_lr_decay, gradual=gradual)
    base_recipe = recipe
    recipe = _fine_tune_recipe(model_or_backbone, recipe, fields, named)
    # Several workers: joined before the model is built, so that its variables are replicated.
    cluster = connect(workers, worker_index)  # None on one machine
    distributed = dict(workers=workers, worker_index=worker_index) if cluster is not None else {}
    if cluster is not None and not cluster.is_chief:
        out = None  # worker 0 writes the run folder
    recipe, data = prepare_data(recipe, data, batch_size_given="batch_size" in fields)
    explicit = set(fields) | {k for k, val in named.items() if val is not None}
    recipe = adapt_recipe(recipe, data, explicit=explicit, verbose=verbose,
                          built=isinstance(model_or_backbone, keras.Model), base=Recipe.preset("fine-tune") if base_recipe is None else None)
    recipe, model = _model(model_or_backbone, recipe, data)
    backbone = backbone_of(model)
    selected = select_layers(backbone, recipe.unfreeze)
    _check_against_model(recipe, model, selected, cluster)
    run = RunFolder(out) if out is not None else None
    with run.lock() if run is not None else contextlib.nullcontext():
        return _fine_tune_locked(model, data, recipe, run, cluster, distributed, backbone, selected,
                                 callbacks, strategy, verbose, overwrite)


def _fine_tune_locked(model, data, recipe, run, cluster, distributed, backbone, selected,
                      callbacks, strategy, verbose, overwrite) -> Result:
    """`fine_tune` once the run folder (if any) is locked: both phases, then the folder."""
    record_skipped(run, data)
    reuse_phase1 = _start_run(run, recipe, overwrite) if run is not None else False
    if cluster is not None:  # worker 0's run folder decides for every worker
        reuse_phase1 = bool(cluster.broadcast(np.array([reuse_phase1], np.int32))[0])
    phase1, phase2 = (run.sub(PHASE1), run.sub(PHASE2)) if run is not None else (None, None)

    # Phase 1: the new head on the frozen backbone (or the finished phase 1 of this run).
    set_trainable(model, backbone, set())
    head = Result(model, {}, {}, None, recipe)
    probe = _linear_probe(model, data, recipe, verbose) if recipe.linear_probe else None
    if recipe.head_epochs > 0 and reuse_phase1:
        _reuse_phase1(model, phase1, cluster)
        if phase1 is not None:  # None on workers other than 0
            head = Result(model, phase1.history(), phase1.metrics(), phase1.path, recipe)
    elif recipe.head_epochs > 0:
        head = train(
            model, data, recipe=recipe.replace(epochs=recipe.head_epochs, warmup_epochs=0),
            callbacks=callbacks, out=phase1, strategy=strategy, verbose=verbose, **distributed,
        )

    # Phase 2: unfreeze, lower learning rate, continue.
    tuned = train(
        model, data, recipe=recipe.replace(learning_rate=recipe.phase2_learning_rate),
        callbacks=[*callbacks, *_phase2_callbacks(recipe, model, backbone, selected, verbose)],
        out=phase2, strategy=strategy, verbose=verbose, **distributed,
    )
    with local_only() if run is not None and cluster is not None else contextlib.nullcontext():
        return _finish(run, model, recipe, head, tuned, unfrozen=len(selected), probe=probe)


def _linear_probe(model, data, recipe, verbose):
    """Phase 0: the head fitted by `linear_probe` on the frozen features. Returns its metrics."""
    from .probe import linear_probe

    return linear_probe(model, data, seed=recipe.seed, verbose=verbose != 0)


def _reuse_phase1(model, phase1, cluster):
    """Sets the finished phase 1's weights; on several workers, worker 0's on every worker."""
    if cluster is None:
        model.set_weights(phase1.load_model(compile=False).get_weights())
        return
    weights = None
    if cluster.is_chief:
        with local_only():  # loading creates variables: outside the distribution
            weights = phase1.load_model(compile=False).get_weights()
    cluster.set_weights_from_chief(model, weights)  # every worker: assigning is collective


def _fine_tune_recipe(model_or_backbone, recipe, fields, named) -> Recipe:
    """`merge_overrides` over the fine-tune preset, with the weights rules of `fine_tune`."""
    built = isinstance(model_or_backbone, keras.Model)
    if built and named["weights"] is not None:
        raise ValueError(
            "weights only applies when fine-tuning from a backbone name; a built model keeps "
            f"its own weights; Received: weights={named['weights']!r}"
        )
    # Without a recipe: the fine-tune preset, its fields adapted to the data size (adapt_recipe).
    base = Recipe.preset("fine-tune").replace(preset_name=AUTO)
    merged = merge_overrides(model_or_backbone, recipe, named, fields, base=base)
    if built and recipe is None:
        # The model brings its own weights: record none, but keep the pretrained default rate
        # (`peak_learning_rate` of the preset, which has weights) rather than the from-scratch
        # one that weights=None would give.
        return merged.replace(weights=None, learning_rate=merged.peak_learning_rate)
    if not built and merged.weights is None:
        return merged.replace(weights="imagenet")  # fine-tuning a name means pretrained weights
    return merged


def _model(model_or_backbone, recipe, data):
    """`(recipe, model)`: a built model as is, else the recipe's, built with a frozen backbone."""
    if isinstance(model_or_backbone, keras.Model):
        return recipe, model_or_backbone
    recipe = recipe.replace(image_size=recipe.image_size_for(data.input_shape))
    keras.utils.set_random_seed(recipe.seed)
    # Raises WeightsUnavailableError / ValueError for unusable weights: before any training.
    return recipe, build_from_recipe(recipe, data, trainable_backbone=False)


def _finish(run, model, recipe, head: Result, tuned: Result, *, unfrozen: int, probe=None) -> Result:
    """One history and one set of metrics for both phases; the run folder written once."""
    n1 = _length(head.history)
    history = _merge_history(head.history, tuned.history)
    seconds1 = float(head.metrics.get("train_seconds", 0.0))
    seconds2 = float(tuned.metrics.get("train_seconds", 0.0))
    metrics = dict(tuned.metrics)
    metrics.update(
        epochs=_length(history), head_epochs=n1, phase2_start_epoch=n1, unfrozen_layers=unfrozen,
        head_train_seconds=round(seconds1, 1), fine_tune_train_seconds=seconds2,
        train_seconds=round(seconds1 + seconds2, 1),
    )
    if "test_accuracy" in head.metrics:
        metrics["head_test_accuracy"] = head.metrics["test_accuracy"]
    if probe is not None:
        metrics["linear_probe"] = probe
    if run is not None:
        run.finish(model, recipe, metrics, history, marks={n1: "fine-tuning starts"} if n1 else None)
        for name in (PHASE1, PHASE2):
            run.sub(name).clear(RunFolder.MODEL)  # duplicates of the head-only and final models
    return Result(model=model, history=history, metrics=metrics,
                  run_dir=run.path if run is not None else None, recipe=recipe)


def _check_against_model(recipe, model, selected, cluster=None):
    """The checks that need the built model (the Recipe checked the rest at construction)."""
    if recipe.layer_lr_decay is not None and "float16" in str(getattr(model.dtype_policy, "name", "")):
        raise ValueError(
            "layer_lr_decay is not supported with float16 mixed precision (Keras wraps the "
            "optimizer in a LossScaleOptimizer, which MultiOptimizer cannot hold); use "
            f"bfloat16 or float32, or drop layer_lr_decay; Received: layer_lr_decay={recipe.layer_lr_decay}"
        )
    if recipe.linear_probe and cluster is not None:
        raise ValueError(
            "linear_probe runs on one machine (scikit-learn fits the head on worker 0's "
            "features); with several workers pass linear_probe=False (CLI: --no-linear-probe); "
            "Received: linear_probe=True with workers"
        )
    if recipe.gradual and not selected:
        raise ValueError(
            "gradual=True needs an unfreeze policy that selects layers; "
            f"Received: unfreeze={recipe.unfreeze!r}"
        )


def _phase2_callbacks(recipe, model, backbone, selected, verbose):
    """Sets phase 2's trainable layers; returns the gradual and layer-wise LR callbacks."""
    set_trainable(model, backbone, set(selected))
    variables = list(model.trainable_variables)  # everything phase 2 will ever train
    extra = []
    if recipe.gradual:
        from callbacks import GradualUnfreeze

        set_trainable(model, backbone, set())  # GradualUnfreeze unfreezes block by block
        schedule = gradual_schedule(backbone, set(selected), recipe.epochs)
        extra.append(GradualUnfreeze(schedule, target=backbone, verbose=1 if verbose else 0))
    if recipe.layer_lr_decay is not None and selected:
        extra.append(LayerwiseLR(recipe.layer_lr_decay, selected, variables))
    return extra


def _start_run(run: RunFolder, recipe: Recipe, overwrite=False) -> bool:
    """Refuses an earlier run with another recipe (unless `overwrite`: cleared), clears a
    finished one; True when this run's finished phase 1 is reusable.

    Raises:
        RunFolderMismatch: The folder's run used another recipe and `overwrite` is False.
    """
    started = any(run.sub(name).path.exists() for name in (PHASE1, PHASE2))
    if started and not overwrite:
        if not run.recipe_path.is_file():
            raise RunFolderMismatch(
                f"{run.path} holds a fine-tuning run without {RunFolder.RECIPE}, so it cannot be "
                "told apart from another run. Pass overwrite=True (CLI: --overwrite) to replace "
                "it, or choose another folder (out=..., CLI: --out)."
            )
        run.check_recipe(recipe, started=True)  # the phases hold the epochs, not the top
    if overwrite:  # nothing of the earlier run may sit next to the new recipe
        run.clear(PHASE1, PHASE2, RunFolder.METRICS, RunFolder.MODEL, RunFolder.HISTORY,
                  RunFolder.CURVES)
    elif run.metrics_path.is_file() or not run.recipe_path.is_file():
        run.clear(PHASE1, PHASE2, RunFolder.METRICS)
    run.save_recipe(recipe)  # first, so that a re-run can tell whether it is the same run
    return run.sub(PHASE1).finished


def _length(history: dict) -> int:
    return len(next(iter(history.values()), []))


def _merge_history(first: dict, second: dict) -> dict:
    """One per-epoch history: `first`'s epochs, then `second`'s (NaN where a key is missing)."""
    if not first:
        return dict(second)
    n1, n2, nan = _length(first), _length(second), float("nan")
    keys = list(first) + [k for k in second if k not in first]
    return {k: list(first.get(k, [nan] * n1)) + list(second.get(k, [nan] * n2)) for k in keys}
