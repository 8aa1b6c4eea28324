"""Tests for recipes.augment (augmentation layers, tf.data placement) and recipes.preview."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from recipes.augment import (
    OPS,
    PRESETS,
    AugmentationPipeline,
    PixelNoise,
    apply_augmentation,
    augmentation,
    parse_augmentation,
)
from recipes.preview import augment_preview

ALL_OPS = [
    "flip", "rotation:0.1", "zoom:0.2", "translation:0.1", "brightness:0.2", "contrast:0.2",
    "noise:0.05", "erasing:1.0", "randaugment", "augmix",
]


def _images(shape=(4, 16, 16, 3), seed=0):
    return np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], d.target[order].astype("int64")


@pytest.mark.parametrize(
    "spec, shape",
    [
        *((preset, (4, 16, 16, 3)) for preset in PRESETS),
        ("rotation:0.1,zoom:0.2", (4, 16, 16, 3)),
        (ALL_OPS, (3, 12, 12, 1)),  # every op, on grayscale images (the data placement sees those)
    ],
)
def test_identity_at_inference_random_in_training(spec, shape):
    x = _images(shape)
    layer = augmentation(spec, seed=1)
    inference = layer(x, training=False)
    np.testing.assert_array_equal(np.asarray(inference), x)
    trained = layer(x, training=True)
    assert tuple(trained.shape) == x.shape
    assert trained.dtype == tf.float32
    assert np.abs(np.asarray(trained) - x).mean() > 1.0


def _augmented(spec, seed, x):
    return np.asarray(augmentation(spec, seed=seed)(x, training=True))


def test_deterministic_with_seed():
    x = _images((2, 12, 12, 3))
    ops = ALL_OPS[:-2]  # every op but RandAugment and AugMix (below)
    first = _augmented(ops, 7, x)
    np.testing.assert_allclose(_augmented(ops, 7, x), first, atol=1e-4)
    assert not np.allclose(_augmented(ops, 8, x), first, atol=1e-2)
    np.testing.assert_allclose(
        _augmented("randaugment", 7, x), _augmented("randaugment", 7, x), atol=1e-4
    )
    # AugMix is not covered: Keras' AugMix picks its operations with Python's `random` module.


def test_bare_call_is_identity_like_dropout():
    # Keras preprocessing layers default to training=True; ours only augment when asked to.
    x = _images()
    layer = augmentation("heavy", seed=0)
    assert isinstance(layer, AugmentationPipeline)
    np.testing.assert_array_equal(np.asarray(layer(x)), x)
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dropout(0.5)(layer(inputs))
    model = keras.Model(inputs, outputs)
    np.testing.assert_array_equal(np.asarray(model(x)), x)  # Dropout stays off too
    assert not np.allclose(np.asarray(model(x, training=True)), x)


def test_preset_contents_and_order():
    pipeline = augmentation("heavy", seed=0)
    assert isinstance(pipeline, keras.layers.Pipeline)
    kinds = [type(layer).__name__ for layer in pipeline.layers]
    assert kinds == [
        "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomBrightness",
        "RandomContrast", "PixelNoise", "RandomErasing",
    ]
    randaugment = augmentation("randaugment").layers
    assert [type(layer).__name__ for layer in randaugment] == ["RandomFlip", "RandAugment"]
    assert randaugment[1].value_range == (0.0, 255.0)
    brightness = pipeline.layers[4]
    assert tuple(brightness.value_range) == (0.0, 255.0)


def test_list_and_comma_string_agree_and_strengths_apply():
    assert parse_augmentation("rotation:0.1, zoom:0.2") == parse_augmentation(
        ["rotation:0.1", "zoom:0.2"]
    )
    layers = augmentation(["rotation:0.2", "zoom", "flip:vertical", "medium"]).layers
    assert layers[0].factor in (0.2, (-0.2, 0.2))
    assert layers[1].height_factor in (OPS["zoom"][0], (-OPS["zoom"][0], OPS["zoom"][0]))
    assert layers[2].mode == "vertical"
    assert len(layers) == 3 + len(PRESETS["medium"])  # presets expand inside lists


def test_flip_false_removes_every_flip():
    names = [name for name, _ in parse_augmentation(["flip", "medium", "zoom"], flip=False)]
    assert "flip" not in names and names[-1] == "zoom"
    for preset in PRESETS:
        layers = augmentation(preset, flip=False).layers
        assert not any(isinstance(layer, keras.layers.RandomFlip) for layer in layers)
    assert augmentation(["flip"], flip=False) is None


@pytest.mark.parametrize("spec", [None, "none", "", []])
def test_none_gives_no_layer(spec):
    assert augmentation(spec) is None


def test_layer_passes_through_and_layer_items_are_kept():
    custom = keras.layers.RandomFlip("vertical")
    assert augmentation(custom) is custom
    assert augmentation(["zoom", custom]).layers[1] is custom


def test_noise_is_relative_to_value_range():
    zeros = np.zeros((4, 64, 64, 3), "float32")
    std_255 = float(np.std(np.asarray(PixelNoise(0.05, seed=0)(zeros, training=True))))
    std_1 = float(np.std(np.asarray(PixelNoise(0.05, value_range=(0, 1), seed=0)(zeros, training=True))))
    assert std_255 == pytest.approx(0.05 * 255, rel=0.05)
    assert std_1 == pytest.approx(0.05, rel=0.05)
    layer = augmentation("noise:0.1", value_range=(0, 1), seed=0).layers[0]
    assert layer.stddev == 0.1 and layer.value_range == (0.0, 1.0)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("rotaton:0.1", "Did you mean: rotation"),
        ("mediun", "Did you mean: medium"),
        (["zoom:abc"], "Strength of 'zoom' must be a number in (0, 0.9]"),
        ("zoom:2", "Received: zoom:2"),
        ("rotation:0", "Strength of 'rotation'"),
        ("flip:sideways", "Unknown flip mode 'sideways'"),
        (3, "Received: augmentation=3"),
        ([1.5], "Each augmentation item must be"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError) as info:
        augmentation(spec)
    assert message in str(info.value)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="value_range must be"):
        augmentation("light", value_range=(255, 0))
    with pytest.raises(ValueError, match="seed must be an int"):
        augmentation("light", seed=1.5)
    with pytest.raises(ValueError, match="flip must be True or False"):
        augmentation("light", flip="no")


def _normalized(config):
    return json.loads(json.dumps(config))  # tuples and lists compare equal after a round trip


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build_save_and_reload_inside_a_model(preset, tmp_path):
    from recipes.builder import build_classifier

    model = build_classifier(
        "mobilenet", 10, image_size=32, alpha=0.25, input_shape=(8, 8, 1), augmentation=preset
    )
    x = _images((2, 8, 8, 1))
    # In the model graph the layer sees the resized pixels: untouched at inference, changed in
    # training.
    resized = keras.Model(model.input, model.get_layer("resize").output)(x)
    augmented = keras.Model(model.input, model.get_layer("augmentation").output)
    np.testing.assert_array_equal(np.asarray(augmented(x, training=False)), np.asarray(resized))
    assert np.abs(np.asarray(augmented(x, training=True)) - np.asarray(resized)).mean() > 1.0

    path = tmp_path / f"{preset}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)  # no custom_objects
    assert [_normalized(sub.get_config()) for sub in reloaded.get_layer("augmentation").layers] == [
        _normalized(sub.get_config()) for sub in model.get_layer("augmentation").layers
    ]
    np.testing.assert_allclose(
        np.asarray(reloaded(x, training=False)), np.asarray(model(x, training=False)), atol=1e-5
    )


def test_every_op_round_trips_through_serialization():
    layer = augmentation(ALL_OPS, seed=3, value_range=(0, 1))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert [type(sub) for sub in restored.layers] == [type(sub) for sub in layer.layers]
    assert [_normalized(sub.get_config()) for sub in restored.layers] == [
        _normalized(sub.get_config()) for sub in layer.layers
    ]
    noise = restored.layers[6]
    assert isinstance(noise, PixelNoise) and noise.stddev == 0.05
    assert noise.value_range == (0.0, 1.0) and noise.seed == 9


def test_apply_augmentation_maps_batches_in_training_mode():
    x = _images((10, 8, 8, 1)).round().astype("uint8")
    y = np.arange(10)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    out = apply_augmentation(ds, augmentation("heavy", flip=False, seed=0))
    assert out.element_spec[0].dtype == tf.float32
    first = [(i.numpy(), label.numpy()) for i, label in out]
    second = [i.numpy() for i, _ in out]
    assert [i.shape for i, _ in first] == [(4, 8, 8, 1), (4, 8, 8, 1), (2, 8, 8, 1)]
    np.testing.assert_array_equal(np.concatenate([label for _, label in first]), y)
    augmented = np.concatenate([i for i, _ in first])
    assert np.abs(augmented - x).mean() > 1.0
    assert not np.allclose(augmented, np.concatenate(second))  # new randomness every epoch


def test_apply_augmentation_accepts_specs_none_and_sample_weights():
    x, y, w = _images((4, 8, 8, 3)), np.arange(4), np.ones(4, "float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(2)
    assert apply_augmentation(ds, None) is ds
    assert apply_augmentation(ds, "none") is ds
    out = apply_augmentation(ds, "zoom:0.5,noise:0.1")
    assert len(out.element_spec) == 3
    images = np.concatenate([i.numpy() for i, _, _ in out])
    assert np.abs(images - x).mean() > 1.0


def test_apply_augmentation_rejects_bad_datasets():
    x, y = _images((4, 8, 8, 3)), np.arange(4)
    with pytest.raises(ValueError, match="call .batch\\(\\) first"):
        apply_augmentation(tf.data.Dataset.from_tensor_slices((x, y)), "light")
    with pytest.raises(ValueError, match="must yield \\(images, labels\\)"):
        apply_augmentation(tf.data.Dataset.from_tensor_slices(x).batch(2), "light")
    with pytest.raises(ValueError, match="must be a tf.data.Dataset"):
        apply_augmentation(x, "light")


def _tiny_model(aug=None):
    inputs = keras.Input((8, 8, 1))
    x = aug(inputs) if aug is not None else inputs
    x = keras.layers.Rescaling(1 / 255)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


@pytest.mark.parametrize("placement", ["model", "data"])
def test_digits_still_train_with_augmentation(digits, placement):
    images, labels = digits
    keras.utils.set_random_seed(0)
    aug = augmentation("translation:0.1,rotation:0.05,noise:0.02", flip=False, seed=0)
    model = _tiny_model(aug if placement == "model" else None)
    model.compile(
        keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
        jit_compile=False,  # XLA compilation costs more than it saves in a 1-epoch CPU run
    )
    train = tf.data.Dataset.from_tensor_slices((images[:1400], labels[:1400])).batch(64)
    if placement == "data":
        train = apply_augmentation(train, aug)
    model.fit(train, epochs=1, verbose=0)
    _, accuracy = model.evaluate(images[1400:], labels[1400:], verbose=0)
    assert accuracy > 0.5  # chance is 0.1


def test_augment_preview_writes_grid(digits, tmp_path):
    from PIL import Image

    images = digits[0][:6, :, :, 0]  # (count, h, w) grayscale is accepted
    path = augment_preview(images, "heavy", tmp_path / "sub" / "grid.png", n=5, repeats=3, flip=False)
    grid = np.asarray(Image.open(path))
    tile, pad = 64, 2  # 8 px digits are enlarged 8x
    assert grid.shape == (5 * (tile + pad) + pad, 4 * (tile + pad) + pad)
    first = grid[pad:pad + tile, pad:pad + tile]
    expected = np.clip(np.rint(images[0]), 0, 255).astype("uint8").repeat(8, 0).repeat(8, 1)
    np.testing.assert_array_equal(first, expected)
    augmented = grid[pad:pad + tile, 2 * pad + tile:2 * pad + 2 * tile]
    assert np.abs(augmented.astype(int) - expected).mean() > 1.0
    again = augment_preview(images, "heavy", tmp_path / "again.png", n=5, repeats=3, flip=False)
    np.testing.assert_array_equal(np.asarray(Image.open(again)), grid)  # seed=0 by default


def test_augment_preview_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Need at least n=8"):
        augment_preview(_images((3, 8, 8, 3)), "light", tmp_path / "x.png")
    with pytest.raises(ValueError, match="images must have shape"):
        augment_preview(_images((3, 8, 8, 2)), "light", tmp_path / "x.png", n=2)
    with pytest.raises(ValueError, match="Nothing to preview"):
        augment_preview(_images((3, 8, 8, 3)), "none", tmp_path / "x.png", n=2)
    with pytest.raises(ValueError, match="repeats must be an int"):
        augment_preview(_images((3, 8, 8, 3)), "light", tmp_path / "x.png", n=2, repeats=0)
