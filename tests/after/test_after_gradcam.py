"""Grad-CAM: the heat follows the class evidence; the registry's cam_layer exists and is 4-D."""

import keras
import numpy as np
import pytest

import recipes
from recipes.layers import Backbone, BackbonePreprocessing, ToRGB

# One xdist worker for this module (--dist loadgroup), so its module-scoped fixture
# (the trained classifier) is made once.
pytestmark = pytest.mark.xdist_group("test_after_gradcam")

SIDE, SQUARE = 32, 10


def _images(n, rng, corner=None):
    """Noise; odd images get a bright square (the class evidence), in a random or given corner."""
    x = rng.integers(0, 60, (n, SIDE, SIDE, 1)).astype("uint8")
    y = np.arange(n) % 2
    for i in np.flatnonzero(y):
        top, left = corner if corner is not None else rng.integers(0, SIDE - SQUARE, 2)
        x[i, top:top + SQUARE, left:left + SQUARE] = 255
    return x, y


def _classifier():
    """The layout build_classifier makes (to_rgb, preprocess, a `backbone` layer holding a conv
    model, logits, probabilities), with a conv net small enough to train in a second."""
    feat = keras.Input((SIDE, SIDE, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(feat)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="features")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    net = keras.Model(feat, h, name="tiny_cnn")
    inputs = keras.Input((SIDE, SIDE, 1), name="image")
    x = BackbonePreprocessing("tf", name="preprocess")(ToRGB(name="to_rgb")(inputs))
    x = Backbone(net, name="backbone")(x)
    x = keras.layers.Dense(2, name="logits")(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(x))


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x, y = _images(128, rng)
    model = _classifier()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    return model


@pytest.mark.parametrize("corner", [(0, 0), (SIDE - SQUARE, SIDE - SQUARE)])
def test_most_heat_is_where_the_class_evidence_is(trained, corner):
    rng = np.random.default_rng(1)
    x, y = _images(8, rng, corner=corner)
    assert trained.evaluate(x, y, verbose=0)[1] >= 0.75  # the model did learn the square
    heat = recipes.grad_cam(trained, x[y == 1], class_index=1)
    assert heat.shape == (4, SIDE, SIDE) and heat.min() >= 0 and heat.max() <= 1
    top, left = corner
    inside = heat[:, top:top + SQUARE, left:left + SQUARE].sum(axis=(1, 2))
    share = inside / heat.sum(axis=(1, 2))
    assert np.all(share > 0.5), share


def test_explain_writes_one_png_per_image_and_checks_the_class(trained, tmp_path):
    from PIL import Image

    x, _ = _images(2, np.random.default_rng(2), corner=(0, 0))
    for i, image in enumerate(x):
        Image.fromarray(image[..., 0]).save(tmp_path / f"img{i}.png")
    (tmp_path / "bad.png").write_bytes(b"broken")
    result = recipes.after.explain(trained, tmp_path, out=tmp_path / "cam", class_index="1")
    assert sorted(p.name for p in result["written"]) == ["img0_gradcam.png", "img1_gradcam.png"]
    assert list(result["errors"]) == [str(tmp_path / "bad.png")]
    with pytest.raises(ValueError, match="Unknown class"):
        recipes.after.explain(trained, tmp_path, out=tmp_path / "cam", class_index="cat")
    with pytest.raises(ValueError, match="class_index"):
        recipes.grad_cam(trained, x, class_index=2)


def _check_cam_layer(name, **build):
    from recipes.after.gradcam import cam_layer_name

    spec = recipes.backbone_info(name)
    size = max(spec.min_size, 32)
    net = spec.get_builder()(include_top=False, weights=None, input_shape=(size, size, 3),
                             pooling="avg", **dict(spec.builder_kwargs), **build)
    layer = cam_layer_name(net)
    assert spec.cam_layer in (None, layer)
    assert len(net.get_layer(layer).output.shape) == 4


def test_cam_layer_of_a_small_backbone_exists_and_is_4d():
    _check_cam_layer("mobilenet_v3_small", alpha=0.75)  # no name: found by shape


@pytest.mark.slow
@pytest.mark.parametrize("name", recipes.list_backbones())
def test_cam_layer_of_every_backbone_exists_and_is_4d(name):
    _check_cam_layer(name)
