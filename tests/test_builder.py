"""build_classifier: every backbone builds, preprocessing equals keras.applications, bad input."""

import keras
import numpy as np
import pytest

import recipes
from recipes.layers import BackbonePreprocessing

ALL = recipes.list_backbones()


def _small(name):
    return max(recipes.backbone_info(name).min_size, 32)


#: A family's deeper members build the same code path as its smallest one and take 3-10 s each at
#: 32 px: they run with `-m slow`. Each family's smallest member builds in the default suite, and
#: `test_registry.py` checks every member's spec against keras.applications there.
_DEEP = {"efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
         "efficientnet_b6", "efficientnet_b7", "efficientnet_v2_b1", "efficientnet_v2_b2",
         "efficientnet_v2_b3", "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
         "resnet101", "resnet101_v2", "resnet152", "resnet152_v2", "densenet169", "densenet201"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _DEEP else n for n in ALL])
def test_every_backbone_builds_small_and_predicts(name):
    size = _small(name)
    model = recipes.build_classifier(name, 3, image_size=size, input_shape=(20, 20, 1))
    # An eager call: tracing predict() for 30 graphs would dominate the suite's time.
    x = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 1), dtype="uint8").astype("float32")
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    assert probs.shape == (2, 3)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert recipes.find_backbone(model).name == name
    keras.backend.clear_session()


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_backbone_builds_at_default_size(name):
    spec = recipes.backbone_info(name)
    model = recipes.build_classifier(name, 5)
    x = np.zeros((1, spec.default_size, spec.default_size, 3), "uint8")
    assert model.predict(x, verbose=0).shape == (1, 5)
    keras.backend.clear_session()


@pytest.mark.parametrize("name", ALL)
def test_preprocessing_layer_equals_keras_preprocess_input(name):
    spec = recipes.backbone_info(name)
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    expected = spec.preprocess_input()(x.copy())
    got = keras.ops.convert_to_numpy(BackbonePreprocessing(spec.preprocessing)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["vgg16", "resnet50_v2", "densenet121", "efficientnet_b0", "mobilenet_v3_small"])
def test_in_graph_path_equals_resize_then_preprocess_input(name):
    """Raw gray uint8 in -> exactly what keras.applications' preprocess_input gives the backbone."""
    spec = recipes.backbone_info(name)
    model = recipes.build_classifier(name, 4, image_size=32, input_shape=(16, 16, 1))
    probe = keras.Model(model.input, model.get_layer("preprocess").output)
    raw = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 1), dtype="uint8")
    rgb = np.repeat(raw.astype("float32"), 3, axis=-1)
    resized = keras.ops.convert_to_numpy(keras.layers.Resizing(32, 32)(rgb))
    expected = spec.preprocess_input()(resized.copy())
    np.testing.assert_allclose(probe.predict(raw, verbose=0), expected, rtol=1e-5, atol=1e-3)


def test_efficientnet_is_never_double_normalized():
    model = recipes.build_classifier("efficientnet_b0", 3, image_size=32, input_shape=(32, 32, 3))
    backbone = recipes.find_backbone(model)
    # Our layer passes 0-255 through; the backbone's own Rescaling/Normalization do the rest.
    assert model.get_layer("preprocess").mode == "embedded"
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in backbone.layers)


def test_caffe_mode_flips_to_bgr():
    x = np.zeros((1, 1, 1, 3), "float32")
    x[..., 0] = 200.0  # red
    out = keras.ops.convert_to_numpy(BackbonePreprocessing("caffe")(x))
    np.testing.assert_allclose(out[0, 0, 0], [-103.939, -116.779, 200.0 - 123.68], rtol=1e-6)


def test_save_load_round_trip_identical_predictions(tmp_path, digits_small):
    model = recipes.build_classifier(
        "mobilenet", 10, image_size=32, alpha=0.25, input_shape=(8, 8, 1), dense_units=(16,), l2=1e-4
    )
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    x = digits_small[0][:8]
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))


def test_any_size_and_float_input():
    model = recipes.build_classifier("mobilenet_v2", 2, image_size=32, alpha=0.35)
    assert model.input_shape == (None, None, None, None)  # any size, gray or RGB
    # Eager calls: predict() would trace a graph for each of the four input signatures.
    def probs(x):
        return keras.ops.convert_to_numpy(model(x, training=False))

    gray = np.random.default_rng(0).integers(0, 256, (2, 20, 20, 1)).astype("uint8")
    np.testing.assert_allclose(probs(gray), probs(np.repeat(gray, 3, axis=-1)), rtol=1e-6)
    a = probs(np.full((1, 50, 70, 3), 128, "uint8"))
    b = probs(np.full((1, 50, 70, 3), 128.0, "float32"))
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_mixed_precision_softmax_stays_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25)
        assert model.get_layer("logits").compute_dtype == "float16"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bn_momentum_and_inference_defaults():
    scratch = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25)
    bns = [layer for layer in recipes.find_backbone(scratch).layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(bn.momentum == 0.9 for bn in bns)
    frozen = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, trainable_backbone=False)
    assert not recipes.find_backbone(frozen).trainable
    assert frozen.get_layer("logits").trainable


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(num_classes=1), "num_classes must be at least 2; Received: num_classes=1"),
        (dict(num_classes=2.5), "num_classes must be an int"),
        (dict(image_size=16), "Input size must be at least 32x32 for resnet50; Received: image_size=16"),
        (dict(image_size="64"), "image_size must be an int"),
        (dict(image_size=32.0), "image_size must be an int"),
        (dict(pooling="mean"), "Unknown pooling; Received: pooling='mean'. Allowed: avg, max, flatten"),
        (dict(dropout=-0.1), "dropout must be a number in"),
        (dict(l2=-1e-4), "l2 must be a number >= 0; Received: l2=-0.0001"),
        (dict(l1="a"), "l1 must be a number"),
        (dict(weights="/nope/w.h5"), "Weights file not found"),
        (dict(weights=3), "weights must be None, 'imagenet' or a path"),
        (dict(alpha=0.5), "resnet50 has no width multiplier"),
        (dict(input_shape=(32, 32, 2)), "1 or 3 channels"),
        (dict(drop_connect_rate=0.1), "EfficientNet backbones only"),
    ],
)
def test_bad_input_is_rejected_before_building(kwargs, message, monkeypatch):
    built = []
    monkeypatch.setattr(recipes.weights, "_call_builder", lambda *a, **k: built.append(1))
    args = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        recipes.build_classifier("resnet50", **args)
    assert not built


def test_pretrained_weights_below_min_size_message():
    with pytest.raises(ValueError, match="at least 75x75 for inception_v3 with pretrained weights"):
        recipes.build_classifier("inception_v3", 3, image_size=64, weights="imagenet")
