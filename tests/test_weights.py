"""Weights: local files, the Keras cache path, the offline error, save_backbone round trips."""

import h5py
import keras
import numpy as np
import pytest

import recipes


def _backbone_weights(model):
    return [w.copy() for w in recipes.find_backbone(model).get_weights()]


def test_weights_path_route_loads_the_file(tmp_path):
    source = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25)
    path = recipes.save_backbone(source, tmp_path / "bb.weights.h5")
    assert path.with_name("bb.weights.h5.json").exists()
    loaded = recipes.build_classifier("mobilenet", 5, image_size=32, alpha=0.25, weights=str(path))
    fresh = recipes.build_classifier("mobilenet", 5, image_size=32, alpha=0.25)
    for a, b in zip(_backbone_weights(source), _backbone_weights(loaded)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(_backbone_weights(source), _backbone_weights(fresh)))
    # identical backbone outputs on real-looking input
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(recipes.find_backbone(source)(x, training=False)),
        keras.ops.convert_to_numpy(recipes.find_backbone(loaded)(x, training=False)),
        rtol=1e-5, atol=1e-6,
    )


def test_pretrained_backbone_runs_bn_in_inference_mode(tmp_path):
    source = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25)
    path = recipes.save_backbone(source, tmp_path / "bb.weights.h5")
    model = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, weights=str(path))
    backbone = recipes.find_backbone(model)
    bn = next(layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    before = bn.moving_mean.numpy().copy()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), before)


def test_weights_file_for_another_backbone_names_both(tmp_path):
    source = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25)
    path = recipes.save_backbone(source, tmp_path / "bb.weights.h5")
    with pytest.raises(ValueError, match=r"saved from backbone='mobilenet' alpha=0.25.*alpha=0.5"):
        recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.5, weights=str(path))
    with pytest.raises(ValueError, match=r"backbone='mobilenet'.*backbone='mobilenet_v2'"):
        recipes.build_classifier("mobilenet_v2", 3, image_size=32, alpha=0.35, weights=str(path))
    # Without the sidecar, Keras' own shape check is turned into a clear error.
    path.with_name("bb.weights.h5.json").unlink()
    with pytest.raises(ValueError, match="does not fit backbone 'mobilenet_v2'"):
        recipes.build_classifier("mobilenet_v2", 3, image_size=32, alpha=0.35, weights=str(path))


def test_save_backbone_rejects_bad_suffix(tmp_path):
    model = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25)
    with pytest.raises(ValueError, match=r"must end in \.weights\.h5"):
        recipes.save_backbone(model, tmp_path / "bb.h5")


def test_imagenet_offline_gives_one_clear_error(keras_home):
    fname, _ = recipes.weights.imagenet_weights_file("resnet50")
    assert fname == "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with pytest.raises(recipes.WeightsUnavailableError) as info:
        recipes.build_classifier("resnet50", 3, image_size=32, weights="imagenet")
    message = str(info.value)
    assert fname in message
    assert str(keras_home / "models") in message
    assert "copy" in message and "weights='/path/to/file.h5'" in message


def test_imagenet_loads_from_the_keras_cache(keras_home):
    """A weights file placed in the cache under Keras' own name is what weights='imagenet' loads."""
    from keras.src.legacy.saving import legacy_h5_format

    fname, _ = recipes.weights.imagenet_weights_file("mobilenet", alpha=0.25, image_size=128)
    assert fname == "mobilenet_2_5_128_tf_no_top.h5"
    reference = keras.applications.MobileNet(
        include_top=False, weights=None, input_shape=(128, 128, 3), alpha=0.25
    )
    with h5py.File(keras_home / "models" / fname, "w") as f:  # the legacy layout Keras publishes
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    model = recipes.build_classifier("mobilenet", 4, alpha=0.25, image_size=128, weights="imagenet")
    for a, b in zip(reference.get_weights(), recipes.find_backbone(model).get_weights()):
        np.testing.assert_array_equal(a, b)
