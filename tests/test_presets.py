"""Named recipes, the data-size-aware choice among them, step budgets, and weight EMA (issue 12)."""

import json

import keras
import numpy as np
import pytest

import recipes
from callbacks import RunWarning
from recipes.config import Recipe
from recipes.presets import (
    AUTO,
    MIN_EPOCH_STEPS,
    PRESET_DOCS,
    PRESETS,
    SMALL_DATA_PER_CLASS,
    adapt_to_data,
    choose_preset,
)


def _arrays(per_class, classes=10, side=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class).astype("int32")
    x = rng.integers(0, 256, (len(y), side, side, 1), dtype=np.uint8)
    x[np.arange(len(y)), y % side, :, 0] = 255  # a learnable row per class
    return x, y


@pytest.fixture(scope="module")
def small_data():
    x, y = _arrays(20)  # 160 training images: 16 per class
    return recipes.load_data((x, y), batch_size=32)


@pytest.fixture(scope="module")
def large_data():
    return recipes.load_data("digits", batch_size=64)  # 144 training images per class


# ------------------------------------------------------------------ each preset is what it says


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_resolves_to_its_documented_fields(name):
    changes = {"weights": "imagenet"} if name == "fine-tune" else {}
    recipe = Recipe.preset(name, **changes)
    assert recipe.preset_name == name
    for field, value in {**PRESETS[name], **changes}.items():
        assert getattr(recipe, field) == value, field
    untouched = set(Recipe.field_names()) - set(PRESETS[name]) - {"preset_name", *changes}
    assert {f: getattr(recipe, f) for f in untouched} == {f: getattr(Recipe(), f) for f in untouched}
    assert PRESET_DOCS[name]  # every preset is documented


def test_the_named_presets_of_the_issue_and_what_they_set():
    assert {"fast", "accurate", "small-data", "fine-tune"} <= set(PRESETS)
    assert Recipe.preset("fast") == Recipe(preset_name="fast")  # the measured defaults
    accurate = Recipe.preset("accurate")  # weight EMA measured no gain: left out (BENCHMARKS.md)
    assert accurate.ema is None and accurate.label_smoothing > 0 and not accurate.flip
    assert accurate.epochs > Recipe().epochs and "flip" not in accurate.augmentation
    small = Recipe.preset("small-data")
    assert small.train_steps and small.patience is None and small.linear_probe
    assert Recipe.preset(AUTO) == Recipe() and Recipe().preset_name == AUTO


def test_an_epoch_count_replaces_a_step_budget():
    assert Recipe.preset("small-data", epochs=3).train_steps is None
    assert Recipe.preset("small-data", epochs=3, train_steps=50).train_steps == 50
    assert Recipe.preset("small-data").replace(epochs=4).train_steps is None
    assert Recipe.preset("small-data").replace(seed=1).train_steps == PRESETS["small-data"]["train_steps"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Recipe.preset("acurate"), r"Unknown preset; Received: preset='acurate'. Did you mean: accurate"),
        (lambda: Recipe(preset_name="smalldata"), r"Did you mean: small-data"),
        (lambda: Recipe.preset("fine-tune", weights=None), r"fine-tune preset needs pretrained weights"),
        (lambda: recipes.train(recipe=Recipe.preset("fine-tune").replace(weights=None)),
         r"fine-tune preset needs pretrained weights.*Received: weights=None"),
        (lambda: Recipe(ema=1.0), r"ema must be a number in \(0, 1\) or None; Received: ema=1.0"),
        (lambda: Recipe(ema=0), r"Received: ema=0"),
        (lambda: Recipe(ema=-0.5), r"Received: ema=-0.5"),
        (lambda: Recipe(train_steps=0), r"train_steps must be an int >= 1"),
        (lambda: Recipe(epoch_passes=0), r"epoch_passes must be an int >= 1"),
    ],
)
def test_bad_presets_and_values_fail_before_anything_is_built(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------------------------------ the data-size-aware choice


def test_small_data_gets_the_small_data_preset_and_epochs_from_the_step_budget(small_data):
    assert small_data.sizes["train"] == 160 and 16 <= SMALL_DATA_PER_CLASS
    recipe, note = adapt_to_data(Recipe(), small_data)
    assert recipe.preset_name == "small-data" and recipe.patience is None
    batches = 160 // 32  # whole batches: 5, so 10 passes make an epoch of 50 steps
    assert recipe.epoch_passes == -(-MIN_EPOCH_STEPS // batches)
    assert recipe.epochs == -(-recipe.train_steps // (batches * recipe.epoch_passes))
    assert note.startswith("16 training images per class: preset small-data (")
    assert f"{recipe.train_steps} steps = {recipe.epochs} epochs of 50 steps (10 passes)" in note
    again, _ = adapt_to_data(recipe, small_data)
    assert again == recipe  # resolved once: recipe.json redoes the same run


def test_what_the_user_chose_is_kept(small_data):
    recipe, _ = adapt_to_data(Recipe(patience=3, label_smoothing=0.2), small_data)
    assert recipe.patience == 3 and recipe.label_smoothing == 0.2 and recipe.train_steps
    recipe, _ = adapt_to_data(Recipe(epochs=12), small_data)  # epochs chosen: no step budget
    assert recipe.epochs == 12 and recipe.train_steps is None and recipe.epoch_passes == 1
    recipe, _ = adapt_to_data(Recipe(), small_data, explicit={"epochs", "flip"})  # CLI flags
    assert recipe.epochs == Recipe().epochs and recipe.train_steps is None and recipe.flip
    named, note = adapt_to_data(Recipe.preset("fast"), small_data)  # a named preset stays
    assert named == Recipe.preset("fast") and note == ""


def test_large_data_gets_fast_or_fine_tune(large_data, small_data):
    recipe, note = adapt_to_data(Recipe(), large_data)
    assert recipe == Recipe(preset_name="fast") and note == "144 training images per class: preset fast"
    assert choose_preset(Recipe(weights="imagenet"), large_data) == "fine-tune"
    assert choose_preset(Recipe(weights="imagenet"), small_data) == "small-data"
    tuned, _ = adapt_to_data(Recipe(weights="imagenet"), large_data)
    assert (tuned.head_epochs, tuned.warmup_epochs) == (2, 0)  # the fine-tune preset's


# ------------------------------------------------------------------ train: printed, recorded


def _tiny_model(classes):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x), name="tiny")


def test_train_prints_and_records_the_choice(small_data, tmp_path, capsys):
    result = recipes.train(_tiny_model(10), small_data, out=tmp_path / "run", verbose=2,
                           train_steps=60)
    printed = capsys.readouterr().out
    assert "recipes: 16 training images per class: preset small-data (" in printed
    assert "60 steps = 2 epochs of 50 steps (10 passes), batches of 32" in printed
    saved = Recipe.load(tmp_path / "run" / "recipe.json")
    assert saved == result.recipe and saved.preset_name == "small-data"
    assert (saved.epochs, saved.epoch_passes, saved.train_steps) == (2, 10, 60)
    assert result.metrics["epochs"] == 2
    assert len(result.history["loss"]) == 2


# ------------------------------------------------------------------ weight EMA


class _RawWeights(keras.callbacks.Callback):
    """The raw (not averaged) kernel after every optimizer step."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_train_batch_end(self, batch, logs=None):
        self.kernels.append(keras.ops.convert_to_numpy(self.model.layers[-1].kernel).copy())


def test_ema_weights_are_what_is_validated_tested_and_saved(small_data, tmp_path):
    raw = _RawWeights()
    momentum = 0.9
    with pytest.warns(RunWarning, match=r"ema=0.9 averages over about 10 steps, more than a fifth "
                      r"of this run's 15: .* train longer, or without ema"):
        result = recipes.train(_tiny_model(10), small_data, out=tmp_path / "run", verbose=0,
                               epochs=3, ema=momentum, patience=None, callbacks=[raw], seed=1)
    # Keras' EMA: the first step's weights, then ema = m * ema + (1 - m) * w after each step.
    expected = raw.kernels[0]
    for kernel in raw.kernels[1:]:
        expected = momentum * expected + (1 - momentum) * kernel
    final = keras.ops.convert_to_numpy(result.model.layers[-1].kernel)
    assert not np.allclose(final, raw.kernels[-1], atol=1e-4)  # the raw weights differ ...
    np.testing.assert_allclose(final, expected, atol=1e-5)  # ... and the EMA is what is kept
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(saved.layers[-1].kernel), expected, atol=1e-5)
    x, y = zip(*[(xb, yb) for xb, yb in small_data.test.as_numpy_iterator()])
    accuracy = (saved.predict(np.concatenate(x), verbose=0).argmax(-1) == np.concatenate(y)).mean()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_ema_with_early_stopping_keeps_the_best_averaged_weights(small_data):
    result = recipes.train(_tiny_model(10), small_data, verbose=0, epochs=4, ema=0.5, patience=1,
                           seed=2)
    # validation ran on the averaged weights and early stopping kept the best of them:
    # re-evaluating the kept weights gives the best val_loss of the history
    scores = result.model.evaluate(small_data.validation, return_dict=True, verbose=0)
    assert scores["loss"] == pytest.approx(min(result.history["val_loss"]), rel=1e-5)


def test_a_built_model_takes_no_build_fields_from_the_preset(small_data):
    result = recipes.train(_tiny_model(10), small_data, verbose=0, train_steps=5)
    assert result.recipe.preset_name == "small-data" and result.recipe.augmentation is None
    assert result.recipe.label_smoothing == PRESETS["small-data"]["label_smoothing"]


class _Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.sizes = []

    def on_train_batch_begin(self, batch, logs=None):
        self.sizes.append(batch)


def test_the_recipe_batch_size_is_the_training_batch(small_data):
    from recipes.training import prepare_data

    loaded64 = recipes.load_data(_arrays(20), batch_size=64)
    assert prepare_data(Recipe(), loaded64)[0].batch_size == 64  # the Data's, when not chosen
    assert prepare_data(Recipe(batch_size=32), loaded64)[0].batch_size == 32  # a preset's stays
    assert prepare_data(Recipe(batch_size=64), small_data, batch_size_given=True)[0].batch_size == 64
    steps = _Steps()
    result = recipes.train(_tiny_model(10), small_data, verbose=0, epochs=1, batch_size=16,
                           callbacks=[steps], preset_name="fast")
    assert result.recipe.batch_size == 16
    assert len(steps.sizes) == 160 // 16  # re-batched from the Data's 32, whole batches only
