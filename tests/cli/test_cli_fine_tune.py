"""`recipes fine-tune` and `recipes weights` through the real CLI entry point."""

import json

import numpy as np
import pytest

import recipes
from recipes.cli import main
from recipes.cli.weights import weight_files


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, digits_small):
    """3 classes x 12 real digit images as PNG files, one sub-folder per class."""
    import PIL.Image

    x, y = digits_small
    root = tmp_path_factory.mktemp("digits_png")
    for label in (0, 1, 2):
        (root / f"d{label}").mkdir()
        for i, idx in enumerate(np.flatnonzero(y == label)[:12]):
            PIL.Image.fromarray(x[idx, :, :, 0]).save(root / f"d{label}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    model = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25)
    return recipes.save_backbone(model, tmp_path_factory.mktemp("bb") / "bb.weights.h5")


def test_fine_tune_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fine-tune", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--head-epochs", "--fine-tune-lr", "--unfreeze", "--layer-lr-decay", "--gradual",
                 "--no-gradual", "--weights", "--epochs", "--lr", "--out", "--preset", "--recipe"):
        assert flag in text, flag
    assert "(default: top:30%)" in text and "(default: 2)" in text  # the fine-tune preset's


def test_fine_tune_cli_end_to_end(tiny_folder, weights_file, tmp_path, capsys):
    out = tmp_path / "run"
    code = main([
        "fine-tune", "--backbone", "mobilenet", "--alpha", "0.25", "--image-size", "32",
        "--weights", str(weights_file), "--dataset", str(tiny_folder), "--head-epochs", "1",
        "--epochs", "1", "--unfreeze", "re:_13$", "--layer-lr-decay", "0.8", "--out", str(out),
    ])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # 9 images per class: the small-data preset's fields not given as flags (no step budget:
    # --epochs was given), with its linear probe
    assert lines[0].startswith("recipes: 9 training images per class: preset small-data (")
    assert "linear_probe=True" in lines[0] and "train_steps" not in lines[0]
    assert lines[1].startswith("fine-tuning mobilenet")
    assert any(line.startswith("linear probe: C=") for line in lines)
    line = lines[-1]
    assert line.startswith("test accuracy:") and "unfrozen layers: 2" in line and str(out) in line
    saved = recipes.Recipe.load(out / "recipe.json")
    assert saved.unfreeze == "re:_13$" and saved.layer_lr_decay == 0.8
    assert saved.preset_name == "small-data" and saved.linear_probe and saved.head_epochs == 1
    # the fine-tune preset under the flags (Adam on a pretrained backbone, no warmup), and
    # small-data's phase-2 rate (the flags named no rate)
    assert saved.peak_learning_rate == pytest.approx(1e-3)
    assert saved.phase2_learning_rate == pytest.approx(1e-3)
    assert saved.warmup_epochs == 0 and saved.patience is None and saved.label_smoothing == 0.1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["phase2_start_epoch"] == 1 and metrics["epochs"] == 2
    assert (out / "model.keras").is_file()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--unfreeze", "conv9"], "unfreeze='conv9'"),
        (["--weights", "none"], "needs pretrained weights"),
        (["--preset", "default"], "needs pretrained weights"),  # the default preset has none
        (["--layer-lr-decay", "2"], "layer_lr_decay"),
    ],
)
def test_fine_tune_cli_errors_are_one_line(extra, match, tiny_folder, weights_file, tmp_path, capsys):
    args = ["fine-tune", "--backbone", "mobilenet", "--alpha", "0.25", "--image-size", "32",
            "--dataset", str(tiny_folder), "--out", str(tmp_path / "r")]
    if "--weights" not in extra and "--preset" not in extra:
        args += ["--weights", str(weights_file)]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recipes fine-tune: error:") and match in err and "\n" not in err
    assert not (tmp_path / "r" / "phase1").exists()


def test_weights_command_reports_cache_state(keras_home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached = keras_home / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.write_bytes(b"\0" * 3 * 2**20)
    assert main(["weights", "--backbone", "vgg16", "--backbone", "mobilenet_v2", "--urls"]) == 0
    out = capsys.readouterr().out
    vgg = next(line for line in out.splitlines() if line.startswith("vgg16"))
    mob = next(line for line in out.splitlines() if line.startswith("mobilenet_v2"))
    assert "yes" in vgg and "3.0 MB" in vgg
    assert "MISSING" in mob and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in mob
    assert "https://" in mob
    assert str(keras_home / "models") in out and "1 of 2 missing" in out

    # The names are remembered: a second call does not build the models again.
    def fail(*args, **kwargs):
        raise AssertionError("imagenet_weights_file called again")

    monkeypatch.setattr(recipes.weights, "imagenet_weights_file", fail)
    rows = weight_files(["vgg16", "mobilenet_v2"])
    assert [r["cached"] for r in rows] == [True, False]
    assert rows[1]["path"] == str(keras_home / "models" / rows[1]["file"])
