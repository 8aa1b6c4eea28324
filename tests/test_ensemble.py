"""ensemble: the weighted mean of members' probabilities, saved and reloaded."""

import keras
import numpy as np
import pytest

import recipes


def test_ensemble_is_weighted_mean_and_reloads(tmp_path, digits_small):
    a = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25, input_shape=(8, 8, 1), name="a")
    b = recipes.build_classifier("mobilenet_v3_small", 10, image_size=32, input_shape=(8, 8, 1), name="b")
    both = recipes.ensemble([a, b], weights=[3, 1])
    x = digits_small[0][:4]
    expected = 0.75 * a.predict(x, verbose=0) + 0.25 * b.predict(x, verbose=0)
    np.testing.assert_allclose(both.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    both.save(tmp_path / "e.keras")
    reloaded = keras.models.load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_ensemble_errors():
    a = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, name="a")
    b = recipes.build_classifier("mobilenet", 4, image_size=32, alpha=0.25, name="b")
    with pytest.raises(ValueError, match="at least 2 models"):
        recipes.ensemble([a])
    with pytest.raises(ValueError, match=r"same number of classes; Received: \[3, 4\]"):
        recipes.ensemble([a, b])
    with pytest.raises(ValueError, match="non-negative"):
        recipes.ensemble([a, a], weights=[1, -1])
    c = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, name="a")
    assert recipes.ensemble([a, c]).output_shape == (None, 3)  # same names are made unique
