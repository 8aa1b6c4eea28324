"""`recipes.finetune.probe.linear_probe`: the head it writes reproduces scikit-learn's probe
exactly (standardization folded in), how C is chosen, classes without training images, mixed
precision, and the clear errors for models it cannot probe."""

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import recipes
from recipes.data.arrays import make_data
from recipes.finetune import probe
from recipes.finetune.probe import PROBE_C_GRID, linear_probe

COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])


def _images(classes, per_class, size, seed=0):
    """Classes that differ in mean colour, plus pixel noise: linearly separable features."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per_class).astype("int32")
    noise = rng.normal(0, 30, (len(y), size, size, 3))
    x = np.clip(COLOURS[y][:, None, None, :] + noise, 0, 255).astype("uint8")
    return x, y


def _pixels_model(num_classes, size=8, dtype=None):
    """A head on scaled, flattened pixels: the same layer names as build_classifier, traced in
    milliseconds."""
    inputs = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, dtype=dtype)(inputs)
    x = keras.layers.Flatten(dtype=dtype)(x)
    x = keras.layers.Dense(num_classes, name="logits", dtype=dtype)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs)


def _train_split(data):
    images, labels = zip(*((np.asarray(a), np.asarray(b)) for a, b in data.train_pipeline(0)))
    return np.concatenate(images), np.concatenate(labels)


def _keras_and_sklearn(model, images, labels, C):
    """The model's probabilities, and an independent probe's: sklearn fitted on the standardized
    features of `images`, its probabilities spread into the model's class columns."""
    # One eager inference-mode call for features and outputs: tracing predict costs seconds.
    both = keras.Model(model.input, [model.get_layer("logits").input, model.output])
    feats, got = (np.asarray(t, np.float64) for t in both(images, training=False))
    std = feats.std(0)
    z = (feats - feats.mean(0)) / np.where(std < 1e-12, 1.0, std)
    clf = LogisticRegression(C=C, max_iter=1000).fit(z, labels)
    expected = np.zeros_like(got)
    expected[:, clf.classes_] = clf.predict_proba(z)
    return got, expected


@pytest.fixture(scope="module")
def colour_data():
    x, y = _images(3, 40, 32)
    return recipes.load_data((x, y), batch_size=16, validation_split=0.25, test_split=0.0)


def test_probe_head_reproduces_sklearn_on_a_classifier(colour_data, capsys):
    # Dropout and a head BatchNorm: the features must be their inference-mode outputs.
    model = recipes.build_classifier("mobilenet_v3_small", 3, input_shape=(32, 32, 3), weights=None,
                                     image_size=32, head_batchnorm=True, dropout=0.5)
    result = linear_probe(model, colour_data)
    assert set(result) == {"probe_train_accuracy", "probe_validation_accuracy", "C", "images",
                           "features", "seconds"}
    assert result["images"] == colour_data.sizes["train"] == 90 and result["features"] == 576
    assert result["C"] in PROBE_C_GRID and result["probe_train_accuracy"] == 1.0
    assert result["probe_validation_accuracy"] >= 0.9
    assert capsys.readouterr().out.startswith(f"linear probe: C={result['C']:g} on 90 images x 576 features: train 1.000, validation ")

    images, labels = _train_split(colour_data)
    got, expected = _keras_and_sklearn(model, images, labels, result["C"])
    assert 0.01 < expected.max(1).min() < 0.999  # not saturated: the comparison means something
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert model.get_layer("logits").kernel.dtype == "float32"


def test_probe_without_validation_uses_C_1_and_max_images():
    x, y = _images(3, 30, 8)
    data = recipes.load_data((x, y), batch_size=16, validation_split=0.0, test_split=0.0)
    result = linear_probe(_pixels_model(3), data, max_images=40, verbose=False)
    assert result["C"] == 1.0 and result["probe_validation_accuracy"] is None
    assert result["images"] == 40 and result["features"] == 192
    assert linear_probe(_pixels_model(3), data, C=0.5, verbose=False)["C"] == 0.5


def test_probe_picks_best_validation_C_and_the_smaller_on_ties(monkeypatch):
    x, y = _images(3, 30, 8)
    data = recipes.load_data((x, y), batch_size=16, validation_split=0.3, test_split=0.0)
    scores = {0.01: 0.5, 0.1: 0.9, 1.0: 0.9, 10.0: 0.8}
    tried, real_fit = [], probe._fit

    def fit(z, labels, C, seed):
        tried.append(C)
        clf = real_fit(z, labels, C, seed)
        clf.score = lambda *args: scores[C]
        return clf

    monkeypatch.setattr(probe, "_fit", fit)
    result = linear_probe(_pixels_model(3), data, verbose=False)
    assert tried == list(PROBE_C_GRID)
    assert result["C"] == 0.1 and result["probe_validation_accuracy"] == 0.9


def test_probe_class_missing_from_training_is_never_predicted():
    # Three classes, training images of two: the binary sklearn fit maps into columns 0 and 1.
    x, y = _images(3, 20, 8)
    train = np.flatnonzero(y < 2)
    data = make_data({"train": (x, y, train), "validation": (x, y, np.flatnonzero(y == 2))},
                     ["a", "b", "c"], None, 16, 0, "arrays")
    model = _pixels_model(3)
    result = linear_probe(model, data, C=0.1, verbose=False)
    assert result["probe_train_accuracy"] == 1.0 and result["probe_validation_accuracy"] == 0.0
    logits = model.get_layer("logits")
    assert np.all(np.asarray(logits.kernel)[:, 2] == 0) and np.isfinite(np.asarray(logits.bias)).all()
    got, expected = _keras_and_sklearn(model, x[train], y[train], 0.1)
    assert got[:, 2].max() < 1e-8
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_probe_under_mixed_precision_keeps_float32_variables():
    x, y = _images(3, 20, 8)
    data = recipes.load_data((x, y), batch_size=16, validation_split=0.0, test_split=0.0)
    model = _pixels_model(3, dtype="mixed_float16")
    result = linear_probe(model, data, C=0.1, verbose=False)
    logits = model.get_layer("logits")
    assert logits.compute_dtype == "float16" and logits.kernel.dtype == "float32"
    images, labels = _train_split(data)
    got, expected = _keras_and_sklearn(model, images, labels, 0.1)
    assert result["probe_train_accuracy"] == 1.0 and (got.argmax(1) == labels).all()
    # float16 features and matmul: agreement to float16 precision only.
    np.testing.assert_allclose(got, expected, atol=2e-2)


def test_probe_errors():
    inputs = keras.Input((4,))
    no_logits = keras.Model(inputs, keras.layers.Dense(3, name="out")(inputs))
    with pytest.raises(ValueError, match="named 'logits'.*Received: none"):
        linear_probe(no_logits, None)
    not_dense = keras.Model(inputs, keras.layers.Activation("relu", name="logits")(inputs))
    with pytest.raises(ValueError, match="Received: Activation layer named 'logits'"):
        linear_probe(not_dense, None)
    hidden = keras.layers.Dense(8, name="head_dense_0")(inputs)
    hidden = keras.layers.Dense(4, name="head_dense_1")(hidden)
    mlp = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
    with pytest.raises(ValueError, match=r"dense_units=\(\)\); Received: dense_units=\(8, 4\)"):
        linear_probe(mlp, None)
    x, y = _images(2, 10, 8)
    data = recipes.load_data((x, y), batch_size=16, validation_split=0.0, test_split=0.0)
    with pytest.raises(ValueError, match="3 units for data with 2 classes"):
        linear_probe(_pixels_model(3), data)
    with pytest.raises(ValueError, match="Received: max_images=0"):
        linear_probe(_pixels_model(2), data, max_images=0)
    with pytest.raises(ValueError, match="Received: C=0"):
        linear_probe(_pixels_model(2), data, C=0)
    one_class = make_data({"train": (x, y, np.flatnonzero(y == 0)[:5])}, ["0", "1"], None, 16, 0, "arrays")
    with pytest.raises(ValueError, match="at least 2 classes; Received: 5 images, all of class '0'"):
        linear_probe(_pixels_model(2), one_class)
