"""recipes.after without a trained model: ECE, temperature fitting, TTA views, rows, bad input."""

import numpy as np
import pytest

import recipes
from recipes.after import (
    Predictions,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    open_model,
    reliability_bins,
)
from recipes.after.common import list_images
from recipes.after.evaluation import trained_with_flips, tta_views
from recipes.config import Recipe


def test_ece_on_a_hand_made_case():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 0, 1])
    # bins of 0.1: {0.9, 0.9} 50% right (gap 0.4), {0.6} right (gap 0.4), {0.7} right (gap 0.3)
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx((0.8 + 0.4 + 0.3) / 4)
    b = reliability_bins(probs, labels, bins=10)
    assert b["count"].sum() == 4 and b["count"][8] == 2 and b["accuracy"][8] == 0.5


def test_ece_is_zero_when_confidence_matches_accuracy_and_one_is_in_the_last_bin():
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, [0, 0, 0, 1], bins=4) == pytest.approx(0.0)
    assert reliability_bins(np.array([[1.0, 0.0]]), [0], bins=5)["count"][-1] == 1


def test_calibration_metrics_match_their_definitions():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]])
    labels = np.array([0, 2, 2])
    m = calibration_metrics(probs, labels)
    assert m["nll"] == pytest.approx(-np.mean(np.log(probs[np.arange(3), labels])))
    assert m["brier"] == pytest.approx(np.mean(np.sum((probs - np.eye(3)[labels]) ** 2, axis=1)))


def test_fit_temperature_recovers_the_scale_of_over_confident_logits():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 5)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=row) for row in p])  # z is calibrated by construction
    assert fit_temperature(z, labels) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(4 * z, labels) == pytest.approx(4.0, rel=0.1)
    with pytest.raises(ValueError, match="Needs"):
        fit_temperature(z[:, 0], labels)


def test_tta_views_keep_shape_and_dtype_and_follow_the_flip_setting():
    x = np.arange(2 * 8 * 8, dtype="uint8").reshape(2, 8, 8, 1)
    views = tta_views(flip=True)
    assert set(views) == {"identity", "flip", "crop", "crop+flip"}
    for fn in views.values():
        out = np.asarray(fn(x))
        assert out.shape == x.shape and out.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(views["flip"](x)), x[:, :, ::-1])
    assert set(tta_views(flip=False)) == {"identity", "crop"}


def test_predictions_rows_top_k_and_error_rows():
    probs = np.array([[0.1, 0.7, 0.2], [np.nan] * 3], "float32")
    preds = Predictions(probs, ["a", "b", "c"], ["x.png", "bad.png"], {1: "cannot read image"})
    rows = preds.rows(top_k=2)
    assert rows[0] == {"path": "x.png", "label": "b", "probability": "0.700000", "label_2": "c",
                       "probability_2": "0.200000", "error": ""}
    assert rows[1]["label"] == "" and rows[1]["error"] == "cannot read image"
    assert preds.labels == ["b", None]
    for bad in (0, 4):
        with pytest.raises(ValueError, match="top_k"):
            preds.rows(top_k=bad)


def test_bad_models_and_paths_are_one_clear_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="has no model.keras"):
        open_model(tmp_path / "run")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="Not a readable Keras model"):
        open_model(broken)
    with pytest.raises(ValueError, match="No such run folder"):
        open_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="No images found"):
        list_images(tmp_path / "empty")
    with pytest.raises(ValueError, match="No such image"):
        list_images(tmp_path / "nope.png")


def test_public_api_is_exported():
    for name in ("evaluate", "calibrate", "predict", "export", "grad_cam", "Report"):
        assert name in recipes.__all__ and callable(getattr(recipes, name))


@pytest.mark.parametrize("changes, flipped", [
    ({}, False),  # the default augmentation (translation) has no flip, though flip=True
    ({"augmentation": None}, False),
    ({"augmentation": "light"}, True),
    ({"augmentation": "light", "flip": False}, False),
    ({"augmentation": "rotation:0.1,flip:vertical"}, True),
])
def test_tta_flips_only_for_runs_that_trained_with_flips(changes, flipped):
    assert trained_with_flips(Recipe().replace(**changes)) is flipped
    assert trained_with_flips(None) is False
