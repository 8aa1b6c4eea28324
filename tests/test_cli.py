"""The `recipes` command line: help, list, train, bench, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

import recipes
from recipes.cli import main


def test_console_script_help():
    proc = subprocess.run(["recipes", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("list", "train", "bench"):
        assert command in proc.stdout


def test_list_prints_every_backbone(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:5] == ["backbone", "default", "min", "params", "preprocessing"]
    for name in recipes.list_backbones():
        assert f"\n{name} " in out


BAD_ARGUMENTS = [
    (["train", "--epochs", "x"], "invalid int value: 'x'"),
    (["train", "--backbone", "resnet5"], "Did you mean: resnet50"),
    (["train", "--epochs", "0"], "epochs must be an int >= 1"),
    (["train", "--dataset", "nowhere"], "Unknown data source"),
    (["train", "--optimizer", "adamm"], "Did you mean: adam"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


def test_bad_arguments_give_one_line_and_exit_2_from_the_console_script():
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.cli", "train", "--backbone", "resnet5"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    # (TensorFlow's own C++ log lines, e.g. "failed call to cuInit", are not ours.)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("recipes")]
    assert len(ours) == 1 and "Did you mean: resnet50" in ours[0]


@pytest.mark.parametrize("argv,message", BAD_ARGUMENTS)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len([line for line in err.splitlines() if line.strip()]) <= 2  # usage + one error line
    assert "Traceback" not in err


def test_train_command_trains_for_real_on_digits(tmp_path, capsys):
    """The default backbone on the embedded digits: well above chance in inference mode."""
    out = tmp_path / "run"
    code = main(["train", "--epochs", "3", "--out", str(out)])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("test accuracy: 0.") and str(out) in last
    # evaluate() runs BatchNorm in inference mode: the gap the defaults must close
    assert float(last.split()[2]) > 0.7
    recipe = recipes.Recipe.load(out / "recipe.json")
    assert (recipe.backbone, recipe.epochs, recipe.dataset) == (recipes.DEFAULT_BACKBONE, 3, "digits")
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 4 and "learning_rate" in history[0] and "val_accuracy" in history[0]


def test_bench_command(capsys, tmp_path):
    code = main(["bench", "--backbones", "mobilenet_v3_small", "--image-size", "32", "--repeats", "2",
                 "--out", str(tmp_path / "b.csv")])
    assert code == 0
    out = capsys.readouterr().out
    assert "latency_ms" in out and "mobilenet_v3_small | 32 |" in out
    assert (tmp_path / "b.csv").read_text().startswith("backbone,image_size,params")
