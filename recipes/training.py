"""`train`: build (or take) a classifier, compile, fit with validation, test, write a run folder.

Layers: `fine_tune` is built on `train`, which is built on `keras.Model.fit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path

from callbacks import SCHEDULE_NAMES

from . import validation as v
from .config import BUILD_FIELDS, CUSTOM_PREFIX, DEFAULT_LEARNING_RATES, Recipe
from .data import Data, describe_source, load_data
from .presets import adapt_recipe, check_preset_needs
from .run import RunFolder

__all__ = [
    "Result", "train", "make_optimizer", "compile_classifier", "merge_overrides", "prepare_data",
    "build_from_recipe", "adapt_recipe", "OPTIMIZERS", "SCHEDULES", "NO_DECAY_NAMES",
]

#: LR schedule names `train(schedule=...)` accepts (built by `callbacks.make_schedule`).
SCHEDULES = SCHEDULE_NAMES

#: Optimizer names and their from-scratch default learning rates (decided in `recipes.config`).
OPTIMIZERS = DEFAULT_LEARNING_RATES

#: The run folder's list of image files the loader could not read (one path per line).
SKIPPED_FILE = "skipped.txt"

#: Variables whose names contain one of these get no weight decay (biases, BatchNorm scale/shift).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


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


def make_optimizer(name="adam", learning_rate=None, *, weight_decay=0.0, momentum=0.9, ema=None):
    """Creates a Keras optimizer by name.

    Args:
        name: `"sgd"` (momentum, Nesterov), `"adam"`, `"adamw"`, `"rmsprop"`, `"adagrad"`, `"nadam"`.
        learning_rate: A float or a `LearningRateSchedule` (default: `OPTIMIZERS[name]`).
        weight_decay: Decoupled weight decay (AdamW/SGD/...; Keras applies it to the weights, not
            through the loss). Default 0, except AdamW, whose 0 means Keras-like 1e-4.
        momentum: SGD/RMSprop momentum (default 0.9).
        ema: Weight EMA momentum in (0, 1) (Keras' `use_ema`; pair it with
            `keras.callbacks.SwapEMAWeights`, as `train` does), or None (default: off).

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: Unknown name (closest matches listed) or a negative weight decay.
    """
    import keras

    v.check_choice("optimizer", name, tuple(OPTIMIZERS))
    v.check_number("weight_decay", weight_decay, 0)
    if learning_rate is None:
        learning_rate = OPTIMIZERS[name]
    v.check_number("ema", ema, 0, 1, low_open=True, high_open=True, allow_none=True)
    wd = {"weight_decay": weight_decay} if weight_decay else {}
    if ema is not None:
        wd.update(use_ema=True, ema_momentum=float(ema))
    if name == "sgd":
        opt = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=True, **wd)
    elif name == "adam":
        opt = keras.optimizers.Adam(learning_rate, **wd)
    elif name == "adamw":
        wd["weight_decay"] = weight_decay or 1e-4
        opt = keras.optimizers.AdamW(learning_rate, **wd)
    elif name == "rmsprop":
        opt = keras.optimizers.RMSprop(learning_rate, momentum=momentum, **wd)
    elif name == "adagrad":
        opt = keras.optimizers.Adagrad(learning_rate, **wd)
    else:
        opt = keras.optimizers.Nadam(learning_rate, **wd)
    if opt.weight_decay:
        # Decaying biases and BatchNorm scale/shift only hurts (timm and fastai exclude them).
        opt.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
    return opt


def compile_classifier(model, num_classes, *, optimizer, label_smoothing=0.0, mixing=False,
                       jit_compile="auto", steps_per_execution=1):
    """Compiles with cross-entropy and accuracy, top-5 (>= 10 classes), macro precision/recall.

    With label smoothing or MixUp/CutMix the loss and accuracy metrics accept both integer and
    soft labels (training batches are soft, validation batches stay integer). `jit_compile` and
    `steps_per_execution` go to `model.compile` (see `recipes.speed.resolve`).
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
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    return model


def merge_overrides(model_or_backbone, recipe, named: dict, keywords: dict, *, base=None) -> Recipe:
    """The Recipe a call runs: `recipe` (default `base`, else `Recipe()`) with the call's arguments.

    Named parameters left at None mean "from the recipe"; keyword fields were passed on purpose,
    None included (`augmentation=None`, `patience=None`). The backbone comes from a name, or from
    a built model's backbone (`custom:<name>` for a model not built by `build_classifier`).

    Raises:
        ValueError: Unknown fields (closest listed), bad values, build options given with a built
            model, or something that is neither a name nor a model.
    """
    import keras

    recipe = recipe if recipe is not None else (base if base is not None else Recipe())
    Recipe.check_field_names(keywords)
    given = {k: v for k, v in named.items() if v is not None}
    given.update(keywords)
    if isinstance(model_or_backbone, str):
        given["backbone"] = model_or_backbone
    elif isinstance(model_or_backbone, keras.Model):
        built = [k for k in given if k in BUILD_FIELDS]
        if "augmentation" in built and given.get("augment_placement", recipe.augment_placement) == "data":
            built.remove("augmentation")  # runs in the data pipeline, not in the model
        if built:
            raise ValueError(
                f"Build options {built} only apply when training from a backbone name; "
                f"Received: a built model {model_or_backbone.name!r}"
            )
        if "augmentation" not in given and given.get(
                "augment_placement", recipe.augment_placement) == "model":
            # The default augmentation is built into the model: a built model has its own (or
            # none), and its recipe.json must not claim the default's.
            given["augmentation"] = None
        from .weights import find_backbone

        try:
            given["backbone"] = find_backbone(model_or_backbone).name
        except ValueError:
            given["backbone"] = f"{CUSTOM_PREFIX}{model_or_backbone.name}"
    elif model_or_backbone is not None:
        raise ValueError(
            "model_or_backbone must be a backbone name or a keras.Model; "
            f"Received: {type(model_or_backbone).__name__}"
        )
    return recipe.replace(**given)


def prepare_data(recipe: Recipe, data, *, batch_size_given=False, data_dir=None):
    """Loads `data` (a `Data`, a source, or None: the recipe's dataset) with the recipe's splits.

    Returns:
        `(recipe, data)`: the recipe now records the data's source, and its batch size unless
        the call (`batch_size_given`) or the recipe (a value other than the default) chose
        one, so `recipe.json` redoes this run.
    """
    if data is None:
        data = recipe.dataset
    if not isinstance(data, Data):
        # Folders and tfds decode images of any size: they resize in the pipeline, to the recipe's
        # size. In-memory arrays keep their shape (the model resizes), so a saved model takes the
        # images it was given.
        decoded = isinstance(data, (str, os.PathLike)) and not (
            str(data) == "digits" or str(data).startswith("idx:"))
        data = load_data(
            data, batch_size=recipe.batch_size, validation_split=recipe.validation_split,
            test_split=recipe.test_split, seed=recipe.seed, data_dir=data_dir,
            **(dict(image_size=recipe.image_size, crop=recipe.crop, cache=recipe.cache)
               if decoded else {}),
        )
    # The recipe's batch size is the training batch (training re-batches the pipeline). A Data
    # loaded with another one sets it, unless the call or the recipe chose one: a preset's
    # batch size must survive the nested `train` calls of `fine_tune`.
    batch_size = recipe.batch_size
    if not batch_size_given and recipe.batch_size == Recipe().batch_size:
        batch_size = data.batch_size
    recipe = recipe.replace(dataset=data.source or describe_source(data), batch_size=batch_size)
    return recipe, data


def record_skipped(run: RunFolder | None, data: Data) -> None:
    """Lists the files the loader could not read in the run's `skipped.txt` (one path a line)."""
    skipped = getattr(data, "skipped", None)
    if run is not None and skipped:
        run.write_text(SKIPPED_FILE, "".join(f"{path}\n" for path in skipped))


def build_from_recipe(recipe: Recipe, data: Data, **build_kwargs):
    """`build_classifier` with the recipe's options for `data`'s classes and image shape."""
    from .builder import build_classifier
    from .speed import dtype_policy, resolve

    kwargs = {**recipe.build_kwargs(), **build_kwargs}
    kwargs["image_size"] = recipe.image_size_for(data.input_shape)
    with dtype_policy(resolve(recipe.precision).precision):
        return build_classifier(recipe.backbone, data.num_classes, input_shape=data.input_shape,
                                **kwargs)


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
    workers=None,
    worker_index=None,
    overwrite=False,
    **kwargs,
) -> Result:
    """Builds (from a backbone name), compiles, fits with validation and evaluates on test.

    Any `Recipe` field can be passed as a keyword (`schedule="cosine"`, `warmup_epochs=1`,
    `augmentation="light"`, `mixup=0.2`, `dropout=0.3`, `image_size=64`, `batch_size=64`, ...);
    unspecified ones come from `recipe` (default `Recipe()`, the tested defaults). With
    `preset_name="auto"` (the default) the preset is chosen for the loaded training split
    (`recipes.presets.adapt_to_data`: small-data for at most 100 images per class, else fast);
    fields passed here are kept, the choice is printed and `Result.recipe` records it. A
    `train_steps` budget becomes epochs; `batch_size` is the training batch (the Data's
    pipeline is re-batched to it; the last, partial batch of each pass is dropped).

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
        workers: Train on several machines (default None: this one): every worker's
            `"host:port"`, worker 0 first, as a list or `"host:port,host:port"`; the same call
            runs on every worker. Needs Keras' JAX backend (`KERAS_BACKEND=jax` set before
            keras is imported). `batch_size` is the global batch; worker 0 writes `out`, the
            others write nothing. See `recipes.distribute`.
        worker_index: This worker's position in `workers` (required with them).
        overwrite: Replace an earlier run in `out` that used another recipe (default False:
            refused). The same recipe resumes an interrupted run, or redoes a finished one.
        **kwargs: Other `Recipe` fields.

    Returns:
        A `Result` with `.model`, `.history`, `.metrics`, `.run_dir`, `.recipe` (`run_dir` is
        None on workers other than 0).

    Raises:
        ValueError: Any bad argument (checked before the model is built), including bad
            `workers`/`worker_index`, `workers` under a backend other than JAX, or the
            fine-tune preset without weights.
        recipes.run.RunFolderMismatch: (a ValueError) `out` holds a run with another recipe
            and `overwrite` is False; the differing fields are listed.
        recipes.run.RunFolderInUse: Another live process is training into `out`.
        TrainingDiverged: The loss became NaN or infinite (epoch and batch named); nothing is
            saved over an earlier run's files, and the backup of the last good epoch is kept.

    Example:
        >>> result = recipes.train("mobilenet", "digits", epochs=2, out="runs/digits")
        >>> result.metrics["test_accuracy"]
    """
    import keras

    import callbacks as cb

    named = dict(epochs=epochs, optimizer=optimizer, learning_rate=learning_rate,
                 label_smoothing=label_smoothing, seed=seed)
    recipe = merge_overrides(model_or_backbone, recipe, named, kwargs)
    explicit = set(kwargs) | {k for k, val in named.items() if val is not None}
    if not isinstance(model_or_backbone, keras.Model):  # a built model brings its own weights
        check_preset_needs(recipe.preset_name, recipe)
    from .speed import graph_optimizer
    from .speed import resolve as resolve_speed

    resolve_speed(recipe.precision, recipe.jit_compile, recipe.steps_per_execution, recipe.grappler,
                  callbacks=callbacks)  # a bad toggle fails before any data is read
    cluster = _connect(workers, worker_index, strategy)  # None on one machine
    recipe, data = prepare_data(recipe, data, batch_size_given="batch_size" in kwargs)
    recipe = adapt_recipe(recipe, data, explicit=explicit, verbose=verbose,
                          built=isinstance(model_or_backbone, keras.Model))
    class_weight = data.class_weights() if recipe.class_weight == "balanced" else None
    if isinstance(model_or_backbone, keras.Model):
        model = model_or_backbone
    else:
        recipe = recipe.replace(image_size=recipe.image_size_for(data.input_shape))
        model = None
    if cluster is not None:
        cluster.check_data(data.sizes.get("train", 0), recipe.batch_size)
        if model is not None:
            from .distribute import check_model_distributed

            check_model_distributed(model)
        out = out if cluster.is_chief else None  # worker 0 writes the run folder
    run = RunFolder(out) if out is not None else None
    record_skipped(run, data)
    if strategy is None and cluster is None:
        strategy = _default_strategy()
    steps_per_epoch = recipe.epoch_passes * (
        whole_batches(data.sizes.get("train", 0), recipe.batch_size) if cluster is None
        else cluster.steps_per_epoch(data.sizes.get("train", 0), recipe.batch_size))

    speed = resolve_speed(recipe.precision, recipe.jit_compile, recipe.steps_per_execution,
                          recipe.grappler, steps_per_epoch=steps_per_epoch, epochs=recipe.epochs,
                          callbacks=callbacks)
    if model is not None:
        _check_built_precision(model, recipe.precision)
    _warn_long_ema(recipe, steps_per_epoch * recipe.epochs)
    keras.utils.set_random_seed(recipe.seed)
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if model is None:
            model = build_from_recipe(recipe, data)
        schedule = cb.make_schedule(
            recipe.schedule or "constant", recipe.peak_learning_rate, epochs=recipe.epochs,
            steps_per_epoch=steps_per_epoch, warmup_epochs=recipe.effective_warmup_epochs,
        )
        opt = make_optimizer(recipe.optimizer, schedule, weight_decay=recipe.weight_decay,
                             momentum=recipe.momentum, ema=recipe.ema)
        compile_classifier(
            model, data.num_classes, optimizer=opt, label_smoothing=recipe.label_smoothing,
            mixing=bool(recipe.mixup or recipe.cutmix), jit_compile=speed.jit_compile,
            steps_per_execution=speed.steps_per_execution,
        )
    if keras.backend.backend() == "tensorflow":
        from .compat import build_training_state

        build_training_state(model, data.train.element_spec)  # the first step then traces once
    cbs = list(callbacks) + _run_callbacks(recipe, run, data, cluster, overwrite=overwrite)
    start = time.time()
    try:  # the run folder's lock, taken by _run_callbacks, is held until the run is written
        with graph_optimizer(speed.grappler):  # every graph this run traces
            return _fit_and_finish(model, data, recipe, cbs, run, cluster, class_weight, verbose,
                                   start, speed=speed)
    finally:
        if run is not None:
            run.release_lock()


def _fit_and_finish(model, data, recipe, cbs, run, cluster, class_weight, verbose, start, *,
                    speed=None):
    """The end of `train`: fit, evaluate, write the run folder."""
    import callbacks as cb

    try:
        history = model.fit(
            _train_pipeline(data, recipe, cluster), validation_data=data.validation,
            epochs=recipe.epochs, callbacks=cbs, verbose=verbose,
            shuffle=False,  # the pipeline reshuffles every epoch
            class_weight=class_weight,
        )
    except cb.TrainingDiverged as exc:
        kept = ""
        if run is not None and run.resumable:
            kept = (f". {run.path} keeps the backup of the last good epoch; to train it again with "
                    "other settings pass overwrite=True (CLI: --overwrite) or another folder")
        raise cb.TrainingDiverged(f"{exc}{kept}", epoch=exc.epoch, batch=exc.batch,
                                  loss=exc.loss) from None
    finally:
        if cluster is not None:
            from .distribute import remove_private_backup

            for callback in cbs:
                remove_private_backup(callback)
    seconds = time.time() - start
    # Keras averages the trainable weights only: BatchNorm's moving statistics still belong to
    # the raw weights, which on a BatchNorm network from scratch measured far below them
    # (MNIST, EMA 0.999: validation 0.17-0.67 while training accuracy was 0.97). Statistics
    # recomputed for the averaged weights match them again.
    if (recipe.precise_bn or recipe.ema is not None) and _has_training_bn(model):
        cb.recompute_bn_statistics(
            model, data.train_pipeline(recipe.seed), num_batches=min(50, data.steps_per_epoch)
        )
    metrics = {"epochs": len(history.epoch), "train_seconds": round(seconds, 1)}
    if speed is not None:
        metrics["speed"] = speed.to_dict()  # what "auto" resolved to on this machine
    if data.test is not None:
        scores = model.evaluate(data.test, return_dict=True, verbose=0)
        metrics.update({f"test_{k}": float(v) for k, v in scores.items()})
    hist = {k: [float(x) for x in v] for k, v in history.history.items()}
    if getattr(data, "skipped", None):
        metrics["skipped_files"] = len(data.skipped)
    if run is not None:
        if run.history_path.is_file():
            hist = run.history()  # history.csv spans a resumed run, not just this process's part
        metrics["epochs"] = len(next(iter(hist.values()), []))
        with _alone(cluster):  # only worker 0 has a run folder
            run.finish(model, recipe, metrics, hist)
    return Result(model=model, history=hist, metrics=metrics, run_dir=run.path if run else None,
                  recipe=recipe)


def _warn_long_ema(recipe, total_steps):
    """Warns when the weight average spans more than a fifth of the run: Keras' EMA starts from
    the first step's weights, with no warmup, so they would still weigh in at the end."""
    if recipe.ema is None or 1 / (1 - recipe.ema) <= total_steps / 5:
        return
    import warnings

    from callbacks import RunWarning

    smaller = 1 - 5 / max(total_steps, 1)
    advice = (f"use a smaller momentum such as {smaller:.3g}, or train longer"
              if smaller >= 0.9 else "train longer, or without ema")
    warnings.warn(RunWarning(
        f"ema={recipe.ema:g} averages over about {1 / (1 - recipe.ema):.0f} steps, more than a "
        f"fifth of this run's {total_steps}: the average still holds the first, barely "
        f"trained weights (Keras' EMA has no warmup); {advice}"), stacklevel=3)


def _check_built_precision(model, precision):
    """A built model keeps the dtype policy it was built with; a precision asked for must match."""
    if precision == "auto":
        return
    built = model.dtype_policy.name
    if built != precision:
        raise ValueError(
            f"precision={precision!r} cannot apply to a model built with dtype policy {built!r}: "
            "Keras fixes a layer's policy when it is created; build it under the policy (e.g. "
            "`with recipes.speed.dtype_policy(...)`) or train from a backbone name; "
            f"Received: precision={precision!r}"
        )


def _connect(workers, worker_index, strategy):
    """`recipes.distribute.connect` for `train(workers=...)`; None on one machine."""
    if workers is None and worker_index is None:
        return None
    if strategy is not None:
        raise ValueError("strategy is a TensorFlow (one machine) option; several workers use "
                         f"Keras' JAX distribution instead; Received: strategy={strategy!r} "
                         "with workers")
    from .distribute import connect

    return connect(workers, worker_index)


def _alone(cluster):
    """What worker 0 does by itself (saving) runs outside the distribution (a no-op context on
    one machine); see `recipes.distribute.local_only`."""
    if cluster is None:
        return contextlib.nullcontext()
    from .distribute import local_only

    return local_only()


def _default_strategy():
    import keras

    if keras.backend.backend() != "tensorflow":
        return None  # tf.distribute strategies only drive the TensorFlow backend
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else None


def _has_training_bn(model):
    import keras

    from .compat import flatten_layers

    for layer in flatten_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            return True
    return False


def whole_batches(train_size: int, batch_size: int) -> int:
    """Training steps per pass: whole batches only, or one smaller batch when the split is
    smaller than a batch."""
    return max(1, train_size // batch_size)


def _train_pipeline(data: Data, recipe: Recipe, cluster=None):
    """The training batches: the recipe's batch size (the preset may choose another than the
    data was loaded with), whole batches only; this worker's share of them on several."""
    ds = data.train_pipeline(recipe.seed)
    size = data.sizes.get("train", 0)
    if cluster is not None:
        # Before augmentation and mixing: each worker does 1/N of that work.
        ds = cluster.shard_train(ds, recipe.batch_size, size)
    else:
        # The last, partial batch is dropped (a new shuffle each pass, so every image is used):
        # a batch of a few images moves BatchNorm's moving statistics toward a noisy estimate.
        # Measured: 450 images in batches of 32 (the last of 2) trained to 43 % test accuracy
        # from scratch, 94 % without that batch.

        ds = ds.rebatch(recipe.batch_size, drop_remainder=size >= recipe.batch_size)
        if size:
            # rebatch forgets the length, which Keras needs for an epoch's steps. repeat + take
            # rather than assert_cardinality: a file that fails to decode only now (the
            # pipeline drops it) borrows a batch from the next shuffled pass, not a crash.
            ds = ds.repeat().take(whole_batches(size, recipe.batch_size))
    if recipe.augmentation and recipe.augment_placement == "data":
        from .augment import apply_augmentation

        ds = apply_augmentation(ds, recipe.augmentation_layer())
    if recipe.mixup or recipe.cutmix:
        from .mixing import mix_batches

        ds = mix_batches(
            ds, data.num_classes, mixup=recipe.mixup, cutmix=recipe.cutmix, seed=recipe.seed
        )
    if recipe.epoch_passes > 1:  # each pass reshuffles (the pipeline's reshuffle_each_iteration)
        ds = ds.repeat(recipe.epoch_passes)
    return ds


def _with_ema_swap(callbacks):
    """Adds Keras' `SwapEMAWeights(swap_on_epoch=True)`: validation runs on the averaged weights,
    and early stopping, placed after it, keeps (and restores) the best averaged weights; the
    backup and the CSV logger stay before it, so a resumed run restores the raw weights into the
    model and the averages into the optimizer, as they were."""
    import keras

    stopping = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    rest = [c for c in callbacks if not isinstance(c, keras.callbacks.EarlyStopping)]
    return rest + [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] + stopping


def _run_callbacks(recipe: Recipe, run: RunFolder | None, data: Data, cluster=None, *,
                   overwrite=False):
    """The run's own callbacks; with a run folder, first takes its lock and checks its recipe
    (`RunFolder.start`), releasing the lock if that refuses."""
    import callbacks as cb

    resuming = False
    if run is not None:
        run.acquire_lock()
        try:
            resuming = run.start(recipe, overwrite=overwrite)
        except BaseException:
            run.release_lock()
            raise
    hint = (f"lower the learning rate (it was {recipe.peak_learning_rate:g} with "
            f"{recipe.optimizer}; find one with `recipes find-lr`)")
    out = cb.default_callbacks(
        run.path if run is not None and cluster is None else None,
        patience=recipe.patience if data.validation is not None else 0,  # watches val_loss
        resilient=True, divergence_hint=hint,
    )
    backup = next((c for c in out if isinstance(c, cb.ResilientBackup)), None)
    if cluster is not None:  # every worker restores worker 0's backup (see recipes.distribute)
        private = cluster.backup_callback(run.backup_dir if run is not None else None)
        out += [private] if private is not None else []
    if run is not None:
        out.append(cb.ResumableCSVLogger(run.history_path, backup=backup,
                                         append=resuming and backup is None))
    return _with_ema_swap(out) if recipe.ema is not None else out
