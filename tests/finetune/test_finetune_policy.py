"""Unfreeze policies and layer-wise multipliers on real architectures (no training), the resume
decision of a fine-tune run folder, and the public names of `recipes.finetune`."""


import keras
import pytest

import recipes
from recipes import finetune as ft
from recipes.config import PRESETS
from recipes.finetune import two_phase
from recipes.run import RunFolderMismatch
from recipes.validation import parse_unfreeze_policy

# One xdist worker for this module (--dist loadgroup), so its module-scoped fixture
# (the built backbones) is made once.
pytestmark = pytest.mark.xdist_group("test_finetune_policy")


def _bn_layers(model):
    return [
        layer for layer in recipes.find_backbone(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@pytest.fixture(scope="module")
def nets():
    return {
        name: recipes.build_classifier(name, 3, image_size=32, **kw)
        for name, kw in (("resnet50", {}), ("mobilenet_v2", {"alpha": 0.35}),
                         ("efficientnet_b0", {}), ("mobilenet", {"alpha": 0.25}))
    }


def test_public_names_and_aliases():
    assert ft.FINE_TUNE_DEFAULTS is PRESETS["fine-tune"]
    assert ft.check_unfreeze_policy is parse_unfreeze_policy
    assert recipes.fine_tune is ft.fine_tune
    assert recipes.unfreeze_policy_layers is ft.unfreeze_policy_layers
    # Saved models name these classes by their registered names: they must never change.
    assert keras.saving.get_registered_name(ft.LayerwiseOptimizer) == "recipes>LayerwiseOptimizer"
    assert keras.saving.get_registered_name(ft.ScaledSchedule) == "recipes>ScaledSchedule"


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
    with pytest.raises(ValueError, match=r"Did you mean: block.*stem, block1, block2, .*block7, top"):
        select(model, "block9")


@pytest.mark.parametrize(
    "policy, match",
    [
        ("conv9", r"Unknown block of mobilenet; Received: unfreeze='conv9'.*Allowed: 1, 2, 3, .*13"),
        ("20", r"write 'top:20'"),
        ("re:^nothing_like_this", "matches no layer"),
        ("top:0", "top:"),
        ("top:150%", "percentage"),
        ("re:(", "regex is invalid"),
        (0, ">= 1"),
        (2.5, "unfreeze must be"),
        (True, "unfreeze must be"),
    ],
)
def test_bad_policies_name_what_is_allowed(policy, match, nets):
    with pytest.raises(ValueError, match=match):
        ft.unfreeze_policy_layers(nets["mobilenet"], policy)


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
    with pytest.raises(ValueError, match=r"layer_lr_decay must be a number in \(0, 1\]"):
        ft.layer_lr_multipliers(nets["resnet50"], 0.0)


def test_layerwise_optimizer_routes_each_block_to_its_rate(nets):
    model = nets["mobilenet"]
    opt = ft.layerwise_optimizer(keras.optimizers.Adam(1e-3), model, 0.5, policy="12")
    opt.build(model.trainable_variables)
    head = opt.optimizers[opt.head_index]
    rates = sorted(float(keras.ops.convert_to_numpy(o.learning_rate)) for o in opt.optimizers)
    assert rates == pytest.approx([2.5e-4, 5e-4, 1e-3])
    assert float(keras.ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(1e-3)  # the head's
    assert float(keras.ops.convert_to_numpy(head.learning_rate)) == pytest.approx(1e-3)


def _write_phase1(run):
    for name in ("metrics.json", "model.keras"):
        run.sub("phase1").write_text(name, "{}")


def test_a_rerun_reuses_phase1_only_for_the_same_unfinished_recipe(tmp_path):
    start = two_phase._start_run
    run = recipes.RunFolder(tmp_path)
    recipe = recipes.Recipe.preset("fine-tune", backbone="mobilenet", head_epochs=1)
    _write_phase1(run)
    run.save_recipe(recipe)
    assert start(run, recipe) is True  # same recipe, not finished: phase 1 is reused
    with pytest.raises(RunFolderMismatch, match="unfreeze: was 'top:30%', now 'all'"):
        start(run, recipe.replace(unfreeze="all"))  # another run is refused, never mixed in
    assert run.sub("phase1").path.exists()  # ... and nothing of it was removed
    assert start(run, recipe.replace(unfreeze="all"), overwrite=True) is False  # replaced on request
    assert not run.sub("phase1").path.exists()
    _write_phase1(run)
    run.save_metrics({"test_accuracy": 1.0})  # finished: the same command trains again
    assert start(run, recipe.replace(unfreeze="all")) is False
    assert not run.metrics_path.exists() and run.recipe().unfreeze == "all"
