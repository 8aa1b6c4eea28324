"""recipes.tuning without training: the search-space language, its defaults (from the Recipe),
argument checks, the objective's direction, which errors fail a trial, and the retrain data."""

import keras_tuner
import pytest

import recipes
from recipes.config import Recipe
from recipes.registry import backbone_info
from recipes.tuning import SEARCHABLE_FIELDS, RecipeHyperModel, resolve_search_space, search
from recipes.tuning.hypermodel import objective_direction
from recipes.tuning.space import _Param, base_recipe, resolve
from recipes.tuning.splits import rebatch, with_validation_in_train


@pytest.fixture(scope="module")
def data():
    return recipes.load_data("digits", batch_size=64)


def test_default_space_has_a_default_for_everything(data):
    resolved = resolve_search_space(data, backbones=["mobilenet", "mobilenet_v3_small"])
    assert resolved["backbone"] == {"values": ["mobilenet", "mobilenet_v3_small"], "default": "mobilenet"}
    # 8x8 digits from scratch: small sizes, per backbone (conditional on it)
    assert resolved["image_size:mobilenet"] == {"values": [32, 64], "default": 32}
    assert resolved["learning_rate"]["sampling"] == "log"
    for key in ("optimizer", "dropout", "l2", "augmentation", "label_smoothing", "schedule", "batch_size"):
        assert "default" in resolved[key], key
    assert resolved["augmentation"]["values"] == [None, "light", "medium"]
    assert resolved["batch_size"] == {"values": [32, 64, 128], "default": 64}  # the data's
    assert "unfreeze" not in resolved  # only when fine-tuning
    assert set(SEARCHABLE_FIELDS) >= {k.split(":")[0] for k in resolved} - {"backbone"}


def test_defaults_come_from_the_recipe(data):
    """The default learning rate is `Recipe.peak_learning_rate`, the default image size
    `Recipe.image_size_for`, from scratch and pretrained alike."""
    scratch = resolve_search_space(data, backbones="mobilenet")
    assert scratch["learning_rate"]["default"] == Recipe().peak_learning_rate == 5e-3
    assert scratch["image_size:mobilenet"]["default"] == Recipe(backbone="mobilenet").image_size_for(
        data.input_shape
    )
    tuned = resolve_search_space(data, backbones="mobilenet", weights="imagenet")
    pretrained = Recipe.preset("fine-tune", backbone="mobilenet")
    assert tuned["learning_rate"]["default"] == pretrained.peak_learning_rate == pytest.approx(1e-3)
    sizes = tuned["image_size:mobilenet"]
    assert sizes["default"] == pretrained.image_size_for(data.input_shape) == 224
    assert set(backbone_info("mobilenet").weight_sizes) <= set(sizes["values"])
    assert tuned["unfreeze"]["default"] == pretrained.unfreeze
    # A fixed optimizer moves the learning rate's default with it.
    sgd = resolve_search_space(data, backbones="mobilenet", optimizer="sgd")
    assert sgd["learning_rate"]["default"] == Recipe(optimizer="sgd").peak_learning_rate


def test_search_space_overrides_and_fixed_fields(data):
    resolved = resolve_search_space(
        data, backbones="mobilenet", alpha=0.25,
        search_space={"dropout": [0.0, 0.2, 0.4], "learning_rate": (1e-4, 1e-2, "log"),
                      "optimizer": "adam", "dense_units": [(), (64,)]},
        l2=1e-4,
    )
    assert resolved["dropout"] == {"values": [0.0, 0.2, 0.4], "default": 0.2}
    assert resolved["learning_rate"] == {"min": 1e-4, "max": 1e-2, "sampling": "log", "default": 5e-3}
    assert resolved["optimizer"] == {"value": "adam"}
    assert resolved["dense_units"]["values"] == [[], [64]]
    assert "l2" not in resolved and "alpha" not in resolved  # fixed for every trial


def test_a_fixed_alpha_applies_to_the_backbones_that_have_one(data):
    base, _ = base_recipe(data, ["resnet50", "mobilenet"], {"alpha": 0.25}, None, seed=0, max_epochs=1)
    space = resolve(data, ["resnet50", "mobilenet"], {}, {"alpha": 0.25}, base)
    hm = RecipeHyperModel(data, space, base)
    assert hm.recipe({"backbone": "mobilenet"}).alpha == 0.25
    assert hm.recipe({"backbone": "resnet50"}).alpha is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(search_space={"dropuot": [0.1]}), r"Unknown search-space key; Received: key='dropuot'\. Did you mean: dropout"),
        (dict(dropuot=0.1), r"Did you mean: dropout"),
        (dict(search_space={"optimizer": ["adam", "adamm"]}), r"adamm.*Did you mean: adam"),
        (dict(search_space={"unfreeze": ["all"]}), r"only when fine-tuning"),
        (dict(weights="imagenet", search_space={"unfreeze": ["all", "top:0%"]}), r"unfreeze 'top:'"),
        (dict(epochs=3), r"max_epochs"),
        (dict(search_space={"backbone": ["resnet50"]}), r"backbones="),
        (dict(search_space={"image_size": [16, 32]}), r"image_size must be an int >= 32 for mobilenet"),
        (dict(search_space={"learning_rate": (0, 1, "log")}), r"min > 0"),
        (dict(search_space={"dropout": {"min": 0.1}}), r"must be a list"),
        (dict(search_space={"dropout": (0.0, 1.5)}), r"dropout must be a number in \[0, 1\)"),
        (dict(dropout=0.3, search_space={"dropout": [0.1, 0.2]}), r"both fixed"),
        (dict(alpha=0.3), r"alpha must be one of"),
        (dict(backbones="resnet50", alpha=0.25), r"resnet50 has no width multiplier"),
    ],
)
def test_search_space_errors(data, kwargs, message):
    kwargs = {"backbones": "mobilenet", **kwargs}
    with pytest.raises(ValueError, match=message):
        resolve_search_space(data, **kwargs)


def test_bad_search_arguments(data, tmp_path):
    with pytest.raises(ValueError, match="Did you mean: random"):
        search(data, tuner="randon", directory=tmp_path)
    with pytest.raises(ValueError, match="Unknown backbone"):
        search(data, backbones="mobilenet_v9", directory=tmp_path)
    with pytest.raises(ValueError, match="callbacks cannot reach"):
        search(data, isolate=True, callbacks=[object()], directory=tmp_path)
    with pytest.raises(ValueError, match="max_epochs must be an int >= 1"):
        search(data, max_epochs=0, directory=tmp_path)
    with pytest.raises(ValueError, match="Cannot tell whether the objective is minimized"):
        search(data, objective="val_sharpness", directory=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_objective_direction_is_keras_tuners():
    # A name-based guess ("loss"/"error" means min) gets val_mae wrong; KerasTuner's does not.
    assert objective_direction("val_mae") == "min"
    assert objective_direction("val_accuracy") == "max"
    assert objective_direction("val_loss") == "min"
    assert objective_direction("val_top5_accuracy") == "max"  # compile_classifier's own metric
    with pytest.raises(ValueError, match="objective='val_sharpness'"):
        objective_direction("val_sharpness")


@pytest.mark.filterwarnings("ignore:The optimal value found")  # the GP fits two points
def test_bayesian_oracle_proposes_recipes_in_the_default_space(data, tmp_path):
    """The Gaussian process vectorizes the whole default space (conditional image sizes, None
    choices) and its proposals decode into valid recipes; no training needed."""
    from recipes.tuning.search import _tuner_class

    backbones = ["mobilenet", "mobilenet_v3_small"]
    base, _ = base_recipe(data, backbones, {}, None, seed=0, max_epochs=1)
    hm = RecipeHyperModel(data, resolve(data, backbones, {}, {}, base), base)
    tuner = _tuner_class("bayesian")(
        hm, objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=4,
        num_initial_points=2, seed=1, directory=str(tmp_path), project_name="gp",
    )
    oracle = tuner.oracle
    for score in (0.3, 0.6):  # the random initial points
        trial = oracle.create_trial("tuner0")
        oracle.update_trial(trial.trial_id, {"val_accuracy": score})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    proposed = oracle.create_trial("tuner0")
    assert proposed.status == "RUNNING"
    recipe = hm.recipe(proposed.hyperparameters.values)
    assert recipe.backbone in backbones and recipe.image_size in (32, 64)
    assert 1e-4 <= recipe.learning_rate <= 0.3


def _hypermodel(data, **params):
    base, _ = base_recipe(data, ["mobilenet"], {"alpha": 0.25}, None, seed=0, max_epochs=1)
    space = {"backbone": _Param("backbone", "fixed", default="mobilenet"), **params}
    return RecipeHyperModel(data, space, base, objective="val_loss")


def test_values_that_make_no_recipe_fail_the_trial_before_training(data):
    hm = _hypermodel(data, dropout=_Param("dropout", "fixed", default=1.5))
    assert hm.direction == "min"
    hp = keras_tuner.HyperParameters()
    with pytest.raises(keras_tuner.errors.FailedTrialError, match=r"Invalid recipe: dropout must be"):
        hm.build(hp)
    with pytest.raises(keras_tuner.errors.FailedTrialError, match=r"Invalid recipe: dropout must be"):
        hm.fit(hp, model=None)


def test_retrain_data_moves_validation_into_training(data):
    full = with_validation_in_train(data, seed=0)
    n = data.sizes["train"] + data.sizes["validation"]
    assert sum(int(len(y)) for _, y in full.train) == n == full.sizes["train"]
    assert full.validation is None and full.test is data.test
    assert full.steps_per_epoch == -(-n // data.batch_size)
    small = rebatch(data, 32)
    assert small.batch_size == 32 and small.steps_per_epoch == -(-data.sizes["train"] // 32)
    assert max(int(len(y)) for _, y in small.train_pipeline(1)) == 32
    assert rebatch(data, data.batch_size) is data


def test_cli_tune_errors(tmp_path, capsys):
    from recipes.cli import main

    assert main(["tune", "--directory", str(tmp_path), "--search-space", "{bad"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["tune", "--epochs", "3"]) == 2
    assert "--max-epochs" in capsys.readouterr().err
    assert main(["tune", "--worker", "1"]) == 2
    assert "--chief-address" in capsys.readouterr().err
    assert main(["tune", "--directory", str(tmp_path), "--search-space", '{"dropuot": [0.1]}']) == 2
    assert "dropout" in capsys.readouterr().err
