"""`distill`: train a small student on a teacher's (e.g. an ensemble's) softened probabilities.

Knowledge distillation (Hinton et al. 2015): the loss is
`alpha * CE(labels, q) + (1 - alpha) * T**2 * KL(p_T || q_T)`, where `p_T`, `q_T` are the
teacher's and the student's probabilities softened by the temperature `T`
(`softmax(log p / T)`: the models output probabilities, and this is `softmax(logits / T)`).
The student is a plain `build_classifier` model; it is saved compiled like any `train` result,
so it reloads with `keras.models.load_model` and serves at one model's latency.
"""

from __future__ import annotations

import time

import keras
import numpy as np
from keras import ops

from . import validation as v
from .run import RunFolder

__all__ = ["distill", "DistillationLoss", "soften"]

_EPS = 1e-7


def soften(probabilities, temperature):
    """`softmax(log p / T)` of probability rows (numpy): what the student learns to match."""
    logits = np.log(np.clip(np.asarray(probabilities, "float64"), _EPS, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")


@keras.saving.register_keras_serializable(package="recipes")
class DistillationLoss(keras.losses.Loss):
    """Hard-label cross-entropy plus temperature-scaled KL to the teacher.

    `y_true` packs `[one-hot labels, softened teacher probabilities]` (shape `(batch, 2C)`);
    `y_pred` are the student's probabilities `(batch, C)`.

    Args:
        temperature: Softening temperature `T` > 0 (default 4).
        alpha: Weight of the hard labels in [0, 1] (default 0.1).
    """

    def __init__(self, temperature=4.0, alpha=0.1, name="distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred, "float32")
        c = y_pred.shape[-1]
        y_true = ops.cast(y_true, "float32")
        hard, soft = y_true[:, :c], y_true[:, c:]
        log_q = ops.log(ops.clip(y_pred, _EPS, 1.0))
        ce = -ops.sum(hard * log_q, axis=-1)
        log_q_t = ops.log_softmax(log_q / self.temperature, axis=-1)
        kl = ops.sum(soft * (ops.log(ops.clip(soft, _EPS, 1.0)) - log_q_t), axis=-1)
        return self.alpha * ce + (1.0 - self.alpha) * self.temperature ** 2 * kl

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


def _packed(model, x, y, num_classes, temperature):
    probs = np.asarray(model.predict(x, batch_size=256, verbose=0))
    hard = np.eye(num_classes, dtype="float32")[y]
    return np.concatenate([hard, soften(probs, temperature)], axis=1)


def distill(teacher, backbone=None, data=None, *, temperature=4.0, alpha=0.1, out=None,
            recipe=None, seed=None, verbose="auto", **recipe_fields):
    """Trains a student classifier on `teacher`'s softened probabilities (and the labels).

    The teacher (any probability model: an ensemble, a big backbone) predicts the training and
    validation images once; the student (built from the recipe, default `mobilenet_v3_small`)
    trains with the recipe's optimizer, schedule, warmup, augmentation and early stopping on
    the distillation loss, then is evaluated on the test split like `train`'s models.

    Args:
        teacher: A `keras.Model` mapping raw images to class probabilities.
        backbone: The student's registry name (default: the recipe's backbone), or a built
            (untrained) `keras.Model` to train as the student.
        data: A `recipes.Data` or a source (default: the recipe's dataset).
        temperature: Softening temperature `T` > 0 (default 4.0).
        alpha: Weight of the hard labels in [0, 1] (default 0.1; 0: teacher only).
        out: Run folder (as `train`'s); a finished one is loaded instead of retrained.
        recipe: A `Recipe` to start from (default `Recipe()`).
        seed: Seed (default: the recipe's).
        verbose: Keras `fit` verbosity.
        **recipe_fields: Other `Recipe` fields (MixUp/CutMix are not supported here).

    Returns:
        A `recipes.Result` (`metrics` adds `teacher_test_accuracy`, `temperature`, `alpha`).

    Raises:
        ValueError: A bad temperature/alpha, a teacher whose classes differ from the data's,
            MixUp/CutMix, or a bad recipe field.

    Example:
        >>> bag = recipes.bagging("mobilenet_v3_small", "digits", members=5, epochs=3)
        >>> student = recipes.distill(bag.model, "mobilenet_v3_small", "digits", epochs=3)
    """
    import callbacks as cb

    from .bagging import evaluate_model, load_result, split_arrays
    from .training import (
        Result,
        build_from_recipe,
        compile_classifier,
        make_optimizer,
        merge_overrides,
        prepare_data,
    )

    v.check_number("temperature", temperature, 0, low_open=True)
    v.check_number("alpha", alpha, 0, 1)
    if not isinstance(teacher, keras.Model):
        raise ValueError(f"teacher must be a keras.Model; Received: {type(teacher).__name__}")
    built = backbone if isinstance(backbone, keras.Model) else None
    if backbone is not None and built is None:
        recipe_fields["backbone"] = backbone
    recipe = merge_overrides(built, recipe, {"seed": seed}, recipe_fields)
    if recipe.mixup or recipe.cutmix:
        raise ValueError("distill trains on the teacher's soft labels; MixUp/CutMix are not "
                         f"supported; Received: mixup={recipe.mixup}, cutmix={recipe.cutmix}")
    recipe, data = prepare_data(recipe, data, batch_size_given="batch_size" in recipe_fields)
    if teacher.output_shape[-1] != data.num_classes:
        raise ValueError("The teacher must predict the data's classes; Received: teacher with "
                         f"{teacher.output_shape[-1]} outputs, data with {data.num_classes} classes")
    run = RunFolder(out) if out is not None else None
    if run is not None and run.finished:
        return load_result(run.path)
    if built is None:
        recipe = recipe.replace(image_size=recipe.image_size_for(data.input_shape))
    c = data.num_classes
    x, y = split_arrays(data, "train")
    tf_data = _soft_pipeline(x, _packed(teacher, x, y, c, temperature), data.batch_size, recipe.seed)
    val = None
    if data.validation is not None:
        xv, yv = split_arrays(data, "validation")
        val = _soft_pipeline(xv, _packed(teacher, xv, yv, c, temperature), data.batch_size, None)

    keras.utils.set_random_seed(recipe.seed)
    student = built if built is not None else build_from_recipe(recipe, data)
    steps = max(1, -(-len(y) // data.batch_size))
    schedule = cb.make_schedule(recipe.schedule or "constant", recipe.peak_learning_rate,
                                epochs=recipe.epochs, steps_per_epoch=steps,
                                warmup_epochs=recipe.effective_warmup_epochs)
    opt = make_optimizer(recipe.optimizer, schedule, weight_decay=recipe.weight_decay,
                         momentum=recipe.momentum)
    student.compile(optimizer=opt, loss=DistillationLoss(temperature, alpha))
    resuming = run.start() if run is not None else False
    cbs = cb.default_callbacks(run.path if run else None,
                               patience=recipe.patience if val is not None else 0)
    if run is not None:
        cbs.append(keras.callbacks.CSVLogger(str(run.history_path), append=resuming))
    start = time.time()
    history = student.fit(tf_data, validation_data=val, epochs=recipe.epochs, callbacks=cbs,
                          verbose=verbose, shuffle=False)  # the pipeline reshuffles every epoch
    seconds = time.time() - start
    # Saved and evaluated as an ordinary classifier: plain loss and metrics in model.keras.
    compile_classifier(student, c, optimizer=make_optimizer(recipe.optimizer, recipe.peak_learning_rate))
    metrics = {"epochs": len(history.epoch), "train_seconds": round(seconds, 1),
               "temperature": float(temperature), "alpha": float(alpha),
               "teacher_test_accuracy": evaluate_model(teacher, data)}
    if data.test is not None:
        scores = student.evaluate(data.test, return_dict=True, verbose=0)
        metrics.update({f"test_{k}": float(s) for k, s in scores.items()})
    hist = {k: [float(s) for s in vals] for k, vals in history.history.items()}
    if run is not None:
        if run.history_path.is_file():
            hist = run.history()
        run.finish(student, recipe, metrics, hist)
    return Result(model=student, history=hist, metrics=metrics,
                  run_dir=run.path if run else None, recipe=recipe)


def _soft_pipeline(x, targets, batch_size, seed):
    """Batches of (images, packed targets); shuffled every pass when `seed` is given."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, targets))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

