"""Tests for build_classifier's regularization options: dropout, L1/L2, head BatchNorm, stochastic depth."""

import keras
import numpy as np
import pytest

from recipes.builder import build_classifier
from recipes.weights import find_backbone

SMALL = dict(image_size=32, alpha=0.25, input_shape=(8, 8, 1))


@pytest.fixture(scope="module")
def default_model():
    return build_classifier("mobilenet", 10, **SMALL)  # dropout 0.2, no penalties, no head BN


def _images(count=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, 8, 8, 1)).astype("float32")


def _penalty(kernels, l1, l2):
    return sum(
        l1 * np.abs(k).sum(dtype="float64") + l2 * np.square(k, dtype="float64").sum()
        for k in kernels
    )


def _total(losses):
    return float(sum(float(keras.ops.convert_to_numpy(loss)) for loss in losses))


def test_dropout_layers_rates_and_training_only_noise():
    model = build_classifier("mobilenet", 10, dropout=0.3, dense_units=(16,), **SMALL)
    assert model.get_layer("head_dropout").rate == 0.3
    assert model.get_layer("head_dropout_0").rate == 0.3
    x = _images()
    a, b = model(x, training=True), model(x, training=True)
    assert not np.allclose(np.asarray(a), np.asarray(b))  # a new mask every call
    np.testing.assert_array_equal(
        np.asarray(model(x, training=False)), np.asarray(model(x, training=False))
    )

    plain = build_classifier("mobilenet", 10, dropout=0.0, dense_units=(16,), **SMALL)
    assert not [layer for layer in plain.layers if isinstance(layer, keras.layers.Dropout)]
    # Without dropout a training-mode pass is deterministic (BatchNorm uses batch statistics).
    np.testing.assert_allclose(
        np.asarray(plain(x, training=True)), np.asarray(plain(x, training=True)), atol=1e-6
    )
    with pytest.raises(ValueError, match="dropout must be a number in \\[0, 1"):
        build_classifier("mobilenet", 10, dropout=1.0, **SMALL)


def test_l1_l2_penalties_enter_the_loss_in_closed_form(default_model):
    l1, l2 = 1e-3, 1e-2
    model = build_classifier("mobilenet", 10, dense_units=(16,), l1=l1, l2=l2, dropout=0.0, **SMALL)
    head = [model.get_layer(name).kernel for name in ("head_dense_0", "logits")]
    assert len(model.losses) == 2  # the head kernels only; biases and backbone are not penalized
    expected = _penalty([np.asarray(k) for k in head], l1, l2)
    assert expected > 0
    assert _total(model.losses) == pytest.approx(expected, rel=1e-5)

    # The trainer adds them to the data loss (what train_step minimizes).
    model.compile("sgd", loss="sparse_categorical_crossentropy", jit_compile=False)
    x, y = _images(8), np.arange(8)
    y_pred = model(x, training=False)
    data_loss = float(keras.losses.SparseCategoricalCrossentropy()(y, y_pred))
    total = float(model.compute_loss(x=x, y=y, y_pred=y_pred, training=False))
    assert total == pytest.approx(data_loss + expected, rel=1e-5)

    assert default_model.losses == []
    with pytest.raises(ValueError, match="l2 must be a number >= 0"):
        build_classifier("mobilenet", 10, l2=-1.0, **SMALL)


def _backbone_kernels(model):
    backbone = find_backbone(model)
    conv = [layer.kernel for layer in backbone.layers if type(layer) is keras.layers.Conv2D]
    depthwise = [
        layer.kernel for layer in backbone.layers if isinstance(layer, keras.layers.DepthwiseConv2D)
    ]
    return conv, depthwise


def test_regularize_backbone_penalizes_backbone_conv_kernels():
    l1, l2 = 1e-4, 1e-3
    model = build_classifier(
        "mobilenet", 10, l1=l1, l2=l2, regularize_backbone=True, dropout=0.0, **SMALL
    )
    conv, depthwise = _backbone_kernels(model)
    assert conv and depthwise
    assert len(model.losses) == len(conv) + len(depthwise) + 1  # + the logits kernel
    kernels = [np.asarray(k) for k in (*conv, *depthwise, model.get_layer("logits").kernel)]
    assert _total(model.losses) == pytest.approx(_penalty(kernels, l1, l2), rel=1e-5)
    head_only = build_classifier("mobilenet", 10, l1=l1, l2=l2, **SMALL)
    assert len(head_only.losses) == 1


@pytest.fixture(scope="module")
def regularized_and_reloaded(tmp_path_factory):
    model = build_classifier("mobilenet", 10, l2=1e-3, regularize_backbone=True, **SMALL)
    path = tmp_path_factory.mktemp("reg") / "reg.keras"
    model.save(path)
    return model, keras.models.load_model(path)


def test_backbone_conv2d_penalty_survives_save_and_reload(regularized_and_reloaded):
    _, reloaded = regularized_and_reloaded
    conv, _ = _backbone_kernels(reloaded)
    assert conv and all(k.regularizer is not None for k in conv)
    assert reloaded.get_layer("logits").kernel.regularizer is not None


def test_backbone_depthwise_penalty_survives_save_and_reload(regularized_and_reloaded):
    model, reloaded = regularized_and_reloaded
    assert len(reloaded.losses) == len(model.losses)
    assert _total(reloaded.losses) == pytest.approx(_total(model.losses), rel=1e-5)


def test_bare_call_is_inference_without_resizing():
    # Input already at image_size: no Resizing layer; the augmentation layer must not switch the
    # rest of the model into training mode either.
    model = build_classifier(
        "mobilenet", 10, image_size=32, alpha=0.25, input_shape=(32, 32, 1), dropout=0.5,
        augmentation="heavy",
    )
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(model(x, training=False)), atol=1e-6)


def test_bare_call_is_inference_with_resizing(default_model):
    x = _images()
    np.testing.assert_allclose(
        np.asarray(default_model(x)), np.asarray(default_model(x, training=False)), atol=1e-6
    )


def test_head_batchnorm_normalizes_pooled_features(default_model):
    model = build_classifier("mobilenet", 10, head_batchnorm=True, **SMALL)
    bn = model.get_layer("head_bn")
    assert isinstance(bn, keras.layers.BatchNormalization)
    assert bn.input.shape[-1] == find_backbone(model).output.shape[-1]
    assert model.get_layer("head_dropout").input is bn.output
    before = np.asarray(bn.moving_mean).copy()
    model(_images(8), training=True)  # a training pass updates the moving statistics
    assert not np.allclose(np.asarray(bn.moving_mean), before)
    assert "head_bn" not in [layer.name for layer in default_model.layers]


def test_efficientnet_drop_connect_rate_scales_block_drop_rates():
    def drop_rates(model):
        backbone = find_backbone(model)
        return {layer.name: layer.rate for layer in backbone.layers if layer.name.endswith("drop")}

    shape = dict(image_size=32, input_shape=(8, 8, 1))
    default = drop_rates(build_classifier("efficientnet_b0", 10, **shape))
    model = build_classifier("efficientnet_b0", 10, drop_connect_rate=0.4, **shape)
    scaled = drop_rates(model)
    assert scaled.keys() == default.keys() and len(scaled) >= 5
    values = list(scaled.values())
    assert values == sorted(values) and values[0] > 0  # grows with depth
    assert max(values) == pytest.approx(0.4)  # the deepest block gets the rate
    ratios = {round(scaled[name] / default[name], 6) for name in scaled}
    assert len(ratios) == 1  # the same linear-in-depth profile as Keras' default
    # The rate is what the layer config (and so a saved model) carries.
    backbone = find_backbone(model)
    assert backbone.get_layer("block6d_drop").get_config()["rate"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="applies to EfficientNet backbones only"):
        build_classifier("mobilenet", 10, drop_connect_rate=0.1, **SMALL)


@pytest.mark.slow
def test_digits_still_train_with_all_tricks_on_a_real_backbone():
    # ~40 s on 2 CPU cores, mostly tracing MobileNet's train step: run with `-m slow`.
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from recipes.mixing import mixing_setup

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], d.target[order]
    keras.utils.set_random_seed(0)
    model = build_classifier(
        "mobilenet", 10, dropout=0.1, l2=1e-4, head_batchnorm=True,
        augmentation=["translation:0.1"], **SMALL,
    )
    loss, metrics, transform = mixing_setup(10, mixup=0.2, cutmix=1.0, label_smoothing=0.1, seed=0)
    model.compile(keras.optimizers.Adam(3e-3), loss=loss, metrics=metrics, jit_compile=False)
    train = tf.data.Dataset.from_tensor_slices((images[:1400], labels[:1400])).batch(64)
    history = model.fit(
        transform(train), validation_data=(images[1400:], labels[1400:]), epochs=4,
        callbacks=[transform.stop_callback(4, 1)], verbose=0,
    )
    assert history.history["val_accuracy"][-1] > 0.3  # chance is 0.1


def test_make_optimizer_weight_decay_spares_biases_and_norm_parameters():
    from recipes.training import make_optimizer

    def decay_once(exclude):
        inputs = keras.Input((4, 4, 3))
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.LayerNormalization(name="ln")(keras.layers.Flatten()(x))
        model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
        if exclude:  # what recipes.train compiles
            optimizer = make_optimizer("adamw", 0.1, weight_decay=0.5)
        else:
            optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
        variables = model.trainable_variables
        rng = np.random.default_rng(0)
        for v in variables:  # biases and betas start at 0, where decay would not show
            v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
        before = {v.path: np.asarray(v).copy() for v in variables}
        # Zero gradients: Adam's own step is 0, so only the decoupled decay moves the weights.
        optimizer.apply([keras.ops.zeros_like(v) for v in variables], variables)
        return {v.path: (v.name, before[v.path], np.asarray(v)) for v in variables}

    names_seen = set()
    for name, old, new in decay_once(exclude=True).values():
        names_seen.add(name)
        if name in ("bias", "gamma", "beta"):
            np.testing.assert_array_equal(new, old)
        else:
            np.testing.assert_allclose(new, old * (1 - 0.1 * 0.5), rtol=1e-6)
    assert {"kernel", "bias", "gamma", "beta"} <= names_seen
    for _, old, new in decay_once(exclude=False).values():  # Keras' default decays everything
        np.testing.assert_allclose(new, old * (1 - 0.1 * 0.5), rtol=1e-6)

