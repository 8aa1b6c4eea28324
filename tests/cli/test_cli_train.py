"""`recipes` as installed (console script, `python -m`), `recipes list`, and a real `recipes train`."""

import importlib.metadata
import re
import shutil
import subprocess
import sys

import pytest

import recipes
from recipes.cli import main


def test_console_script_is_installed_and_lists_every_command(capsys):
    # The installed script runs for real in `python -m` form below and in CI's quick start
    # (`recipes train`); here, what it points at, without another TensorFlow start-up.
    [script] = [e for e in importlib.metadata.entry_points(group="console_scripts")
                if e.name == "recipes"]
    assert script.value == "recipes.cli:main" and script.load() is main
    assert shutil.which("recipes"), "the recipes console script is not on PATH"
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("list", "train", "fine-tune", "weights", "tune", "find-lr", "bench",
                    "augment-preview"):
        assert command in out


def test_bad_arguments_give_one_line_and_exit_2_from_python_m(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.cli", "train", "--backbone", "resnet5"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    # (TensorFlow's own C++ log lines, e.g. "failed call to cuInit", are not ours.)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("recipes")]
    assert len(ours) == 1 and "Did you mean: resnet50" in ours[0]


def test_list_prints_every_backbone(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:5] == ["backbone", "default", "min", "params", "preprocessing"]
    for name in recipes.list_backbones():
        assert f"\n{name} " in out


def test_train_command_trains_for_real_on_digits(tmp_path, capsys):
    """The default backbone on the embedded digits, one epoch: a run folder that redoes the run."""
    out = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--image-size", "32", "--validation-split", "0.2",
                 "--precise-bn", "--out", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # the data-size-aware choice, then what trains
    assert re.fullmatch(r"recipes: \d+ training images per class: preset fast", lines[0]), lines[0]
    assert lines[1].startswith(f"training {recipes.DEFAULT_BACKBONE} on digits")
    assert lines[-1].startswith("test accuracy: 0.") and str(out) in lines[-1]
    # 10 classes, chance 0.1; evaluate() runs BatchNorm in inference mode: after one warmup epoch
    # the moving statistics lag the weights, and --precise-bn closes that gap
    assert float(lines[-1].split()[2]) > 0.5
    recipe = recipes.Recipe.load(out / "recipe.json")
    assert (recipe.backbone, recipe.epochs, recipe.dataset, recipe.image_size) == (
        recipes.DEFAULT_BACKBONE, 1, "digits", 32)
    assert recipe.validation_split == 0.2  # the flag reached the data split and the record
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "learning_rate" in history[0] and "val_accuracy" in history[0]
