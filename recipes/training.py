"""`train`: build (or take) a classifier, compile, fit with validation, test, write a run folder.

Layers: `fine_tune` is built on `train`, which is built on `keras.Model.fit`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import numbers
import shutil
import time
from pathlib import Path

from callbacks import SCHEDULE_NAMES

from .config import Recipe
from .data import Data, describe_source, load_data
from .registry import closest_matches

__all__ = ["Result", "train", "make_optimizer", "compile_classifier", "plot_curves", "OPTIMIZERS", "SCHEDULES"]

#: LR schedule names `train(schedule=...)` accepts (built by `callbacks.make_schedule`).
SCHEDULES = SCHEDULE_NAMES

#: Optimizer names and their default learning rates.
# Tuned for from-scratch training with warmup + cosine (the default recipe); fine-tuning passes
# its own, lower rates.
OPTIMIZERS = {"sgd": 0.1, "adam": 5e-3, "adamw": 5e-3, "rmsprop": 1e-3, "adagrad": 0.05, "nadam": 5e-3}


@dataclasses.dataclass
class Result:
    """What `train` returns.

    Attributes:
        model: The trained `keras.Model` (best weights when early stopping restored them).
        history: Per-epoch logs (`loss`, `accuracy`, `val_*`, `learning_rate`, ...) as lists; the
            whole run, including epochs finished before a resume.
        metrics: `test_accuracy`, `test_loss` and the other test metrics, plus `epochs`,
            `train_seconds`.
        run_dir: The run folder, or None when `out` was not given.
        recipe: The `Recipe` that redoes this run.
    """

    model: object
    history: dict
    metrics: dict
    run_dir: Path | None
    recipe: Recipe


def make_optimizer(name="adam", learning_rate=None, *, weight_decay=0.0, momentum=0.9):
    """Creates a Keras optimizer by name.

    Args:
        name: `"sgd"` (momentum, Nesterov), `"adam"`, `"adamw"`, `"rmsprop"`, `"adagrad"`, `"nadam"`.
        learning_rate: A float or a `LearningRateSchedule` (default: `OPTIMIZERS[name]`).
        weight_decay: Decoupled weight decay (AdamW/SGD/...; Keras applies it to the weights, not
            through the loss). Default 0, except AdamW, whose 0 means Keras-like 1e-4.
        momentum: SGD/RMSprop momentum (default 0.9).

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: Unknown name (closest matches listed) or a negative weight decay.
    """
    import keras

    if name not in OPTIMIZERS:
        hint = closest_matches(str(name), OPTIMIZERS)
        raise ValueError(
            f"Unknown optimizer; Received: optimizer={name!r}."
            + (f" Did you mean: {', '.join(hint)}?" if hint else "")
            + f" Allowed: {', '.join(OPTIMIZERS)}"
        )
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, numbers.Real) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a number >= 0; Received: weight_decay={weight_decay!r}")
    if learning_rate is None:
        learning_rate = OPTIMIZERS[name]
    wd = {"weight_decay": weight_decay} if weight_decay else {}
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True, **wd)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **wd)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay or 1e-4)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, momentum=momentum, **wd)
    if name == "adagrad":
        return keras.optimizers.Adagrad(learning_rate, **wd)
    return keras.optimizers.Nadam(learning_rate, **wd)


def compile_classifier(model, num_classes, *, optimizer, label_smoothing=0.0, mixing=False):
    """Compiles with cross-entropy and accuracy, top-5 (>= 10 classes), macro precision/recall.

    With label smoothing or MixUp/CutMix the loss and accuracy metrics accept both integer and
    soft labels (training batches are soft, validation batches stay integer).
    """
    import keras

    from .metrics import MacroPrecision, MacroRecall

    if label_smoothing or mixing:
        from .mixing import MixedAccuracy, SmoothedCrossentropy

        loss = SmoothedCrossentropy(label_smoothing=label_smoothing)
        metrics = [MixedAccuracy(name="accuracy")]
        if num_classes >= 10:
            metrics.append(MixedAccuracy(k=5, name="top5_accuracy"))
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if num_classes >= 10:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    metrics += [MacroPrecision(num_classes), MacroRecall(num_classes)]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return model


def _check(recipe: Recipe, *, from_name=True):
    """Validates the recipe before anything is built."""
    def num(name, lo=0.0, hi=None, allow_none=False, integer=False):
        v = getattr(recipe, name)
        if v is None and allow_none:
            return
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
        ok = ok and (isinstance(v, numbers.Integral) or not integer)
        ok = ok and v >= lo and (hi is None or v < hi)
        if not ok:
            kind = "an int" if integer else "a number"
            bound = f" in [{lo}, {hi})" if hi is not None else f" >= {lo}"
            raise ValueError(f"{name} must be {kind}{bound}; Received: {name}={v!r}")

    from .registry import backbone_info

    if from_name:
        backbone_info(recipe.backbone)  # unknown names fail here, before any data is loaded
    num("epochs", 1, integer=True)
    num("batch_size", 1, integer=True)
    num("warmup_epochs", 0, integer=True)
    num("label_smoothing", 0, 1)
    num("mixup", 0)
    num("cutmix", 0)
    num("weight_decay", 0)
    num("patience", 0, integer=True, allow_none=True)
    num("head_epochs", 0, integer=True)
    if recipe.learning_rate is not None:
        num("learning_rate", 1e-12)
    if recipe.optimizer not in OPTIMIZERS:
        make_optimizer(recipe.optimizer)  # raises the clear error
    if recipe.schedule is not None and recipe.schedule not in SCHEDULES:
        hint = closest_matches(str(recipe.schedule), SCHEDULES)
        raise ValueError(
            f"Unknown schedule; Received: schedule={recipe.schedule!r}."
            + (f" Did you mean: {', '.join(hint)}?" if hint else "")
            + f" Allowed: {', '.join(SCHEDULES)} or None"
        )
    if recipe.augment_placement not in ("model", "data"):
        raise ValueError(
            f"augment_placement must be 'model' or 'data'; Received: {recipe.augment_placement!r}"
        )


def _recipe_from(model_or_backbone, recipe, overrides, explicit=()):
    import keras

    recipe = recipe or Recipe()
    unknown = [k for k in overrides if k not in Recipe.field_names()]
    if unknown:
        Recipe.from_dict({unknown[0]: None})  # raises with the closest field names
    # Named parameters default to None ("from the recipe"); keyword fields were passed on
    # purpose, None included (augmentation=None, patience=None).
    given = {k: v for k, v in overrides.items() if v is not None or k in explicit}
    if isinstance(model_or_backbone, str):
        given["backbone"] = model_or_backbone
    elif isinstance(model_or_backbone, keras.Model):
        built = [k for k in given if k in Recipe().build_kwargs()]
        if built:
            raise ValueError(
                f"Build options {built} only apply when training from a backbone name; "
                f"Received: a built model {model_or_backbone.name!r}"
            )
        from .weights import find_backbone

        try:
            given["backbone"] = find_backbone(model_or_backbone).name
        except ValueError:
            given["backbone"] = model_or_backbone.name
    else:
        raise ValueError(
            "model_or_backbone must be a backbone name or a keras.Model; "
            f"Received: {type(model_or_backbone).__name__}"
        )
    return recipe.replace(**given)


def _default_image_size(recipe: Recipe, input_shape):
    """Small images trained from scratch don't need the ImageNet resolution."""
    from .registry import backbone_info

    spec = backbone_info(recipe.backbone)
    if recipe.image_size is not None:
        return recipe.image_size
    if recipe.weights is None and max(input_shape[:2]) <= 64:
        return max(spec.min_size, 32)
    return spec.default_size


def train(
    model_or_backbone=None,
    data=None,
    *,
    epochs=None,
    optimizer=None,
    learning_rate=None,
    label_smoothing=None,
    callbacks=(),
    out=None,
    seed=None,
    strategy=None,
    recipe=None,
    verbose="auto",
    **kwargs,
) -> Result:
    """Builds (from a backbone name), compiles, fits with validation and evaluates on test.

    Any `Recipe` field can be passed as a keyword (`schedule="cosine"`, `warmup_epochs=1`,
    `augmentation="light"`, `mixup=0.2`, `dropout=0.3`, `image_size=64`, `batch_size=64`, ...);
    unspecified ones come from `recipe` (default `Recipe()`, the tested defaults).

    Args:
        model_or_backbone: Registry name (default: the recipe's backbone) or a built `keras.Model`.
        data: A `Data` from `load_data`, or a source for it (default: the recipe's dataset).
        epochs: Number of epochs (default from the recipe).
        optimizer: `"sgd"`, `"adam"`, `"adamw"`, `"rmsprop"`, `"adagrad"`, `"nadam"` (default adam).
        learning_rate: Peak learning rate (default: per optimizer, see `OPTIMIZERS`).
        label_smoothing: Default 0.
        callbacks: Extra Keras callbacks.
        out: Run folder. With it: `model.keras`, `recipe.json`, `history.csv`, `metrics.json`,
            `curves.png`, and a `backup/` that lets a killed run resume from its last epoch.
        seed: Seed for weights, shuffling and augmentation (default 0); same seed, same metrics
            on CPU.
        strategy: A `tf.distribute` strategy (default: MirroredStrategy when several GPUs are
            visible, else none).
        recipe: A `Recipe` to start from (e.g. `Recipe.load("run/recipe.json")`).
        verbose: Keras `fit` verbosity (default "auto": progress bar).
        **kwargs: Other `Recipe` fields.

    Returns:
        A `Result` with `.model`, `.history`, `.metrics`, `.run_dir`, `.recipe`.

    Raises:
        ValueError: Any bad argument (checked before the model is built).

    Example:
        >>> result = recipes.train("mobilenet", "digits", epochs=2, out="runs/digits")
        >>> result.metrics["test_accuracy"]
    """
    import keras

    if model_or_backbone is None:
        model_or_backbone = kwargs.pop("backbone", None) or (recipe or Recipe()).backbone
    recipe = _recipe_from(
        model_or_backbone,
        recipe,
        dict(kwargs, epochs=epochs, optimizer=optimizer, learning_rate=learning_rate,
             label_smoothing=label_smoothing, seed=seed),
        explicit=set(kwargs),
    )
    _check(recipe, from_name=isinstance(model_or_backbone, str))
    if data is None:
        data = recipe.dataset
    if not isinstance(data, Data):
        data = load_data(
            data, batch_size=recipe.batch_size, validation_split=recipe.validation_split,
            test_split=recipe.test_split, seed=recipe.seed,
        )
    if data.batch_size != recipe.batch_size:
        if "batch_size" in kwargs:
            raise ValueError(
                f"batch_size={recipe.batch_size} differs from the batch size the Data was loaded "
                f"with ({data.batch_size}); pass a source instead of a Data, or reload it"
            )
        recipe = recipe.replace(batch_size=data.batch_size)  # recipe.json must redo this run
    recipe = recipe.replace(dataset=data.source or describe_source(data))
    if isinstance(model_or_backbone, str):
        recipe = recipe.replace(image_size=_default_image_size(recipe, data.input_shape))
    run_dir = Path(out) if out is not None else None
    if strategy is None:
        strategy = _default_strategy()

    keras.utils.set_random_seed(recipe.seed)
    from callbacks import make_schedule

    with _scope(strategy):
        if isinstance(model_or_backbone, keras.Model):
            model = model_or_backbone
        else:
            from .builder import build_classifier

            kwargs = recipe.build_kwargs()
            if kwargs["augmentation"] is not None:  # a seeded layer, so runs repeat exactly
                kwargs["augmentation"] = _augmentation_layer(recipe)
            model = build_classifier(
                recipe.backbone, data.num_classes, input_shape=data.input_shape, **kwargs
            )
        lr = recipe.learning_rate or OPTIMIZERS[recipe.optimizer]
        schedule = make_schedule(
            recipe.schedule or "constant", lr, epochs=recipe.epochs,
            steps_per_epoch=data.steps_per_epoch,
            # The default 1-epoch warmup must not forbid a 1-epoch run: warmup leaves >= 1 epoch.
            warmup_epochs=min(recipe.warmup_epochs, recipe.epochs - 1),
        )
        opt = make_optimizer(
            recipe.optimizer, schedule, weight_decay=recipe.weight_decay, momentum=recipe.momentum
        )
        mixing = bool(recipe.mixup or recipe.cutmix)
        compile_classifier(
            model, data.num_classes, optimizer=opt, label_smoothing=recipe.label_smoothing,
            mixing=mixing,
        )
    train_ds = _train_pipeline(data, recipe, model)
    cbs = list(callbacks) + _run_callbacks(
        recipe, run_dir, has_validation=data.validation is not None
    )
    if recipe.schedule == "onecycle" and recipe.optimizer != "adagrad":
        from callbacks import OneCycle

        # The schedule drives the LR; this callback cycles momentum inversely (fastai).
        warm = min(recipe.warmup_epochs, recipe.epochs - 1)
        cbs.append(OneCycle(
            lr, recipe.epochs, steps_per_epoch=data.steps_per_epoch,
            pct_start=warm / recipe.epochs if warm else 0.25,  # in phase with make_schedule's LR
        ))
    start = time.time()
    history = model.fit(
        train_ds, validation_data=data.validation, epochs=recipe.epochs, callbacks=cbs,
        verbose=verbose, shuffle=False,  # the pipeline already reshuffles every epoch
    )
    seconds = time.time() - start
    if recipe.precise_bn and _has_training_bn(model):
        from callbacks import recompute_bn_statistics

        recompute_bn_statistics(
            model, data.train_pipeline(recipe.seed), num_batches=min(50, data.steps_per_epoch)
        )
    metrics = {"epochs": len(history.epoch), "train_seconds": round(seconds, 1)}
    if data.test is not None:
        scores = model.evaluate(data.test, return_dict=True, verbose=0)
        metrics.update({f"test_{k}": float(v) for k, v in scores.items()})
    hist = {k: [float(x) for x in v] for k, v in history.history.items()}
    if run_dir is not None:
        hist = _write_run(run_dir, model, recipe, metrics, hist)
        metrics["epochs"] = len(next(iter(hist.values()), []))
    return Result(model=model, history=hist, metrics=metrics, run_dir=run_dir, recipe=recipe)


def _default_strategy():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else None


class _scope:
    def __init__(self, strategy):
        self.strategy = strategy
        self.ctx = None

    def __enter__(self):
        if self.strategy is not None:
            self.ctx = self.strategy.scope()
            self.ctx.__enter__()

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)


def _has_training_bn(model):
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            return True
    return False


def _train_pipeline(data: Data, recipe: Recipe, model):
    ds = data.train_pipeline(recipe.seed)
    if recipe.augmentation and recipe.augment_placement == "data":
        from .augment import apply_augmentation

        ds = apply_augmentation(ds, _augmentation_layer(recipe))
    if recipe.mixup or recipe.cutmix:
        from .mixing import mix_batches

        ds = mix_batches(
            ds, data.num_classes, mixup=recipe.mixup, cutmix=recipe.cutmix, seed=recipe.seed
        )
    return ds


def _augmentation_layer(recipe: Recipe):
    from .augment import augmentation

    return augmentation(recipe.augmentation, seed=recipe.seed, flip=recipe.flip)


def _run_callbacks(recipe: Recipe, run_dir: Path | None, *, has_validation=True):
    import keras

    import callbacks as cb

    # The LR logger runs before CSVLogger so history.csv records the rate each epoch used.
    out = [cb.LearningRateLogger(), cb.terminate_on_nan()]
    if recipe.patience and has_validation:  # early stopping watches val_loss
        out.append(cb.early_stopping(patience=recipe.patience))
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        backup = run_dir / "backup"
        resuming = backup.is_dir() and any(backup.iterdir())
        if not resuming and (run_dir / "history.csv").exists():
            (run_dir / "history.csv").unlink()  # a finished earlier run: start its record anew
        out.append(cb.backup(backup))
        out.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resuming))
    return out


def _read_history(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [k for k in (rows[0].keys() if rows else []) if k != "epoch"]
    return {k: [float(r[k]) for r in rows] for k in keys}


def _write_run(run_dir: Path, model, recipe: Recipe, metrics: dict, hist: dict) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "model.keras")
    recipe.save(run_dir / "recipe.json")
    if (run_dir / "history.csv").exists():
        hist = _read_history(run_dir / "history.csv")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_curves(hist, run_dir / "curves.png")
    shutil.rmtree(run_dir / "backup", ignore_errors=True)
    return hist


def plot_curves(history: dict, path, *, marks=None) -> Path:
    """Writes loss and accuracy per epoch (train and validation) as a PNG.

    Args:
        history: Per-epoch logs as lists.
        path: Destination PNG.
        marks: Optional `{epoch: label}` drawn as vertical lines (e.g. where fine-tuning began).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            if name in history and history[name]:
                epochs = range(1, len(history[name]) + 1)
                ax.plot(epochs, history[name], style, marker="o", ms=3, label=name)
        for epoch, label in (marks or {}).items():
            ax.axvline(epoch + 0.5, color="grey", ls=":", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
