"""fine_tune end to end: phases, BatchNorm, layer-wise LR, gradual unfreezing, run folder, saving,
the default learning rates, explicit None overrides, errors before training.

Every run uses MobileNet (alpha 0.25) at 32 px on 96 real digits, one epoch per phase, with
weights from a file this module writes through `save_backbone`, never ImageNet (except the
offline-error test).
"""

import json
from unittest import mock

import keras
import numpy as np
import pytest

import recipes
from recipes import compat, plotting
from recipes import finetune as ft
from recipes.finetune import two_phase

# One xdist worker for this module (--dist loadgroup), so its module-scoped fixture
# (the fine-tuned run) is made once.
pytestmark = pytest.mark.xdist_group("test_finetune_run")

BLOCK_12_13 = {"conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"}
TINY = dict(alpha=0.25, image_size=32, schedule="constant", verbose=0)


def _bn_layers(model):
    return [
        layer for layer in recipes.find_backbone(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


class Snapshots(keras.callbacks.Callback):
    """Every weight, by layer, at the start and end of each fit and after each epoch."""

    def __init__(self):
        super().__init__()
        self.taken = []

    def _take(self, tag):
        by_layer = {}
        for layer in compat.flatten_layers(self.model):
            if isinstance(layer, keras.Model) or compat.child_layers(layer):
                continue  # containers (the backbone, the Backbone layer) repeat their leaves
            for w in layer.weights:
                by_layer.setdefault(layer.name, []).append(np.array(w.numpy()))
        self.taken.append((tag, by_layer))

    def on_train_begin(self, logs=None):
        self._take("begin")

    def on_epoch_end(self, epoch, logs=None):
        self._take(epoch)

    def on_train_end(self, logs=None):
        self._take("end")

    def fits(self):
        """[(begin, end)] per fit call."""
        begins = [s for tag, s in self.taken if tag == "begin"]
        ends = [s for tag, s in self.taken if tag == "end"]
        return list(zip(begins, ends))


def changed_layers(before, after):
    return {
        name for name in before
        if any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))
    }


@pytest.fixture(scope="module")
def data(digits_small):
    x, y = digits_small
    return recipes.load_data((x[:96], y[:96]), batch_size=32, validation_split=0.2, test_split=0.2)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, data):
    """A 'pretrained' backbone file. Fresh random weights with BN statistics at their init values
    give all-zero features (no gradient reaches the backbone), so the statistics are first set
    from data, as pretraining would have left them: one training-mode call with BN momentum 0
    makes the moving statistics those of a batch (eager: no graph to trace)."""
    source = recipes.build_classifier(
        "mobilenet", 10, image_size=32, alpha=0.25, input_shape=data.input_shape, bn_momentum=0.0
    )
    source(next(iter(data.train))[0], training=True)
    return recipes.save_backbone(source, tmp_path_factory.mktemp("bb") / "digits.weights.h5")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data, weights_file):
    """One fine-tune run from the preset: 1 head epoch, 1 fine-tune epoch, blocks 12-13, layer LR
    decay 0.5."""
    snaps = Snapshots()
    out = tmp_path_factory.mktemp("run") / "ft"
    with mock.patch.object(plotting, "plot_curves", wraps=plotting.plot_curves) as plot:
        result = ft.fine_tune(
            "mobilenet", data, weights=str(weights_file), head_epochs=1, epochs=1, unfreeze="12",
            layer_lr_decay=0.5, callbacks=[snaps], out=out, preset_name="fine-tune", **TINY,
        )  # the preset named: 57 training images would choose small-data's fields
    return result, snaps, out, plot.call_args_list


def test_phase1_trains_only_the_head_from_the_file_weights(run, weights_file):
    result, snaps, _, _ = run
    (begin, end), _ = snaps.fits()
    backbone = recipes.find_backbone(result.model)
    names = {layer.name for layer in backbone.layers if layer.weights}
    assert changed_layers(begin, end) == {"logits"}
    reference = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25,
                                         weights=str(weights_file))
    for layer in recipes.find_backbone(reference).layers:
        if layer.name in names:
            for a, b in zip(layer.get_weights(), begin[layer.name]):
                np.testing.assert_array_equal(a, b)


def test_phase2_changes_exactly_the_chosen_layers(run):
    result, snaps, _, _ = run
    _, (begin, end) = snaps.fits()
    assert ft.unfreeze_policy_layers(result.model, "12") == [
        "conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"
    ]
    assert changed_layers(begin, end) == BLOCK_12_13 | {"logits"}
    assert result.metrics["unfrozen_layers"] == 4


def test_batchnorm_never_changes(run):
    result, snaps, _, _ = run
    first, last = snaps.taken[0][1], snaps.taken[-1][1]
    bns = _bn_layers(result.model)
    assert len(bns) == 27
    for bn in bns:
        assert not bn.trainable
        # gamma, beta, moving mean and variance: identical across both phases
        for a, b in zip(first[bn.name], last[bn.name]):
            np.testing.assert_array_equal(a, b)


def test_layerwise_lr_gives_deeper_layers_smaller_updates(run, data):
    result, snaps, _, _ = run
    _, (begin, end) = snaps.fits()
    opt = result.model.optimizer
    assert isinstance(opt, ft.LayerwiseOptimizer)
    rates = sorted(float(keras.ops.convert_to_numpy(o.learning_rate)) for o in opt.optimizers)
    np.testing.assert_allclose(rates, [2.5e-5, 5e-5, 1e-4], rtol=1e-6)  # block 12, 13, head

    # An Adam step moves each weight by at most ~its learning rate (1.0013x at step 2), and by
    # about that much wherever the gradient keeps its sign: the largest move of a layer shows
    # the rate it was trained at.
    steps = data.sizes["train"] // data.batch_size  # whole batches only
    biggest = {n: np.max(np.abs(end[n][0] - begin[n][0])) for n in BLOCK_12_13}
    lr = {"12": 2.5e-5, "13": 5e-5}
    for name, move in biggest.items():
        assert move <= 1.01 * steps * lr[name[-2:]], name
    deep = max(biggest["conv_dw_12"], biggest["conv_pw_12"])
    top = max(biggest["conv_dw_13"], biggest["conv_pw_13"])
    assert deep > 0.5 * steps * lr["12"]  # trained, at its own (smaller) rate
    assert top > 1.01 * steps * lr["12"]  # more than block 12's rate allows


def test_one_history_and_one_run_folder(run):
    result, _, out, plot_calls = run
    assert result.run_dir == out
    assert result.metrics["phase2_start_epoch"] == 1
    assert result.metrics["epochs"] == 2 and len(result.history["loss"]) == 2
    assert "test_accuracy" in result.metrics and "head_test_accuracy" in result.metrics
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 3
    saved = recipes.Recipe.load(out / "recipe.json")
    assert saved == result.recipe
    assert (saved.unfreeze, saved.head_epochs, saved.epochs, saved.layer_lr_decay) == ("12", 1, 1, 0.5)
    assert (saved.peak_learning_rate, saved.phase2_learning_rate) == pytest.approx((1e-3, 1e-4))
    assert json.loads((out / "metrics.json").read_text())["phase2_start_epoch"] == 1
    for name in ("model.keras", "curves.png", "phase1/history.csv", "phase2/history.csv"):
        assert (out / name).is_file(), name
    for name in ("phase1/model.keras", "phase2/model.keras", "backup"):
        assert not (out / name).exists(), name  # duplicates and resume state are gone
    final = [c for c in plot_calls if c.args[1] == out / "curves.png"]
    assert final and final[-1].kwargs["marks"] == {1: "fine-tuning starts"}


def test_fine_tuned_model_reloads_with_identical_predictions(run, data):
    result, _, out, _ = run
    loaded = keras.models.load_model(out / "model.keras")
    x = next(iter(data.test))[0]
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), result.model.predict(x, verbose=0)
    )
    # model.keras is the portable inference model: core Keras only, no training state (a killed
    # run resumes from backup/, not from model.keras).
    assert not loaded.compiled
    assert recipes.portable.custom_objects_in(loaded) == []


def test_save_backbone_round_trip_after_fine_tuning(run, tmp_path):
    result, _, _, _ = run
    path = recipes.save_backbone(result.model, tmp_path / "tuned.weights.h5")
    again = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, weights=str(path))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(recipes.find_backbone(again)(x, training=False)),
        keras.ops.convert_to_numpy(recipes.find_backbone(result.model)(x, training=False)),
    )


class _Stop(Exception):
    pass


def _phase1_recipe(*args, **kwargs):
    """The recipe `fine_tune` hands to phase 1's `train` (stopped there: nothing trains)."""
    module = two_phase
    with mock.patch.object(module, "train", side_effect=_Stop) as spy, pytest.raises(_Stop):
        ft.fine_tune(*args, **kwargs)
    return spy.call_args.kwargs["recipe"]


def test_a_recipe_and_the_preset_train_the_head_at_the_same_rate(data, weights_file):
    """`fine_tune(recipe=Recipe(...))` and `fine_tune(...)` decide the rate in one place, and an
    explicit None keyword (`patience=None`, `augmentation=None`) is honoured, not dropped."""
    fields = dict(backbone="mobilenet", weights=str(weights_file), head_epochs=1, epochs=1,
                  unfreeze="12", alpha=0.25, image_size=32, preset_name="fine-tune")
    preset = _phase1_recipe(data=data, verbose=0, **fields)
    recipe = recipes.Recipe(**fields, augmentation="light")
    given = _phase1_recipe(data=data, recipe=recipe, patience=None, augmentation=None, verbose=0)
    assert given.peak_learning_rate == preset.peak_learning_rate == pytest.approx(1e-3)
    assert given.phase2_learning_rate == preset.phase2_learning_rate == pytest.approx(1e-4)
    assert (given.patience, given.augmentation) == (None, None)
    assert (preset.patience, recipe.patience) == (5, 5)  # what dropping None would have kept
    assert given.epochs == preset.epochs == 1  # phase 1 runs head_epochs


def test_the_head_trains_at_the_recorded_rate(run):
    result, _, out, _ = run
    assert result.history["learning_rate"][0] == pytest.approx(1e-3)
    assert recipes.RunFolder(out).sub("phase1").history()["learning_rate"] == pytest.approx([1e-3])


def test_gradual_unfreezes_one_block_per_epoch_on_a_built_model(data, weights_file):
    model = recipes.build_classifier(
        "mobilenet", data.num_classes, image_size=32, alpha=0.25, weights=str(weights_file),
        input_shape=data.input_shape, trainable_backbone=False,
    )
    snaps = Snapshots()
    # With layer-wise LR too: the optimizer then gets gradients for a subset of its variables.
    result = ft.fine_tune(
        model, data, head_epochs=0, epochs=2, unfreeze="12", gradual=True, layer_lr_decay=0.5,
        schedule="constant", callbacks=[snaps], verbose=0, preset_name="fine-tune",
    )
    assert isinstance(result.model.optimizer, ft.LayerwiseOptimizer)
    assert result.metrics["phase2_start_epoch"] == 0 and "head_test_accuracy" not in result.metrics
    by_tag = snaps.taken
    epochs = [s for tag, s in by_tag if isinstance(tag, int)]
    assert changed_layers(by_tag[0][1], epochs[0]) == {"conv_dw_13", "conv_pw_13", "logits"}
    assert changed_layers(epochs[0], epochs[1]) == BLOCK_12_13 | {"logits"}
    # A built model brings its own weights (recorded as none) at the pretrained default rate.
    assert result.recipe.weights is None and result.recipe.backbone == "mobilenet"
    assert result.recipe.phase2_learning_rate == pytest.approx(1e-4)


def test_imagenet_offline_fails_before_training(keras_home, data, tmp_path):
    snaps = Snapshots()
    with pytest.raises(recipes.WeightsUnavailableError, match="mobilenet_2_5_224_tf_no_top.h5"):
        ft.fine_tune("mobilenet", data, alpha=0.25, image_size=224, callbacks=[snaps],
                     out=tmp_path / "run", verbose=0)  # weights default: "imagenet"
    assert snaps.taken == []
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"unfreeze": "conv9"}, "Unknown block of mobilenet"),  # needs the model
        ({"unfreeze": "re:^nothing_like_this"}, "matches no layer"),  # needs the model
        ({"gradual": True, "unfreeze": "none"}, "gradual=True needs"),  # needs the model
        ({"unfreeze": "top:0"}, "top:"),
        ({"layer_lr_decay": 1.5}, "layer_lr_decay"),
        ({"fine_tune_learning_rate": -1.0}, "fine_tune_learning_rate"),
        ({"epochs": 0}, "epochs"),
        ({"pateince": 3}, "Did you mean: patience"),
    ],
)
def test_bad_arguments_fail_before_training(kwargs, match, data, weights_file, tmp_path):
    snaps = Snapshots()
    with pytest.raises(ValueError, match=match):
        ft.fine_tune("mobilenet", data, weights=str(weights_file), callbacks=[snaps],
                     out=tmp_path / "run", **TINY, **kwargs)
    assert snaps.taken == [] and not (tmp_path / "run").exists()


def test_built_model_rejects_weights_and_build_options(data):
    model = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25)
    with pytest.raises(ValueError, match="weights only applies"):
        ft.fine_tune(model, data, weights="imagenet")
    with pytest.raises(ValueError, match="Build options"):
        ft.fine_tune(model, data, image_size=64)


class _KillSecondFit(keras.callbacks.Callback):
    """Kills the run at the start of phase 2's second epoch (after its backup of epoch 1)."""

    def __init__(self):
        super().__init__()
        self.fits = 0

    def on_train_begin(self, logs=None):
        self.fits += 1

    def on_epoch_begin(self, epoch, logs=None):
        if self.fits == 2 and epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.slow  # ~16 s: a killed fine-tune and its resumption
def test_a_killed_run_resumes_without_repeating_phase1(data, weights_file, tmp_path):
    args = dict(weights=str(weights_file), head_epochs=1, epochs=2, unfreeze="12",
                out=tmp_path / "ft", **TINY)
    with pytest.raises(KeyboardInterrupt):
        ft.fine_tune("mobilenet", data, callbacks=[_KillSecondFit()], **args)
    snaps = Snapshots()
    result = ft.fine_tune("mobilenet", data, callbacks=[snaps], **args)
    assert len(snaps.fits()) == 1  # phase 1 was finished: only phase 2 ran
    assert [tag for tag, _ in snaps.taken] == ["begin", 1, "end"]  # from its backup: epoch 2 only
    assert len(result.history["loss"]) == 3 and result.metrics["phase2_start_epoch"] == 1
    assert len(recipes.RunFolder(tmp_path / "ft").history()["loss"]) == 3
