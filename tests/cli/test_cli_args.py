"""Recipe flags generated from the fields, the command list, and one-line errors with exit code 2.

Nothing here trains: every case fails or finishes before a model is built.
"""

import dataclasses
import sys
import types

import pytest

import recipes.cli
from recipes.cli import build_parser, main
from recipes.cli.args import explicit_fields, flags_of, recipe_from_args
from recipes.config import Recipe

FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}

#: (field, argv for `recipes fine-tune`, the field's value afterwards). Every field, flag, alias,
#: `none` of a nullable field and `--no-` of a bool must appear (checked below).
CASES = [
    ("backbone", ["--backbone", "resnet50"], "resnet50"),
    ("dataset", ["--dataset", "idx:some/folder"], "idx:some/folder"),
    ("image_size", ["--image-size", "48"], 48),
    ("image_size", ["--image-size", "none"], None),
    ("alpha", ["--backbone", "mobilenet", "--alpha", "0.25"], 0.25),
    ("alpha", ["--alpha", "NONE"], None),
    ("weights", ["--weights", "imagenet"], "imagenet"),
    ("weights", ["--weights", "imagenet", "--weights", "none"], None),
    ("pooling", ["--pooling", "max"], "max"),
    ("dropout", ["--dropout", "0.35"], 0.35),
    ("dense_units", ["--dense-units", "256,128"], (256, 128)),
    ("dense_units", ["--dense-units", "64"], (64,)),
    ("dense_units", ["--dense-units", "none"], ()),
    ("dense_units", ["--dense-units", ""], ()),
    ("l1", ["--l1", "0.01"], 0.01),
    ("l2", ["--l2", "1e-4"], 1e-4),
    ("head_batchnorm", ["--head-batchnorm"], True),
    ("head_batchnorm", ["--no-head-batchnorm"], False),
    ("regularize_backbone", ["--regularize-backbone"], True),
    ("regularize_backbone", ["--no-regularize-backbone"], False),
    ("drop_connect_rate", ["--backbone", "efficientnet_b0", "--drop-connect-rate", "0.2"], 0.2),
    ("drop_connect_rate", ["--drop-connect-rate", "null"], None),
    ("bn_momentum", ["--bn-momentum", "0.99"], 0.99),
    ("bn_momentum", ["--bn-momentum", "none"], None),
    ("augmentation", ["--augmentation", "light"], "light"),
    ("augmentation", ["--augment", "rotation:0.1,zoom:0.2"], "rotation:0.1,zoom:0.2"),
    ("augmentation", ["--augment", "none"], None),
    ("augment_placement", ["--augment-placement", "data"], "data"),
    ("flip", ["--no-flip"], False),
    ("flip", ["--flip"], True),
    ("mixup", ["--mixup", "0.2"], 0.2),
    ("cutmix", ["--cutmix", "1"], 1.0),
    ("label_smoothing", ["--label-smoothing", "0.1"], 0.1),
    ("precision", ["--precision", "mixed_bfloat16"], "mixed_bfloat16"),
    ("jit_compile", ["--jit-compile", "false"], False),
    ("jit_compile", ["--jit-compile", "auto"], "auto"),
    ("grappler", ["--grappler", "false"], False),
    ("steps_per_execution", ["--steps-per-execution", "4"], 4),
    ("steps_per_execution", ["--steps-per-execution", "auto"], "auto"),
    ("optimizer", ["--optimizer", "sgd"], "sgd"),
    ("learning_rate", ["--learning-rate", "0.01"], 0.01),
    ("learning_rate", ["--lr", "3e-4"], 3e-4),
    ("learning_rate", ["--lr", "none"], None),
    ("weight_decay", ["--weight-decay", "1e-4"], 1e-4),
    ("momentum", ["--momentum", "0.8"], 0.8),
    ("schedule", ["--schedule", "step"], "step"),
    ("schedule", ["--schedule", "none"], None),
    ("warmup_epochs", ["--warmup-epochs", "0"], 0),
    ("epochs", ["--epochs", "3"], 3),
    ("train_steps", ["--train-steps", "500"], 500),
    ("train_steps", ["--train-steps", "none"], None),
    ("epoch_passes", ["--epoch-passes", "4"], 4),
    ("ema", ["--ema", "0.999"], 0.999),
    ("ema", ["--ema", "none"], None),
    ("linear_probe", ["--linear-probe"], True),
    ("linear_probe", ["--no-linear-probe"], False),
    ("batch_size", ["--batch-size", "16"], 16),
    ("validation_split", ["--validation-split", "0.3"], 0.3),
    ("test_split", ["--test-split", "0"], 0.0),
    ("seed", ["--seed", "7"], 7),
    ("class_weight", ["--class-weight", "balanced"], "balanced"),
    ("crop", ["--crop", "center"], "center"),
    ("crop", ["--crop", "none"], None),
    ("cache", ["--cache", "memory"], "memory"),
    ("cache", ["--cache", "none"], None),
    ("cache", ["--cache", "./cache/data"], "./cache/data"),
    ("class_weight", ["--class-weight", "none"], None),
    ("patience", ["--patience", "0"], 0),
    ("patience", ["--patience", "none"], None),
    ("precise_bn", ["--no-precise-bn"], False),
    ("precise_bn", ["--precise-bn"], True),
    ("head_epochs", ["--head-epochs", "1"], 1),
    ("unfreeze", ["--unfreeze", "top:5"], "top:5"),
    ("unfreeze", ["--unfreeze", "13"], "13"),  # digits: a block name (MobileNet v1), kept a string
    ("unfreeze", ["--unfreeze", "re:_13$"], "re:_13$"),
    ("fine_tune_learning_rate", ["--fine-tune-learning-rate", "1e-4"], 1e-4),
    ("fine_tune_learning_rate", ["--fine-tune-lr", "2e-5"], 2e-5),
    ("fine_tune_learning_rate", ["--fine-tune-lr", "none"], None),
    ("layer_lr_decay", ["--layer-lr-decay", "0.8"], 0.8),
    ("layer_lr_decay", ["--layer-lr-decay", "none"], None),
    ("gradual", ["--gradual"], True),
    ("gradual", ["--no-gradual"], False),
]


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def _parse(parser, command, argv):
    return parser.parse_args([command, *argv])


def test_the_table_covers_every_field_flag_alias_none_and_no():
    used = {arg for _, argv, _ in CASES for arg in argv if arg.startswith("--")}
    for name, field in FIELDS.items():
        if name == "preset_name":  # set by --preset (tested below), not a flag of its own
            assert not field.metadata["cli"]
            continue
        assert field.metadata["cli"], name  # every other field is on the command line
        for flag in flags_of(field):
            assert flag in used, flag
        if field.metadata["kind"] == "bool":
            assert "--no-" + flags_of(field)[0][2:] in used, name
        if field.metadata["nullable"]:
            assert any(n == name and v is None for n, _, v in CASES), f"{name}: no none case"


@pytest.mark.parametrize("name,argv,expected", CASES, ids=[f"{c[0]}:{' '.join(c[1])}" for c in CASES])
def test_each_flag_parses_to_its_field(parser, name, argv, expected):
    args = _parse(parser, "fine-tune", argv)
    assert explicit_fields(args)[name] == expected
    value = getattr(recipe_from_args(args), name)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "command,groups",
    [("train", {"fine-tuning"}), ("find-lr", {"fine-tuning"}), ("fine-tune", set()), ("tune", set())],
)
def test_recipe_commands_have_a_flag_for_every_field(parser, command, groups):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    options = {s for action in sub._actions for s in action.option_strings}
    for name, field in FIELDS.items():
        if not field.metadata["cli"]:
            continue
        present = flags_of(field)[0] in options
        assert present == (field.metadata["group"] not in groups), (command, name)
    assert {"--recipe", "--preset", "--data-dir"} <= options


def test_flags_not_given_leave_the_fields_to_the_base(parser):
    args = _parse(parser, "train", [])
    assert explicit_fields(args) == {}
    assert recipe_from_args(args) == Recipe()
    assert recipe_from_args(_parse(parser, "fine-tune", []), preset="fine-tune") == Recipe.preset("fine-tune")


def test_flags_override_the_recipe_file_which_overrides_the_preset(parser, tmp_path):
    path = Recipe(epochs=5, dropout=0.4, weights="imagenet").save(tmp_path / "recipe.json")
    args = _parse(parser, "fine-tune", ["--recipe", str(path), "--epochs", "2", "--no-flip"])
    recipe = recipe_from_args(args, preset="fine-tune")
    assert (recipe.epochs, recipe.dropout, recipe.flip) == (2, 0.4, False)
    assert recipe.head_epochs == 0  # the file's value, not the fine-tune preset's
    args = _parse(parser, "train", ["--preset", "fine-tune", "--epochs", "4"])
    assert recipe_from_args(args) == Recipe.preset("fine-tune", epochs=4)


def test_an_import_error_in_a_command_module_is_raised(monkeypatch):
    monkeypatch.setattr(recipes.cli, "COMMANDS", (*recipes.cli.COMMANDS, "no_such_command"))
    with pytest.raises(ModuleNotFoundError, match="recipes.cli.no_such_command"):
        build_parser()
    broken = types.ModuleType("recipes.cli.broken")  # imports, but defines no add_parser
    monkeypatch.setitem(sys.modules, "recipes.cli.broken", broken)
    monkeypatch.setattr(recipes.cli, "COMMANDS", ("train", "broken"))
    with pytest.raises(AttributeError, match="add_parser"):
        build_parser()


def test_every_command_is_listed(parser):
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert list(commands) == ["list", "train", "fine-tune", "weights", "tune", "find-lr", "bench",
                              "augment-preview", "evaluate", "calibrate", "predict", "export",
                              "explain", "ensemble", "bag", "ablate"]


BAD_ARGUMENTS = [
    (["train", "--epochs", "x"], "invalid int value: 'x'"),
    (["train", "--lr", "fast"], "invalid float value: 'fast'"),
    (["train", "--epochs", "none"], "invalid int value: 'none'"),  # epochs is not nullable
    (["train", "--backbone", "resnet5"], "Did you mean: resnet50"),
    (["train", "--epochs", "0"], "epochs must be an int >= 1"),
    (["train", "--dataset", "nowhere"], "Unknown data source"),
    (["train", "--optimizer", "adamm"], "Did you mean: adam"),
    (["train", "--pooling", "maxx"], "Did you mean: max"),
    (["train", "--dense-units", "256,x"], "expected comma-separated ints"),
    (["train", "--validation-split", "0.6", "--test-split", "0.5"], "must leave training data"),
    (["train", "--recipe", "missing.json"], "Recipe file not found"),
    (["train", "--recipe", "r.json", "--preset", "fine-tune"], "not allowed with argument"),
    (["train", "--preset", "fine-tuning"], "invalid choice: 'fine-tuning'"),
    (["train", "--head-epochs", "1"], "unrecognized arguments: --head-epochs"),
    (["fine-tune", "--unfreeze", "top:0"], "unfreeze 'top:'"),
    (["fine-tune", "--weights", "none"], "needs pretrained weights"),
    (["find-lr", "--start", "0"], "start must be a number > 0"),
    (["bench", "--backbones", "resnet5"], "Did you mean: resnet50"),
    (["bench", "--repeats", "0"], "repeats must be an int >= 1"),
    (["augment-preview", "--augment", "rotaton:0.1"], "Did you mean: rotation"),
    (["augment-preview", "--n", "0"], "n must be an int >= 1"),
    (["augment-preview", "--augment", "none"], "Nothing to preview"),
    (["tune", "--epochs", "3"], "--max-epochs"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written; if it were, not into the checkout
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("recipes") and message in lines[0], lines
    assert "Traceback" not in captured.err
    assert not any(tmp_path.iterdir())
