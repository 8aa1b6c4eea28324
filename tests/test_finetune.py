"""fine_tune: phases, unfreeze policies, BatchNorm, layer-wise LR, gradual unfreezing, saving.

Every run uses MobileNet (alpha 0.25) at 32 px on 96 real digits with weights from a file this
module writes through `save_backbone`, never ImageNet (except the offline-error test).
"""

import json
from unittest import mock

import keras
import numpy as np
import pytest

import recipes
from recipes import finetune as ft

BLOCK_12_13 = {"conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"}


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
        for layer in self.model._flatten_layers(include_self=False, recursive=True):
            if isinstance(layer, keras.Model) or getattr(layer, "_layers", None):
                continue  # containers (the backbone, InferenceModeBackbone) repeat their leaves
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
    give all-zero features (no gradient reaches the backbone), so the statistics are first
    recomputed on data, as pretraining would have left them."""
    from callbacks import recompute_bn_statistics

    source = recipes.build_classifier(
        "mobilenet", 10, image_size=32, alpha=0.25, input_shape=data.input_shape
    )
    recompute_bn_statistics(source, data.train, num_batches=2)
    return recipes.save_backbone(source, tmp_path_factory.mktemp("bb") / "digits.weights.h5")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data, weights_file):
    """One fine-tune run: 1 head epoch, 1 fine-tune epoch, blocks 12-13, layer LR decay 0.5."""
    snaps = Snapshots()
    out = tmp_path_factory.mktemp("run") / "ft"
    with mock.patch.object(recipes.training, "plot_curves", wraps=recipes.training.plot_curves) as plot:
        result = ft.fine_tune(
            "mobilenet", data, weights=str(weights_file), alpha=0.25, image_size=32,
            head_epochs=1, epochs=1, unfreeze="12", layer_lr_decay=0.5, schedule="constant",
            callbacks=[snaps], out=out, verbose=0,
        )
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
    steps = data.steps_per_epoch
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
    saved = json.loads((out / "recipe.json").read_text())
    assert (saved["unfreeze"], saved["head_epochs"], saved["epochs"]) == ("12", 1, 1)
    assert saved["layer_lr_decay"] == 0.5 and saved["fine_tune_learning_rate"] == pytest.approx(1e-4)
    assert json.loads((out / "metrics.json").read_text())["phase2_start_epoch"] == 1
    for name in ("model.keras", "curves.png", "phase1/history.csv", "phase2/history.csv"):
        assert (out / name).is_file(), name
    assert not (out / "phase1" / "model.keras").exists()
    final = [c for c in plot_calls if c.args[1] == out / "curves.png"]
    assert final and final[-1].kwargs["marks"] == {1: "fine-tuning starts"}


def test_fine_tuned_model_reloads_with_identical_predictions(run, data):
    result, _, out, _ = run
    loaded = keras.models.load_model(out / "model.keras")
    x = next(iter(data.test))[0]
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), result.model.predict(x, verbose=0)
    )
    assert isinstance(loaded.optimizer, ft.LayerwiseOptimizer)  # saved with its state
    for a, b in zip(loaded.optimizer.variables, result.model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_save_backbone_round_trip_after_fine_tuning(run, tmp_path):
    result, _, _, _ = run
    path = recipes.save_backbone(result.model, tmp_path / "tuned.weights.h5")
    again = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, weights=str(path))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(recipes.find_backbone(again)(x, training=False)),
        keras.ops.convert_to_numpy(recipes.find_backbone(result.model)(x, training=False)),
    )


def test_gradual_unfreezes_one_block_per_epoch(data, weights_file):
    snaps = Snapshots()
    # With layer-wise LR too: the optimizer then gets gradients for a subset of its variables.
    result = ft.fine_tune(
        "mobilenet", data, weights=str(weights_file), alpha=0.25, image_size=32, head_epochs=0,
        epochs=2, unfreeze="12", gradual=True, layer_lr_decay=0.5, schedule="constant",
        callbacks=[snaps], verbose=0,
    )
    assert isinstance(result.model.optimizer, ft.LayerwiseOptimizer)
    assert result.metrics["phase2_start_epoch"] == 0 and "head_test_accuracy" not in result.metrics
    by_tag = snaps.taken
    epochs = [s for tag, s in by_tag if isinstance(tag, int)]
    assert changed_layers(by_tag[0][1], epochs[0]) == {"conv_dw_13", "conv_pw_13", "logits"}
    assert changed_layers(epochs[0], epochs[1]) == BLOCK_12_13 | {"logits"}


def test_imagenet_offline_fails_before_training(keras_home, data, tmp_path):
    snaps = Snapshots()
    with pytest.raises(recipes.WeightsUnavailableError, match="mobilenet_2_5_224_tf_no_top.h5"):
        ft.fine_tune("mobilenet", data, alpha=0.25, image_size=224, callbacks=[snaps],
                     out=tmp_path / "run", verbose=0)  # weights default: "imagenet"
    assert snaps.taken == []
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "policy, match",
    [
        ("conv9", r"Unknown block 'conv9' for mobilenet.*Blocks of mobilenet.*1, 2, 3.*13"),
        ("20", r"top:20"),
        ("top:0", "top:"),
        ("top:150%", "percentage"),
        ("re:(", "regex is invalid"),
        ("re:^nothing_like_this", "matches no layer"),
        (0, ">= 1"),
        (2.5, "unfreeze must be"),
        (True, "unfreeze must be"),
    ],
)
def test_bad_unfreeze_policy_errors_before_training(policy, match, data, weights_file):
    snaps = Snapshots()
    with pytest.raises(ValueError, match=match):
        ft.fine_tune("mobilenet", data, weights=str(weights_file), alpha=0.25, image_size=32,
                     unfreeze=policy, callbacks=[snaps], verbose=0)
    assert snaps.taken == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer_lr_decay": 1.5}, "layer_lr_decay"),
        ({"gradual": True, "unfreeze": "none"}, "gradual=True needs"),
        ({"fine_tune_learning_rate": -1.0}, "fine_tune_learning_rate"),
        ({"weights": None, "epochs": 0}, "epochs"),
    ],
)
def test_bad_fine_tune_arguments(kwargs, match, data, weights_file):
    kwargs = {"weights": str(weights_file), **kwargs}
    with pytest.raises(ValueError, match=match):
        ft.fine_tune("mobilenet", data, alpha=0.25, image_size=32, verbose=0, **kwargs)


def test_built_model_rejects_weights_and_build_options(data):
    model = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25)
    with pytest.raises(ValueError, match="weights only applies"):
        ft.fine_tune(model, data, weights="imagenet")
    with pytest.raises(ValueError, match="Build options"):
        ft.fine_tune(model, data, image_size=64)


# -- policy selection on real architectures (no training) ----------------------------------


@pytest.fixture(scope="module")
def nets():
    return {
        name: recipes.build_classifier(name, 3, image_size=32, **kw)
        for name, kw in (("resnet50", {}), ("mobilenet_v2", {"alpha": 0.35}), ("efficientnet_b0", {}))
    }


def test_resnet50_policies(nets):
    model = nets["resnet50"]
    conv5 = {f"conv5_block{b}_{i}_conv" for b in (1, 2, 3) for i in (1, 2, 3)} | {"conv5_block1_0_conv"}
    select = ft.unfreeze_policy_layers
    assert set(select(model, "conv5")) == conv5 and len(select(model, "conv5")) == 10
    assert select(model, "re:^conv5_") == select(model, "conv5")
    assert len(select(model, "conv4")) == 10 + 6 * 3 + 1
    every = select(model, "all")
    assert len(every) == 53 and every[0] == "conv1_conv"  # ResNet-50: 53 convolutions
    assert select(model, 3) == ["conv5_block3_1_conv", "conv5_block3_2_conv", "conv5_block3_3_conv"]
    assert select(model, "top:3") == select(model, 3)
    assert select(model, "top:10%") == every[-6:]  # 5.3 rounded up
    assert select(model, "none") == []


def test_mobilenet_v2_policies(nets):
    model = nets["mobilenet_v2"]
    select = ft.unfreeze_policy_layers
    assert select(model, "block_16") == ["block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"]
    every = select(model, "all")
    assert len(every) == 52 and every[:3] == ["Conv1", "expanded_conv_depthwise", "expanded_conv_project"]
    assert select(model, "top:25%") == every[-13:]
    assert select(model, "re:_depthwise$") == [n for n in every if n.endswith("_depthwise")]


def test_efficientnet_b0_policies(nets):
    model = nets["efficientnet_b0"]
    select = ft.unfreeze_policy_layers
    chosen = select(model, "block6")
    assert chosen[0] == "block6a_expand_conv" and chosen[-1] == "top_conv"
    assert all(n.startswith(("block6", "block7", "top")) for n in chosen)
    every = select(model, "all")
    assert every[0] == "stem_conv" and "normalization" not in every  # statistics, not weights
    expected = [n for n in every if n.startswith(("block6", "block7", "top"))]
    assert chosen == expected and "block6a_se_reduce" in chosen
    with pytest.raises(ValueError, match=r"stem, block1, block2, .*block7, top"):
        select(model, "block9")


def test_apply_policy_keeps_bn_frozen_and_head_trainable(nets):
    model = nets["efficientnet_b0"]
    try:
        chosen = ft.apply_unfreeze_policy(model, "block7")
        trainable = {v.path.split("/")[0] for v in model.trainable_variables}
        assert trainable == set(chosen) | {"logits"}
        assert all(not bn.trainable for bn in _bn_layers(model))
        assert ft.apply_unfreeze_policy(model, "none") == []
        assert {v.path.split("/")[0] for v in model.trainable_variables} == {"logits"}
    finally:
        ft.apply_unfreeze_policy(model, "all")


def test_layer_lr_multipliers_follow_blocks(nets):
    m = ft.layer_lr_multipliers(nets["resnet50"], 0.5, "conv4")
    assert m["conv5_block3_3_conv"] == 0.5 and m["conv4_block6_3_conv"] == 0.25
    assert set(m) == set(ft.unfreeze_policy_layers(nets["resnet50"], "conv4"))
    with pytest.raises(ValueError, match="layer_lr_decay"):
        ft.layer_lr_multipliers(nets["resnet50"], 0.0)


def test_resume_reuses_a_finished_phase1_only_for_the_same_recipe(tmp_path):
    recipe = recipes.Recipe(backbone="mobilenet", head_epochs=1)
    phases = (tmp_path / "phase1", tmp_path / "phase2")
    for name in ("metrics.json", "model.keras"):
        phases[0].mkdir(exist_ok=True)
        (phases[0] / name).write_text("{}")
    recipe.save(tmp_path / "recipe.json")
    assert ft._prepare_run_dir(tmp_path, recipe, phases) is True
    assert ft._prepare_run_dir(tmp_path, recipe.replace(unfreeze="all"), phases) is False
    assert not phases[0].exists()
