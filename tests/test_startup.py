"""The `recipes` command's choice of CPU kernels, made before TensorFlow is imported."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import callbacks
from recipes import config, startup
from recipes.startup import ONEDNN_FLAG, choose_cpu_kernels, onednn_enabled

REPO = Path(__file__).resolve().parents[1]


def idx_folder(tmp_path, side):
    """An IDX images file whose header says `side` x `side` (the body is never read)."""
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">4I", 0x803, 2, side, side) + bytes(2 * side * side))
    return f"idx:{tmp_path}"


def choose(argv, program="/usr/local/bin/recipes", environ=None):
    environ = {} if environ is None else environ
    return choose_cpu_kernels(argv, program=program, environ=environ, modules={}), environ


@pytest.mark.parametrize("argv, chosen", [
    (["train"], "eigen"),  # the default: mobilenet_v3_small, digits at 32 px
    (["train", "--epochs", "3", "--seed", "1"], "eigen"),
    (["train", "--image-size", "32"], "eigen"),
    (["train", "--image-size", "40"], "eigen"),  # faster on both CPUs measured at 40 px too
    (["train", "--image-size", "48"], None),  # measured on one CPU only: oneDNN stays
    (["train", "--backbone", "resnet50"], None),
    (["train", "--backbone", "efficientnet_b0"], None),
    (["train", "--dataset", "./photos"], None),  # a folder: its image side is unknown
    (["train", "--epochs", "zero"], None),  # main parses it again and reports the error
    (["train", "--help"], None),
    (["bag", "--members", "2"], "eigen"),  # members of the default model
    (["bag", "--backbone", "resnet50"], None),
    (["tune"], None),
    (["ablate", "decay"], None),  # rows change the model; the process serves them all
    ([], None),
])
def test_chooses_eigen_only_for_the_smallest_model(argv, chosen):
    result, environ = choose(argv)
    assert result == chosen
    assert environ == ({ONEDNN_FLAG: "0"} if chosen else {})


def test_reads_the_image_side_of_idx_files(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    small.mkdir(), large.mkdir()
    assert choose(["train", "--dataset", idx_folder(small, 28)])[0] == "eigen"  # MNIST: 32 px
    assert choose(["train", "--dataset", idx_folder(large, 96)])[0] is None  # 96 px: 224 px


@pytest.mark.parametrize("program, environ, modules", [
    ("/usr/bin/python", {}, {}),  # a Python program: TensorFlow comes before any recipe
    ("recipes", {ONEDNN_FLAG: "1"}, {}),  # the user's choice wins
    ("recipes", {ONEDNN_FLAG: "0"}, {}),
    ("recipes", {}, {"tensorflow": object()}),  # too late: TensorFlow read the flag already
])
def test_never_overrides_the_user_or_acts_too_late(program, environ, modules):
    before = dict(environ)
    assert choose_cpu_kernels(["train"], program=program, environ=environ, modules=modules) is None
    assert environ == before


def test_a_parse_that_imports_tensorflow_sets_no_flag(monkeypatch):
    """The bug this guards: an augmentation check that imported Keras made TensorFlow start
    with oneDNN while metrics.json recorded it off. Parsing must not import it; if it ever
    does, no flag is set, so nothing records kernels the run does not use (the console test
    below is what fails when parsing imports TensorFlow: it then logs oneDNN on)."""
    modules, real = {}, startup._recipe_of

    def importing(argv):
        modules["tensorflow"] = object()
        return real(argv)

    monkeypatch.setattr(startup, "_recipe_of", importing)
    environ = {}
    assert choose_cpu_kernels(["train", "--augmentation", "light"], program="recipes",
                              environ=environ, modules=modules) is None
    assert environ == {}


def test_a_bad_command_line_prints_nothing_here(capsys):
    assert choose(["train", "--lr", "-1"])[0] is None
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("value, enabled", [
    ("1", True), ("0", False), ("false", False), ("False", False), ("true", True),
])
def test_onednn_enabled_reads_tensorflows_flag(value, enabled):
    assert onednn_enabled({ONEDNN_FLAG: value}) is enabled


def test_without_the_flag_tensorflow_itself_says():
    # Its default depends on the CPU: off on an AVX2-only EPYC, on with AVX-512 VNNI/AMX.
    from tensorflow.python.util import _pywrap_util_port

    assert onednn_enabled({}) is bool(_pywrap_util_port.IsMklEnabled())


def test_schedule_names_match_the_callbacks():
    assert config.SCHEDULE_NAMES == callbacks.SCHEDULE_NAMES


def test_the_console_program_really_turns_onednn_off():
    """In a fresh `recipes`-named process TensorFlow starts without oneDNN (it logs when it
    starts with it), and `metrics.json`'s `speed.onednn` says so; a plain import keeps it."""
    code = ("import sys; sys.argv = ['recipes', 'train']; import recipes, os, recipes.speed as s; "
            f"print(os.environ.get('{ONEDNN_FLAG}'), s.resolve(steps_per_epoch=1).onednn)")
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_FLAG}
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"
    chosen = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert chosen.returncode == 0, chosen.stderr[-2000:]
    assert chosen.stdout.split() == ["0", "False"]
    assert "oneDNN custom operations are on" not in chosen.stderr
    plain = subprocess.run([sys.executable, "-c", code.replace("'recipes'", "'python'")], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr[-2000:]
    # TensorFlow's default depends on the CPU; the record must say what TensorFlow logged.
    logged_on = "oneDNN custom operations are on" in plain.stderr
    assert plain.stdout.split() == ["None", str(logged_on)]
    forced = subprocess.run([sys.executable, "-c", code.replace("'recipes'", "'python'")],
                            cwd=REPO, env={**env, ONEDNN_FLAG: "1"}, capture_output=True,
                            text=True, timeout=300)
    assert forced.stdout.split() == ["1", "True"], forced.stderr[-2000:]
    if startup.sys.platform == "linux" and os.uname().machine == "x86_64":
        assert "oneDNN custom operations are on" in forced.stderr  # the checks above can fail


@pytest.mark.parametrize("argv, orig_argv, expected", [
    (["-m"], ["python", "-m", "recipes.cli", "train", "--seed", "1"], ("recipes", ["train", "--seed", "1"])),
    (["-m"], ["python", "-m", "pytest", "-q"], ("-m", [])),
    (["/usr/bin/recipes", "train"], ["python", "/usr/bin/recipes", "train"], ("/usr/bin/recipes", ["train"])),
])
def test_python_dash_m_recipes_cli_counts_as_the_command(monkeypatch, argv, orig_argv, expected):
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert startup._command_line() == expected
