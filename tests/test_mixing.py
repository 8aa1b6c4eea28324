"""Tests for recipes.mixing: MixUp/CutMix on integer labels, label smoothing, soft-label metrics."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from recipes.mixing import MixedAccuracy, SmoothedCrossentropy, mix_batches

NUM_CLASSES = 5


def _unique_images(batch=4, size=16):
    # Every pixel of every image has a different value, so each output pixel names its source.
    pixels = np.arange(batch * size * size, dtype="float32").reshape(batch, size, size, 1)
    return pixels + 1.0


def _dataset(images, labels, batch=None):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch or len(images))


def _repeated(images, labels, count):
    # `count` copies of one batch: every batch gets its own lambda/box from a single iterator.
    return tf.data.Dataset.from_tensors((images, labels)).repeat(count)


def _one_hot(labels, n=NUM_CLASSES):
    return np.eye(n, dtype="float32")[labels]


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).astype("float32")[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    return images[order], d.target[order].astype("int64")


def test_mixup_images_and_labels_are_the_matching_mix():
    x = np.random.default_rng(0).uniform(0, 255, (4, 6, 6, 3)).astype("float32")
    y = np.array([0, 1, 2, 3])
    mixed = mix_batches(_repeated(x, y, 3), NUM_CLASSES, mixup=0.4, cutmix=0.0, seed=0)
    lams = []
    for images, labels in mixed:
        images, labels = images.numpy(), labels.numpy()
        assert labels.shape == (4, NUM_CLASSES) and labels.dtype == np.float32
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
        lam = labels[0, 0]  # image 0 (class 0) is mixed with image 3 (class 3)
        assert 0.0 < lam < 1.0
        partner = x[::-1]
        np.testing.assert_allclose(images, lam * x + (1 - lam) * partner, rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(labels, lam * _one_hot(y) + (1 - lam) * _one_hot(y[::-1]), atol=1e-6)
        lams.append(lam)
    assert len(set(np.round(lams, 6))) == 3  # a new lambda every batch


def test_cutmix_box_comes_from_the_other_image_and_sets_the_label_weight():
    x = _unique_images()
    y = np.array([0, 1, 2, 3])
    mixed = mix_batches(_repeated(x, y, 12), NUM_CLASSES, mixup=0.0, cutmix=1.0, seed=1)
    boxes = 0
    for images, labels in mixed:
        images, labels = images.numpy(), labels.numpy()
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
        pasted = images != x
        # Pasted pixels are exactly the partner's pixels; the rest is untouched.
        np.testing.assert_array_equal(images[pasted], x[::-1][pasted])
        np.testing.assert_array_equal(images[~pasted], x[~pasted])
        mask = pasted[0, :, :, 0]
        assert all((pasted[i, :, :, 0] == mask).all() for i in range(4))  # one box per batch
        area = mask.mean()
        lam = labels[0, 0]
        assert lam == pytest.approx(1.0 - area, abs=1e-6)  # the actual pasted fraction
        np.testing.assert_allclose(labels, lam * _one_hot(y) + (1 - lam) * _one_hot(y[::-1]), atol=1e-6)
        if mask.any():
            boxes += 1
            rows, cols = np.where(mask)
            box = np.zeros_like(mask)
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            np.testing.assert_array_equal(mask, box)  # a rectangle
    assert boxes >= 6


def _kind(images, x):
    from_self, from_partner = images == x, images == x[::-1]
    if (from_self | from_partner).all():
        return "cutmix"
    return "mixup"


def test_switch_prob_picks_between_mixup_and_cutmix():
    x = _unique_images(size=8)
    y = np.array([0, 1, 2, 3])
    kinds = {}
    for switch_prob in (0.0, 0.5, 1.0):
        mixed = mix_batches(
            _repeated(x, y, 16), NUM_CLASSES, mixup=1.0, cutmix=1.0, switch_prob=switch_prob, seed=3,
        )
        kinds[switch_prob] = {_kind(images.numpy(), x) for images, _ in mixed}
    assert kinds == {0.0: {"mixup"}, 0.5: {"mixup", "cutmix"}, 1.0: {"cutmix"}}


def test_prob_zero_passes_batches_through():
    x = _unique_images()
    y = np.array([0, 1, 2, 3])
    images, labels = next(iter(mix_batches(_dataset(x, y), NUM_CLASSES, prob=0.0)))
    np.testing.assert_array_equal(images.numpy(), x)
    np.testing.assert_array_equal(labels.numpy(), _one_hot(y))


def test_same_seed_same_batches_and_other_label_layouts():
    x = np.random.default_rng(1).uniform(0, 255, (6, 8, 8, 3)).astype("uint8")
    y = np.array([0, 1, 2, 3, 4, 0])
    runs = [
        mix_batches(_dataset(x, labels, 3), NUM_CLASSES, seed=5)
        for labels in (y, y[:, None].astype("int32"), _one_hot(y))
    ]
    reference = [(i.numpy(), lab.numpy()) for i, lab in runs[0]]
    assert [i.shape for i, _ in reference] == [(3, 8, 8, 3), (3, 8, 8, 3)]
    for run in runs[1:]:
        for (i, lab), (ri, rlab) in zip(run, reference, strict=True):
            np.testing.assert_allclose(i.numpy(), ri)
            np.testing.assert_allclose(lab.numpy(), rlab)
    next_epoch = [lab.numpy() for _, lab in runs[0]]
    assert not all(np.allclose(a, b) for a, (_, b) in zip(next_epoch, reference, strict=True))
    assert runs[0].cardinality().numpy() == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mixup": -0.1}, "mixup must be a number >= 0"),
        ({"mixup": 0.0, "cutmix": 0.0}, "needs mixup > 0 or cutmix > 0"),
        ({"switch_prob": 1.5}, "switch_prob must be a number in [0, 1]"),
        ({"prob": -1}, "prob must be"),
        ({"seed": "a"}, "seed must be an int"),
        ({"cutmix": float("nan")}, "cutmix must be a number"),
    ],
)
def test_mix_batches_rejects_bad_settings(kwargs, message):
    ds = _dataset(_unique_images(), np.arange(4))
    with pytest.raises(ValueError) as info:
        mix_batches(ds, NUM_CLASSES, **kwargs)
    assert message in str(info.value)


def test_mix_batches_rejects_bad_datasets():
    x, y = _unique_images(), np.arange(4)
    with pytest.raises(ValueError, match="call .batch\\(\\) first"):
        mix_batches(tf.data.Dataset.from_tensor_slices((x, y)), NUM_CLASSES)
    with pytest.raises(ValueError, match="labels with shape \\(None, 3\\)"):
        mix_batches(_dataset(x, np.zeros((4, 3), "float32")), NUM_CLASSES)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        mix_batches(_dataset(x, y), 1)
    with pytest.raises(ValueError, match="\\(images, labels\\) pairs"):
        mix_batches(tf.data.Dataset.from_tensor_slices(x).batch(2), NUM_CLASSES)


PROBS = np.array([[0.7, 0.2, 0.1]], "float32")


def _closed_form(target, probs, eps):
    smoothed = (1 - eps) * np.asarray(target, "float64") + eps / probs.shape[-1]
    return float(-(smoothed * np.log(probs)).sum(axis=-1).mean())


@pytest.mark.parametrize(
    "y_true, target",
    [
        (np.array([0]), [1.0, 0.0, 0.0]),
        (np.array([[0]]), [1.0, 0.0, 0.0]),
        (np.array([[1.0, 0.0, 0.0]], "float32"), [1.0, 0.0, 0.0]),
        (np.array([[0.3, 0.7, 0.0]], "float32"), [0.3, 0.7, 0.0]),
    ],
)
def test_label_smoothing_matches_the_closed_form(y_true, target):
    loss = SmoothedCrossentropy(label_smoothing=0.1)
    expected = _closed_form([target], PROBS, 0.1)
    assert float(loss(y_true, PROBS)) == pytest.approx(expected, rel=1e-6)
    # By hand for the integer case: 0.9333*-ln(0.7) + 0.0333*(-ln(0.2) - ln(0.1)) = 0.46330
    if target == [1.0, 0.0, 0.0]:
        assert expected == pytest.approx(
            -(0.9 + 0.1 / 3) * math.log(0.7) - (0.1 / 3) * (math.log(0.2) + math.log(0.1)), rel=1e-6
        )


def test_no_smoothing_equals_keras_crossentropies_and_logits_work():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 4)).astype("float32")
    probs = np.asarray(keras.ops.softmax(logits))
    y = rng.integers(0, 4, 8)
    ours = float(SmoothedCrossentropy()(y, probs))
    assert ours == pytest.approx(float(keras.losses.SparseCategoricalCrossentropy()(y, probs)), rel=1e-5)
    from_logits = float(SmoothedCrossentropy(0.2, from_logits=True)(y, logits))
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    assert from_logits == pytest.approx(float(reference(np.eye(4)[y], logits)), rel=1e-5)


def test_loss_config_round_trip_and_bad_smoothing():
    loss = SmoothedCrossentropy(0.15, from_logits=True, name="ls")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, SmoothedCrossentropy)
    assert (restored.label_smoothing, restored.from_logits, restored.name) == (0.15, True, "ls")
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ValueError, match="label_smoothing must be"):
            SmoothedCrossentropy(bad)


def test_metrics_take_integer_and_soft_labels():
    probs = np.array([[0.6, 0.3, 0.1], [0.3, 0.1, 0.6], [0.5, 0.4, 0.1]], "float32")
    for labels in (
        np.array([0, 1, 1]),
        np.array([[0], [1], [1]]),
        np.array([[0.8, 0.2, 0.0], [0.0, 0.6, 0.4], [0.3, 0.7, 0.0]], "float32"),
    ):
        accuracy = MixedAccuracy()
        accuracy.update_state(labels, probs)
        assert float(accuracy.result()) == pytest.approx(1 / 3)
        top2 = MixedAccuracy(k=2, name="top2_accuracy")  # what recipes.training uses with k=5
        top2.update_state(labels, probs)
        assert float(top2.result()) == pytest.approx(2 / 3)  # class 1 is 3rd for sample 1
    assert MixedAccuracy().name == "accuracy"
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(MixedAccuracy(k=3, name="top3"))
    )
    assert isinstance(restored, MixedAccuracy) and (restored.k, restored.name) == (3, "top3")
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        MixedAccuracy(k=0)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        MixedAccuracy(k=1.5)



def _tiny_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


@pytest.mark.parametrize(
    "trick",
    [{"mixup": 0.2}, {"cutmix": 1.0}, {"label_smoothing": 0.1}],
    ids=["mixup", "cutmix", "label_smoothing"],
)
def test_digits_still_train_with_each_trick(digits, trick):
    images, labels = digits
    keras.utils.set_random_seed(0)
    # The loss, metrics and batch transform recipes.training compiles for these tricks.
    loss = SmoothedCrossentropy(label_smoothing=trick.get("label_smoothing", 0.0))
    metrics = [MixedAccuracy(), MixedAccuracy(k=5, name="top5_accuracy")]
    mixing = {k: v for k, v in trick.items() if k in ("mixup", "cutmix")}
    transform = (
        (lambda ds: mix_batches(ds, 10, **{"mixup": 0.0, "cutmix": 0.0, **mixing}, seed=0))
        if mixing else None
    )
    model = _tiny_model()
    # XLA compilation costs more than it saves in a 1-epoch CPU run.
    model.compile(keras.optimizers.Adam(3e-3), loss=loss, metrics=metrics, jit_compile=False)
    train = _dataset(images[:1400], labels[:1400], 64)
    if transform is not None:
        train = transform(train)
    # Soft training labels and integer validation labels through the same compiled loss/metrics.
    history = model.fit(
        train, validation_data=(images[1400:], labels[1400:]), epochs=1, verbose=0
    )
    assert history.history["val_accuracy"][-1] > 0.5  # chance is 0.1
    assert history.history["val_loss"][-1] < math.log(10)


def test_compiled_model_saves_and_reloads_without_custom_objects(tmp_path, digits):
    images, labels = digits
    loss = SmoothedCrossentropy(label_smoothing=0.1)
    metrics = [MixedAccuracy(), MixedAccuracy(k=5, name="top5_accuracy")]
    model = _tiny_model()
    model.compile("adam", loss=loss, metrics=metrics, jit_compile=False)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.loss, SmoothedCrossentropy) and reloaded.loss.label_smoothing == 0.1
    before = model.evaluate(images[:64], labels[:64], verbose=0, return_dict=True)
    after = reloaded.evaluate(images[:64], labels[:64], verbose=0, return_dict=True)
    assert set(after) == {"loss", "accuracy", "top5_accuracy"}
    for key, value in before.items():
        assert after[key] == pytest.approx(value, rel=1e-5)
