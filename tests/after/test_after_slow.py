"""The whole after-training path on a real mobilenet_v3_small digits run, through the CLI (-m slow)."""

import json

import keras
import numpy as np
import pytest

import recipes
from recipes.cli import main

pytestmark = pytest.mark.slow

#: The issue's agreement targets per format on digits/MNIST models.
TARGETS = {"savedmodel": 0.999, "tflite": 0.999, "tflite-fp16": 0.999, "tflite-int8": 0.98}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("after_slow") / "run"
    recipes.train("mobilenet_v3_small", "digits", epochs=4, image_size=32, out=out, verbose=0)
    return out


def test_evaluate_calibrate_evaluate_through_the_cli(run, capsys):
    assert main(["evaluate", str(run), "--tta"]) == 0
    assert "TTA (4 views" in capsys.readouterr().out
    assert main(["calibrate", str(run)]) == 0
    assert "temperature" in capsys.readouterr().out
    assert main(["evaluate", str(run)]) == 0
    report = json.loads((run / "evaluation" / "report.json").read_text())
    assert report["calibrated"]["temperature"] > 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    keras.models.load_model(run / "calibrated" / "model.keras")  # no custom_objects


@pytest.mark.parametrize("fmt", list(TARGETS))
def test_every_export_format_round_trips_and_meets_its_target(run, fmt, capsys):
    assert main(["export", str(run), "--format", fmt]) == 0
    entry = json.loads((run / "export" / "export.json").read_text())[fmt]
    assert entry["top1_agreement"] >= TARGETS[fmt], entry
    assert entry["accuracy"] == pytest.approx(entry["keras_accuracy"], abs=0.02)
    runner = recipes.after.load_artifact(entry["path"], fmt)
    x = np.zeros((3, 8, 8, 1), "float32")
    assert runner(x).shape == (3, 10)


def test_predict_and_explain_a_folder(run, tmp_path, capsys):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((28, 28, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    assert main(["predict", str(run), str(tmp_path), "--top-k", "3", "--out",
                 str(tmp_path / "p.csv")]) == 0
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 4
    assert main(["explain", str(run), str(tmp_path / "0.png"), "--class", "3"]) == 0
    assert (run / "explain" / "0_gradcam.png").is_file()


def test_grad_cam_on_a_built_classifier_has_the_input_size():
    model = recipes.build_classifier("mobilenet", 3, alpha=0.25, image_size=64,
                                     input_shape=(40, 40, 1))
    heat = recipes.grad_cam(model, np.random.default_rng(0).integers(0, 255, (2, 40, 40, 1)))
    assert heat.shape == (2, 40, 40) and 0 <= heat.min() and heat.max() <= 1
