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


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--epochs", "x"], "invalid int value: 'x'"),
        (["train", "--backbone", "resnet5"], "Did you mean: resnet50"),
        (["train", "--epochs", "0"], "epochs must be an int >= 1"),
        (["train", "--dataset", "nowhere"], "Unknown data source"),
        (["train", "--optimizer", "adamm"], "Did you mean: adam"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message):
    proc = subprocess.run(
        [sys.executable, "-m", "recipes.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    # (TensorFlow's own C++ log lines, e.g. "failed call to cuInit", are not ours.)
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("recipes")]
    assert len(error_lines) == 1


def test_train_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "train", "--backbone", "mobilenet", "--alpha", "0.25", "--image-size", "32", "--epochs", "1",
        "--batch-size", "64", "--out", str(out),
    ])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("test accuracy: 0.") and str(out) in last
    recipe = recipes.Recipe.load(out / "recipe.json")
    assert (recipe.backbone, recipe.epochs, recipe.batch_size) == ("mobilenet", 1, 64)


def test_bench_command(capsys, tmp_path):
    code = main(["bench", "--backbones", "mobilenet_v3_small", "--image-size", "32", "--repeats", "2",
                 "--out", str(tmp_path / "b.csv")])
    assert code == 0
    out = capsys.readouterr().out
    assert "latency_ms" in out and "mobilenet_v3_small | 32 |" in out
    assert (tmp_path / "b.csv").read_text().startswith("backbone,image_size,params")
