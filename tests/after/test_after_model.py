"""evaluate / calibrate / predict / export / CLI on one small trained model in a digits run folder.

The model is a tiny conv net (seconds to train) with the `logits` -> `probabilities` ending
build_classifier models have; the full mobilenet path is in test_after_slow.py (-m slow).
"""

import csv
import json

import keras
import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix

import recipes
from recipes.after.common import SPLITS
from recipes.cli import main
from recipes.config import Recipe
from recipes.run import RunFolder


def tiny_model(scale=1.0):
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(10, name="logits")(x)
    out = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, out, name="tiny")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A digits run folder (recipe.json with the digits splits) holding a trained tiny model."""
    recipe = Recipe(backbone="custom:tiny", dataset="digits", batch_size=64, epochs=4, flip=False)
    data = recipes.load_data("digits", batch_size=64, seed=recipe.seed)
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.train, epochs=4, verbose=0, shuffle=False)
    folder = RunFolder(tmp_path_factory.mktemp("after") / "run")
    folder.save_model(model)
    folder.save_recipe(recipe)
    folder.save_metrics({})
    return folder, model, data


def test_report_equals_sklearn_on_the_runs_own_test_split(run):
    folder, model, data = run
    report = recipes.evaluate(folder.path)
    x = np.concatenate([b[0] for b in data.test])
    y = np.concatenate([b[1] for b in data.test])
    pred = model.predict(x, verbose=0).argmax(1)
    expected = classification_report(y, pred, target_names=data.class_names, output_dict=True,
                                     zero_division=0)
    assert report.size == data.sizes["test"] == len(y)
    assert report.per_class["3"] == pytest.approx(expected["3"])
    assert report.per_class["macro avg"] == pytest.approx(expected["macro avg"])
    np.testing.assert_array_equal(report.confusion, confusion_matrix(y, pred))
    assert report.accuracy == pytest.approx(np.mean(pred == y)) and report.accuracy > 0.5
    on_disk = json.loads((folder.path / "evaluation" / "report.json").read_text())
    assert on_disk["per_class"]["weighted avg"] == pytest.approx(expected["weighted avg"])
    for name in ("confusion.png", "reliability.png", "top_losses.png"):
        assert (folder.path / "evaluation" / name).stat().st_size > 1000, name


def test_calibration_lowers_nll_of_an_over_confident_model_and_reloads(run, tmp_path):
    _, model, data = run
    hot = keras.models.clone_model(model)
    hot.set_weights(model.get_weights())
    kernel, bias = hot.get_layer("logits").get_weights()
    hot.get_layer("logits").set_weights([kernel * 6, bias * 6])  # same argmax, far too sure
    before = recipes.evaluate(hot, data, write=False)
    calibrated = recipes.calibrate(hot, data, out=tmp_path / "cal")
    assert calibrated.calibration["temperature"] > 2
    assert calibrated.calibration["after"]["nll"] < calibrated.calibration["before"]["nll"]
    after = recipes.evaluate(calibrated, data, write=False)
    assert after.calibration["nll"] < before.calibration["nll"]  # on the test split too
    assert after.accuracy == before.accuracy
    assert after.uncalibrated["nll"] == pytest.approx(before.calibration["nll"], rel=1e-4)
    reloaded = keras.models.load_model(tmp_path / "cal" / "model.keras")  # no custom_objects
    x = next(iter(data.test))[0]
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), calibrated.predict(x, verbose=0),
                               atol=1e-6)
    again = recipes.calibrate(calibrated, data, write=False)  # replaces, never stacks
    assert [la.name for la in again.layers].count("temperature") == 1


def test_evaluate_reports_ece_before_and_after_calibrating_the_run(run):
    folder, _, _ = run
    recipes.calibrate(folder.path)
    assert (folder.path / "calibrated" / "model.keras").is_file()
    report = recipes.evaluate(folder.path, tta=True, write=False)
    assert report.calibrated["temperature"] > 0 and "ece" in report.calibrated
    assert set(report.tta["views"]) == {"identity", "crop"}  # the recipe says flip=False
    assert 0 <= report.tta["accuracy"] <= 1


def test_predict_folder_of_mixed_images_with_a_broken_file(run, tmp_path):
    from PIL import Image

    folder, model, _ = run
    rng = np.random.default_rng(0)
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    gray = rng.integers(0, 255, (8, 8), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "imgs" / "gray.png")
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "rgb.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)).save(tmp_path / "imgs" / "sub" / "rgba.png")
    (tmp_path / "imgs" / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image, not listed")
    out = tmp_path / "preds.csv"
    preds = recipes.predict(folder.path, tmp_path / "imgs", top_k=3, out=out, batch_size=2)
    rows = list(csv.DictReader(out.open()))
    assert [r["path"].split("/")[-1] for r in rows] == ["gray.png", "rgb.jpg", "broken.png", "rgba.png"]
    assert list(rows[0]) == ["path", "label", "probability", "label_2", "probability_2", "label_3",
                             "probability_3", "error"]
    broken = rows[2]
    assert broken["error"].startswith("cannot read image") and broken["label"] == ""
    assert all(r["error"] == "" and r["label"] for i, r in enumerate(rows) if i != 2)
    expected = model.predict(gray[None, ..., None].astype("float32"), verbose=0)[0]
    np.testing.assert_allclose(preds.probabilities[0], expected, atol=1e-5)
    assert float(rows[0]["probability"]) >= float(rows[0]["probability_2"])
    with pytest.raises(ValueError, match="top_k"):
        recipes.predict(folder.path, tmp_path / "imgs", top_k=11)


def test_tflite_export_round_trips_and_agrees_with_keras(run, tmp_path):
    folder, _, _ = run
    entry = recipes.export(folder.path, "tflite", out=tmp_path / "exp", latency_images=5)
    assert entry["top1_agreement"] >= 0.999 and entry["max_abs_prob_diff"] < 1e-4
    assert entry["accuracy"] == pytest.approx(entry["keras_accuracy"], abs=0.01)
    assert entry["size_bytes"] == (tmp_path / "exp" / "model.tflite").stat().st_size > 0
    summary = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert summary["tflite"]["images"] == entry["images"] > 0 and entry["latency_ms_per_image"] > 0


def _one_error_line(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"recipes {argv[0]}: error:") and match in err[0], err


def test_cli_commands_run_and_bad_input_exits_2(run, tmp_path, capsys):
    folder, _, _ = run  # (evaluate/calibrate/export succeeding through the CLI: test_after_slow)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "x.png")
    assert main(["predict", str(folder.path), str(tmp_path / "x.png"), "--top-k", "2"]) == 0
    assert "label_2" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    _one_error_line(capsys, ["evaluate", str(tmp_path / "empty")], "has no model.keras")
    _one_error_line(capsys, ["evaluate", str(tmp_path / "bad.keras")], "Not a readable Keras model")
    _one_error_line(capsys, ["evaluate", str(folder.path), "--split", "tset"], "Did you mean: test")
    _one_error_line(capsys, ["predict", str(folder.path), str(tmp_path / "empty")], "No images found")
    _one_error_line(capsys, ["predict", str(folder.path), str(tmp_path / "x.png"), "--top-k", "11"],
                    "top_k")
    _one_error_line(capsys, ["export", str(folder.path), "--format", "onnx"], "Unknown format")
    _one_error_line(capsys, ["explain", str(folder.path), str(tmp_path / "x.png")], "'backbone' layer")


def test_a_split_the_run_does_not_have_is_refused(run, tmp_path):
    _, model, _ = run
    no_test = RunFolder(tmp_path / "no_test")
    no_test.save_model(model)
    no_test.save_recipe(Recipe(backbone="custom:tiny", dataset="digits", test_split=0.0))
    with pytest.raises(ValueError, match=r"no test split.*available: validation, train"):
        recipes.evaluate(no_test.path)
    assert "test" in SPLITS
