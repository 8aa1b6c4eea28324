"""Ensembles that train their own members: `bagging` (bootstrap resamples) and
`snapshot_ensemble` (the end-of-cycle snapshots of one cosine-restarts run).

Both return an `EnsembleResult` whose `.model` is one saveable Keras model (`recipes.ensemble`).
With `out`, every member is a run folder (`member<i>/`, `snapshot<i>/`) and the ensemble's
`model.keras` and `metrics.json` sit at the top: a re-run skips finished members.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from . import validation as v
from .run import RunFolder

__all__ = ["EnsembleResult", "bagging", "snapshot_ensemble", "split_arrays", "with_train_indices",
           "bootstrap_indices", "load_result", "evaluate_model"]

#: What bagging writes in each member's run folder: the bootstrap sample it trained on.
BOOTSTRAP_FILE = "bootstrap.json"


@dataclasses.dataclass
class EnsembleResult:
    """What `bagging` and `snapshot_ensemble` return.

    Attributes:
        model: The ensemble, one `keras.Model` (saves and reloads without custom_objects).
        members: The members' `recipes.Result`s, in order.
        metrics: `test_accuracy` (the ensemble's), `member_test_accuracy` (a list, one per
            member), `method`, `members`.
        run_dir: The ensemble's folder, or None without `out`.
        samples: Bagging: each member's bootstrap indices into the training split (else empty).
    """

    model: object
    members: list
    metrics: dict
    run_dir: Path | None = None
    samples: list = dataclasses.field(default_factory=list)


def split_arrays(data, split="train"):
    """One split of a `Data` as numpy arrays `(images, labels)`.

    Validation and test keep their fixed order. The training pipeline shuffles (and its order
    depends on TensorFlow's global seed), so its images are put in a canonical order (by label,
    then by content): bootstrap indices into it mean the same images in every process.
    """
    ds = data.train_pipeline(0) if split == "train" else getattr(data, split)
    if ds is None:
        raise ValueError(f"The data has no {split} split; Received: sizes={data.sizes}")
    xs, ys = zip(*((np.asarray(x), np.asarray(y)) for x, y in ds))
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.int32)
    if split == "train":
        probe = np.random.default_rng(0).standard_normal(int(np.prod(x.shape[1:])))
        order = np.lexsort((x.reshape(len(x), -1).astype(np.float64) @ probe, y))
        x, y = x[order], y[order]
    return x, y


def with_train_indices(data, x, y, indices):
    """A copy of `data` whose training split is `x[indices], y[indices]` (repeats allowed);
    validation and test are the very same pipelines, so metrics stay comparable."""
    from .data.arrays import array_pipeline

    indices = np.asarray(indices, np.int64)

    def pipeline(seed):
        return array_pipeline(x, y, indices, batch_size=data.batch_size, shuffle=True, seed=seed)

    return dataclasses.replace(
        data, train=pipeline(0), make_train=pipeline,
        sizes={**data.sizes, "train": int(len(indices))},
        class_counts=np.bincount(y[indices], minlength=data.num_classes).tolist(),
    )


def bootstrap_indices(n, seed):
    """`n` draws with replacement from `range(n)` (the bootstrap sample of member `seed`)."""
    return np.random.default_rng(seed).integers(0, n, n)


def load_result(run_dir):
    """The `recipes.Result` of a finished run folder (what a re-run reuses instead of training)."""
    from .training import Result

    run = RunFolder(run_dir)
    history = run.history() if run.history_path.is_file() else {}
    return Result(model=run.load_model(), history=history, metrics=run.metrics(),
                  run_dir=run.path, recipe=run.recipe())


def evaluate_model(model, data, split="test"):
    """Accuracy of a probability model on a split (None when the data has no such split)."""
    from .ensemble import predict_split

    ds = getattr(data, split)
    if ds is None:
        return None
    (probs,), labels = predict_split([model], ds)
    return float(np.mean(probs.argmax(1) == labels))


def _base(backbone, recipe, fields, seed):
    from .training import merge_overrides

    return merge_overrides(backbone, recipe, {"seed": seed}, fields)


def _start(backbone, recipe):
    """What `train` starts from: the name, or a fresh copy of a model (new weights, this seed)."""
    import keras

    if not isinstance(backbone, keras.Model):
        return recipe.backbone
    keras.utils.set_random_seed(recipe.seed)
    return keras.models.clone_model(backbone)


def _finish(members, data, method, out, samples=()):
    from .ensemble import ensemble

    models = [m.model for m in members]
    model = ensemble(models, method, data=data if method == "stack" else None)
    metrics = {
        "method": method, "members": len(members),
        "member_test_accuracy": [m.metrics.get("test_accuracy") for m in members],
        "test_accuracy": evaluate_model(model, data),
    }
    run = None
    if out is not None:
        run = RunFolder(out)
        run.save_model(model)
        run.save_metrics(metrics)
    return EnsembleResult(model=model, members=members, metrics=metrics,
                          run_dir=run.path if run else None, samples=list(samples))


def bagging(backbone=None, data=None, members=5, *, method="average", out=None, recipe=None,
            seed=None, verbose="auto", **recipe_fields) -> EnsembleResult:
    """Trains `members` classifiers, each on its own bootstrap resample of the training split.

    Member `i` trains with `seed + i` (weights, shuffling, augmentation) on `n` images drawn with
    replacement from the `n` training images (generator seeded with `seed + i`); validation and
    test are shared and untouched. The ensemble combines them with `recipes.ensemble(method)`.

    Args:
        backbone: Registry name (default: the recipe's backbone), or a built `keras.Model`
            that each member copies with fresh weights (`keras.models.clone_model`).
        data: A `recipes.Data` or a source (default: the recipe's dataset); loaded once, so
            every member shares one split.
        members: Number of members, at least 2 (default 5).
        method: `"average"` (default), `"vote"` or `"stack"` (fitted on the validation split).
        out: Folder: `member<i>/` run folders (each with `bootstrap.json`), then the ensemble's
            `model.keras` and `metrics.json`. A re-run skips finished members.
        recipe: A `Recipe` to start from (default `Recipe()`).
        seed: Base seed (default: the recipe's).
        verbose: Keras `fit` verbosity.
        **recipe_fields: Other `Recipe` fields (`epochs=3`, `dropout=0.3`, ...).

    Returns:
        An `EnsembleResult` (`.samples` holds each member's bootstrap indices).

    Raises:
        ValueError: Fewer than 2 members, an unknown method, or a bad recipe field (before
            any training).

    Example:
        >>> bag = recipes.bagging("mobilenet_v3_small", "digits", members=5, epochs=3)
        >>> bag.metrics["test_accuracy"], bag.metrics["member_test_accuracy"]
    """
    from .ensemble import METHODS
    from .training import prepare_data, train

    v.check_int("members", members, 2)
    v.check_choice("method", method, METHODS)
    base = _base(backbone, recipe, recipe_fields, seed)
    base, data = prepare_data(base, data, batch_size_given="batch_size" in recipe_fields)
    x, y = split_arrays(data, "train")
    results, samples = [], []
    for i in range(members):
        member_seed = base.seed + i
        idx = bootstrap_indices(len(y), member_seed)
        samples.append(idx)
        run_dir = Path(out) / f"member{i}" if out is not None else None
        if run_dir is not None and RunFolder(run_dir).finished:
            results.append(load_result(run_dir))
            continue
        member_data = with_train_indices(data, x, y, idx)
        member = base.replace(seed=member_seed)
        result = train(_start(backbone, member), member_data, recipe=member, out=run_dir,
                       verbose=verbose)
        if run_dir is not None:
            RunFolder(run_dir).write_json(BOOTSTRAP_FILE, {
                "seed": member_seed, "unique": int(len(np.unique(idx))),
                "class_counts": member_data.class_counts, "indices": idx.tolist(),
            })
        results.append(result)
    return _finish(results, data, method, out, samples)


def snapshot_ensemble(backbone=None, data=None, cycles=3, *, cycle_epochs=None, method="average",
                      out=None, recipe=None, seed=None, verbose="auto", **recipe_fields) -> EnsembleResult:
    """Snapshot ensemble (Huang et al. 2017): the end of each cosine cycle is a member.

    One run of warm restarts with equal cycles (SGDR with `t_mul=1`): cycle 1 trains from
    scratch with the recipe's warmup and a cosine decay over `cycle_epochs`; every next cycle
    starts from the previous snapshot's weights at the peak learning rate again (no warmup) and
    decays to 0. The optimizer state restarts with the rate (a fresh `train` per cycle), which
    is what lets each cycle land in a different minimum. Cheap: the members cost one run.

    Args:
        backbone: Registry name (default: the recipe's backbone), or a built `keras.Model`
            (copied with fresh weights).
        data: A `recipes.Data` or a source (default: the recipe's dataset).
        cycles: Number of cycles = members, at least 2 (default 3).
        cycle_epochs: Epochs per cycle (default: the recipe's `epochs` // `cycles`, at least 1).
        method: How snapshots combine (default "average").
        out: Folder: `snapshot<i>/` run folders, then the ensemble's `model.keras` and
            `metrics.json`; a re-run skips finished cycles.
        recipe, seed, verbose, **recipe_fields: As `bagging`. Early stopping is off (a cycle
            must reach its low-rate end).

    Returns:
        An `EnsembleResult`.

    Raises:
        ValueError: Fewer than 2 cycles, a bad `cycle_epochs`, unknown method or recipe field.

    Example:
        >>> snap = recipes.snapshot_ensemble("mobilenet_v3_small", "digits", cycles=3, epochs=9)
    """
    from .ensemble import METHODS
    from .training import prepare_data, train

    v.check_int("cycles", cycles, 2)
    v.check_int("cycle_epochs", cycle_epochs, 1, allow_none=True)
    v.check_choice("method", method, METHODS)
    base = _base(backbone, recipe, recipe_fields, seed)
    base, data = prepare_data(base, data, batch_size_given="batch_size" in recipe_fields)
    per_cycle = cycle_epochs or max(1, base.epochs // cycles)
    cycle_recipe = base.replace(epochs=per_cycle, schedule="cosine", patience=None)
    results, previous = [], None
    for i in range(cycles):
        run_dir = Path(out) / f"snapshot{i}" if out is not None else None
        if run_dir is not None and RunFolder(run_dir).finished:
            result = load_result(run_dir)
        else:
            start = _start(backbone, cycle_recipe) if previous is None else _copy(previous)
            r = cycle_recipe if previous is None else cycle_recipe.replace(warmup_epochs=0)
            result = train(start, data, recipe=r, out=run_dir, verbose=verbose)
        results.append(result)
        previous = result.model
    return _finish(results, data, method, out)


def _copy(model):
    """An independent copy of a trained model (same weights), for the next cycle to train."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy
