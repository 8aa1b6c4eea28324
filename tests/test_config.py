"""Recipe: validated at construction, JSON only, the one place defaults are decided."""

import dataclasses
import json

import numpy as np
import pytest

from recipes.config import (
    DEFAULT_LEARNING_RATES,
    PRESETS,
    PRETRAINED_LR_SCALE,
    Recipe,
)


def test_defaults_are_valid_and_round_trip_through_json(tmp_path):
    recipe = Recipe(dense_units=[64, 32], augmentation="rotation:0.1,zoom:0.2")
    assert recipe.dense_units == (64, 32)
    path = recipe.save(tmp_path / "recipe.json")
    assert Recipe.load(path) == recipe
    assert json.loads(path.read_text())["dense_units"] == [64, 32]


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("epochs", 0, "epochs must be an int >= 1; Received: epochs=0"),
        ("epochs", 2.0, "epochs must be an int >= 1; Received: epochs=2.0"),
        ("batch_size", True, "batch_size must be an int"),
        ("dropout", 1.0, r"dropout must be a number in \[0, 1\); Received: dropout=1.0"),
        ("mixup", float("inf"), "mixup must be a number >= 0; Received: mixup=inf"),
        ("learning_rate", 0.0, "learning_rate must be a number > 0 or None"),
        ("learning_rate", float("nan"), "learning_rate must be"),
        ("optimizer", "adamm", "Unknown optimizer; Received: optimizer='adamm'. Did you mean: adam"),
        ("schedule", "cosin", "Did you mean: cosine"),
        ("backbone", "resnet5", "Unknown backbone; Received: backbone='resnet5'. Did you mean: resnet50"),
        ("pooling", "mean", "Unknown pooling; Received: pooling='mean'"),
        ("alpha", 0.3, r"alpha must be one of"),
        ("unfreeze", "top:0%", "unfreeze 'top:' takes"),
        ("unfreeze", 0, "unfreeze as a layer count must be >= 1"),
        ("layer_lr_decay", 1.5, r"layer_lr_decay must be a number in \(0, 1\]"),
        ("gradual", 1, "gradual must be True or False"),
        ("augmentation", "rotaton:0.1", "Unknown augmentation 'rotaton'"),
        ("validation_split", 0.6, None),  # with test_split 0.4 below: nothing left to train on
        ("patience", -1, "patience must be an int >= 0 or None"),
    ],
)
def test_bad_values_fail_at_construction_with_one_clear_message(field, value, message):
    changes = {field: value}
    if field == "validation_split":
        changes["test_split"] = 0.4
        message = "validation_split \\+ test_split must leave training data"
    with pytest.raises(ValueError, match=message):
        Recipe(**changes)
    with pytest.raises(ValueError, match=message):
        Recipe().replace(**changes)  # replace validates too


@pytest.mark.parametrize("value", [np.zeros(3), object(), {"a": 1}])
def test_values_json_cannot_hold_are_refused(value):
    with pytest.raises(ValueError, match="must be a JSON value"):
        Recipe(augmentation=value)


def test_unknown_fields_list_the_closest():
    with pytest.raises(ValueError, match="Unknown recipe field; Received: field='epoch'. Did you mean: epochs"):
        Recipe.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="Did you mean: dropout"):
        Recipe().replace(dropuot=0.1)


def test_recipe_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Recipe().epochs = 3


def test_load_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(ValueError, match="Recipe file not found"):
        Recipe.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        Recipe.load(tmp_path / "bad.json")


@pytest.mark.parametrize("optimizer", sorted(DEFAULT_LEARNING_RATES))
def test_the_learning_rate_default_is_decided_once(optimizer):
    scratch = Recipe(optimizer=optimizer)
    pretrained = Recipe(optimizer=optimizer, weights="imagenet")
    assert scratch.peak_learning_rate == DEFAULT_LEARNING_RATES[optimizer]
    assert pretrained.peak_learning_rate == pytest.approx(
        DEFAULT_LEARNING_RATES[optimizer] * PRETRAINED_LR_SCALE
    )
    assert pretrained.phase2_learning_rate == pytest.approx(pretrained.peak_learning_rate / 10)
    explicit = pretrained.replace(learning_rate=0.02, fine_tune_learning_rate=0.003)
    assert (explicit.peak_learning_rate, explicit.phase2_learning_rate) == (0.02, 0.003)


def test_fine_tune_preset_and_plain_recipe_with_weights_share_the_head_rate():
    # The bug: fine_tune(recipe=Recipe()) trained the head at 5e-3, fine_tune() at 1e-3.
    assert Recipe.preset("fine-tune").peak_learning_rate == pytest.approx(1e-3)
    assert Recipe(weights="imagenet").peak_learning_rate == pytest.approx(1e-3)


def test_presets_apply_changes_on_top():
    recipe = Recipe.preset("fine-tune", epochs=3)
    assert recipe.epochs == 3 and recipe.head_epochs == PRESETS["fine-tune"]["head_epochs"]
    with pytest.raises(ValueError, match="Unknown preset; Received: preset='fine_tune'. Did you mean: fine-tune"):
        Recipe.preset("fine_tune")


@pytest.mark.parametrize(
    "changes,shape,expected",
    [
        ({}, (8, 8, 1), 32),  # small images from scratch: the backbone's minimum
        ({}, (224, 224, 3), 224),
        ({"weights": "imagenet"}, (8, 8, 1), 224),  # pretrained: the size the weights know
        ({"image_size": 48}, (8, 8, 1), 48),
        ({"backbone": "inception_v3"}, (28, 28, 1), 75),
    ],
)
def test_the_image_size_rule(changes, shape, expected):
    assert Recipe(**changes).image_size_for(shape) == expected


def test_warmup_leaves_one_epoch():
    assert Recipe(epochs=1, warmup_epochs=3).effective_warmup_epochs == 0
    assert Recipe(epochs=5, warmup_epochs=2).effective_warmup_epochs == 2


def test_diff_lists_changed_fields():
    assert Recipe().diff(Recipe(epochs=3, mixup=0.2)) == {"epochs": (Recipe().epochs, 3), "mixup": (0.0, 0.2)}


def test_every_field_has_cli_metadata():
    for f in dataclasses.fields(Recipe):
        assert f.metadata["help"], f.name
        assert f.metadata["kind"] in ("str", "int", "float", "bool", "ints", "policy", "auto_bool",
                                      "auto_int"), f.name
