"""Presets (stopping, backup/resume, NaN), Throughput, GradualUnfreeze, PreciseBN."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import callbacks

# fit() on tf.data warns that shuffle=True (its default) is ignored; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:`shuffle=True` was passed")

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype("float32")
Y = (X @ np.array([[1.0], [-1.0], [0.5], [2.0]], dtype="float32")).astype("float32")
DS = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)


def tiny(optimizer=None):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer or keras.optimizers.SGD(0.01), "mse")
    return model


class EpochLog(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


# --------------------------------------------------------------------------- #
# Presets
# --------------------------------------------------------------------------- #
def test_presets_return_keras_callbacks_with_recipe_defaults(tmp_path):
    stop = callbacks.early_stopping(patience=3, min_delta=0.01, mode="min")
    assert type(stop) is keras.callbacks.EarlyStopping
    assert (stop.monitor, stop.patience, stop.min_delta, stop.restore_best_weights) == (
        "val_loss",
        3,
        0.01,
        True,
    )
    best = callbacks.checkpoint(tmp_path / "sub" / "best.keras")
    assert type(best) is keras.callbacks.ModelCheckpoint and best.save_best_only
    assert (tmp_path / "sub").is_dir()
    assert type(callbacks.backup(tmp_path / "b")) is keras.callbacks.BackupAndRestore
    assert type(callbacks.terminate_on_nan()) is keras.callbacks.TerminateOnNaN
    default = callbacks.default_callbacks(tmp_path / "run", patience=2)
    assert [type(c).__name__ for c in default] == [
        "LearningRateLogger",  # first: a CSVLogger after it records the LR
        "TerminateOnNaN",
        "EarlyStopping",
        "BackupAndRestore",
    ]
    assert default[2].patience == 2
    assert default[3].backup_dir == os.path.join(tmp_path / "run", "backup")
    bare = callbacks.default_callbacks(patience=0, log_lr=False)  # what train uses without out=
    assert [type(c).__name__ for c in bare] == ["TerminateOnNaN"]


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: callbacks.early_stopping(patience=-1), "patience must be an int >= 0"),
        (lambda: callbacks.early_stopping(min_delta=-0.1), "min_delta must be a number"),
        (lambda: callbacks.early_stopping(monitor=""), "monitor must be a non-empty str"),
        (lambda: callbacks.checkpoint("best.h5"), "must end with '.keras'"),
        (lambda: callbacks.backup(""), "directory must be a non-empty path"),
    ],
)
def test_preset_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_early_stopping_stops_and_checkpoint_keeps_best(tmp_path):
    # LR 0: the loss never improves, so training stops after patience + 1 epochs.
    model = tiny(keras.optimizers.SGD(0.0))
    history = model.fit(
        DS,
        validation_data=DS,
        epochs=20,
        verbose=0,
        callbacks=[
            callbacks.early_stopping(patience=2),
            callbacks.checkpoint(tmp_path / "b.keras"),
        ],
    )
    assert len(history.history["loss"]) == 3
    assert (tmp_path / "b.keras").exists()


def test_terminate_on_nan_stops_training():
    bad = X.copy()
    bad[0, 0] = np.nan
    model = tiny()
    log = EpochLog()
    model.fit(
        tf.data.Dataset.from_tensor_slices((bad, Y)).batch(16),
        epochs=5,
        verbose=0,
        callbacks=[callbacks.terminate_on_nan(), log],
    )
    assert log.epochs == [0]


class Kill(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated kill")


def test_killed_run_resumes_at_the_right_epoch_with_the_right_lr(tmp_path):
    run_dir = tmp_path / "run"

    def fit(extra):
        log = EpochLog()
        decay = callbacks.StepDecay(0.1, drop=0.5, every=1)
        model = tiny()
        history = model.fit(
            DS,
            validation_data=DS,
            epochs=6,
            verbose=0,
            callbacks=[*callbacks.default_callbacks(run_dir, patience=100), decay, log, *extra],
        )
        return model, history, log

    with pytest.raises(RuntimeError, match="simulated kill"):
        fit([Kill(3)])
    assert (run_dir / "backup").is_dir()
    model, history, log = fit([])
    assert log.epochs == [3, 4, 5]
    assert int(model.optimizer.iterations) == 6 * 4  # restored counter + 3 epochs
    np.testing.assert_allclose(history.history["learning_rate"], [0.1 * 0.5**e for e in (3, 4, 5)])
    assert not (run_dir / "backup").exists()  # deleted after a clean finish


# --------------------------------------------------------------------------- #
# Throughput
# --------------------------------------------------------------------------- #
def test_throughput_counts_real_images_including_partial_batch(capsys):
    model = tiny()
    meter = callbacks.Throughput()
    history = model.fit(
        X[:50], Y[:50], batch_size=16, epochs=2, verbose=0, validation_data=DS, callbacks=[meter]
    )
    assert meter.images == 50  # 16 + 16 + 16 + 2, not 4 * 16
    for key in ("images_per_second", "epoch_seconds"):
        assert len(history.history[key]) == 2 and min(history.history[key]) > 0
    seconds = history.history["epoch_seconds"][1]
    assert history.history["images_per_second"][1] >= 50 / seconds  # training time <= epoch time
    assert "images/s" in capsys.readouterr().out
    fixed = callbacks.Throughput(batch_size=16, verbose=0)
    model.fit(X[:50], Y[:50], batch_size=16, epochs=1, verbose=0, callbacks=[fixed])
    assert fixed.images == 64
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        callbacks.Throughput(batch_size=0)


# --------------------------------------------------------------------------- #
# GradualUnfreeze
# --------------------------------------------------------------------------- #
def backbone_model():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((4,))
    h = keras.layers.Dense(8, activation="relu", name="b_dense1")(inner_in)
    h = keras.layers.BatchNormalization(name="b_bn")(h)
    h = keras.layers.Dense(8, activation="relu", name="b_dense2")(h)
    h = keras.layers.Dense(8, activation="relu", name="b_dense3")(h)
    backbone = keras.Model(inner_in, h, name="backbone")
    backbone.trainable = False
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(1, name="head")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model, backbone


class WeightWatch(keras.callbacks.Callback):
    """Which layers' weights changed during each epoch."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers
        self.changed = {}

    def _values(self):
        return {
            layer.name: [keras.ops.convert_to_numpy(w).copy() for w in layer.weights]
            for layer in self.layers
        }

    def on_epoch_begin(self, epoch, logs=None):
        self._before = self._values()

    def on_epoch_end(self, epoch, logs=None):
        after = self._values()
        self.changed[epoch] = sorted(
            name
            for name, values in after.items()
            if any(
                not np.array_equal(a, b) for a, b in zip(self._before[name], values, strict=True)
            )
        )


def test_gradual_unfreeze_trains_new_layers_from_their_epoch_and_keeps_bn_frozen():
    model, backbone = backbone_model()
    # Run once before unfreezing so the optimizer is built for the head only and
    # has state that must survive the rebuild.
    model.fit(DS, epochs=1, verbose=0)
    head_slots = [
        keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables if "head" in v.path
    ]
    watch = WeightWatch(
        [backbone.get_layer(n) for n in ("b_dense1", "b_bn", "b_dense2", "b_dense3")]
        + [model.get_layer("head")]
    )
    unfreeze = callbacks.GradualUnfreeze(
        {1: 1, 2: "dense2$", 3: ["b_dense1", "b_bn"]}, target="backbone", verbose=0
    )
    probe_slots = []

    class SlotProbe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            probe_slots.extend(
                keras.ops.convert_to_numpy(v).copy()
                for v in self.model.optimizer.variables
                if "head" in v.path
            )

    model.fit(DS, epochs=4, verbose=0, callbacks=[unfreeze, SlotProbe(), watch])
    assert watch.changed == {
        0: ["head"],
        1: ["b_dense3", "head"],
        2: ["b_dense2", "b_dense3", "head"],
        3: ["b_dense1", "b_dense2", "b_dense3", "head"],
    }
    assert unfreeze.unfrozen == {1: ["b_dense3"], 2: ["b_dense2"], 3: ["b_dense1"]}
    bn = backbone.get_layer("b_bn")
    assert not bn.trainable  # BN stays in inference mode
    # The rebuilt optimizer carried the head's Adam state over.
    for before, after in zip(head_slots, probe_slots, strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(model.optimizer.iterations) == 4 * 5


def test_gradual_unfreeze_rejects_bad_schedules():
    with pytest.raises(ValueError, match="non-empty dict"):
        callbacks.GradualUnfreeze([1, 2])
    with pytest.raises(ValueError, match="schedule epoch must be an int >= 0"):
        callbacks.GradualUnfreeze({-1: 2})
    with pytest.raises(ValueError, match="not a valid regex"):
        callbacks.GradualUnfreeze({0: "("})
    model, _ = backbone_model()
    with pytest.raises(ValueError, match=r"No layer\(s\) \['nope'\]"):
        model.fit(
            DS,
            epochs=1,
            verbose=0,
            callbacks=[callbacks.GradualUnfreeze({0: ["nope"]}, target="backbone")],
        )


# --------------------------------------------------------------------------- #
# PreciseBN
# --------------------------------------------------------------------------- #
class InferenceBN(keras.layers.Layer):
    """Calls its BN with an explicit training=False (pretrained statistics)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bn = keras.layers.BatchNormalization(name="inference_bn")

    def call(self, x):
        return self.bn(x, training=False)


def test_recompute_bn_statistics_gives_exact_population_stats_in_nested_models():
    keras.utils.set_random_seed(0)
    inner_in = keras.Input((3,))
    inner = keras.Model(
        inner_in, keras.layers.BatchNormalization(name="inner_bn")(inner_in), name="inner"
    )
    frozen_in = keras.Input((3,))
    frozen_bn = keras.layers.BatchNormalization(name="frozen_bn")
    frozen = keras.Model(frozen_in, frozen_bn(frozen_in), name="frozen")
    # Keras 3 lets the outer `training` override a functional node's
    # training=False, so freezing is done with trainable=False.
    frozen.trainable = False
    fixed = InferenceBN()
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(3, name="dense")
    h = dense(inputs)
    out = keras.layers.Add()([inner(h), frozen(h, training=False), fixed(h)])
    model = keras.Model(inputs, out)
    data = RNG.normal(loc=3.0, scale=2.0, size=(40, 3)).astype("float32")
    batches = [data[i : i + 16] for i in range(0, 40, 16)]  # 16, 16, 8 rows
    before_frozen = keras.ops.convert_to_numpy(frozen_bn.moving_mean).copy()
    before_fixed = keras.ops.convert_to_numpy(fixed.bn.moving_variance).copy()
    kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
    updated = callbacks.recompute_bn_statistics(model, batches, num_batches=3)
    assert [layer.name for layer in updated] == ["inner_bn"]
    features = data @ kernel + keras.ops.convert_to_numpy(dense.bias)
    bn = inner.get_layer("inner_bn")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), features.mean(0), rtol=1e-5
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance), features.var(0), rtol=1e-4
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(frozen_bn.moving_mean), before_frozen)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fixed.bn.moving_variance), before_fixed
    )
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(dense.kernel), kernel)
    # Only num_batches are used.
    callbacks.recompute_bn_statistics(model, batches, num_batches=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), features[:16].mean(0), rtol=1e-5
    )
    with pytest.raises(ValueError, match="num_batches must be an int >= 1"):
        callbacks.recompute_bn_statistics(model, batches, num_batches=0)
    with pytest.raises(ValueError, match="dataset must be"):
        callbacks.PreciseBN(None)


def test_recompute_bn_statistics_traces_once_for_a_partial_last_batch(monkeypatch):
    # Keras' predict_on_batch traces again for the smaller last batch, a second full trace of
    # the model (4 of 8 s for the default model on 2 CPU cores).
    from callbacks.precise_bn import _StatsModel

    traces = []
    original = _StatsModel.call
    monkeypatch.setattr(_StatsModel, "call", lambda self, x: traces.append(x.shape) or original(self, x))
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()])
    data = RNG.normal(loc=2.0, size=(40, 3)).astype("float32")
    batches = [data[i : i + 16] for i in range(0, 40, 16)]  # 16, 16, 8 rows
    callbacks.recompute_bn_statistics(model, batches, num_batches=3)
    assert len(traces) == 1 and traces[0][0] is None, traces  # one trace, any batch size
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[0].moving_mean),
                               data.mean(0), rtol=1e-5)  # the 8-row batch counted too


def test_precise_bn_callback_runs_before_validation():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(momentum=0.99),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.SGD(0.01), "mse")
    train = tf.data.Dataset.from_tensor_slices((X * 3 + 5, Y)).batch(16)
    history = model.fit(
        train,
        validation_data=train,
        epochs=2,
        verbose=0,
        callbacks=[callbacks.PreciseBN(train, num_batches=4)],
    )
    assert "precise_bn_seconds" in history.history
    # Validation already saw the precise statistics: re-evaluating gives the same loss.
    assert history.history["val_loss"][-1] == pytest.approx(
        model.evaluate(train, verbose=0), rel=1e-5
    )
    bn = model.layers[1]
    features = keras.ops.convert_to_numpy(model.layers[0](X * 3 + 5))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean), features.mean(0), rtol=1e-4, atol=1e-5
    )


def digits_32px():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    x = np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3)
    return x, y


@pytest.mark.slow  # 17 s; the CLI train test checks the same gap through --precise-bn
def test_precise_bn_closes_the_train_inference_gap_of_mobilenet():
    # MobileNet (alpha 0.25, from scratch, BN momentum 0.99) nested in a functional
    # model, trained 3 short epochs: the EMA statistics still carry their init.
    x, y = digits_32px()
    keras.utils.set_random_seed(0)
    order = np.random.permutation(len(x))
    train, test = order[:1408], order[1408:]  # 22 full batches of 64
    base = keras.applications.MobileNet(
        alpha=0.25, weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg"
    )
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(base(inputs)))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "sparse_categorical_crossentropy")
    train_ds = tf.data.Dataset.from_tensor_slices((x[train], y[train])).batch(64)
    model.fit(train_ds, epochs=3, verbose=0)

    def accuracy(training):
        saved = [keras.ops.convert_to_numpy(v).copy() for v in model.weights]
        probs = keras.ops.convert_to_numpy(model(x[test], training=training))
        for variable, value in zip(model.weights, saved, strict=True):
            variable.assign(value)
        return float(np.mean(np.argmax(probs, axis=1) == y[test]))

    ema = accuracy(False)
    batch_stats = accuracy(True)
    updated = callbacks.recompute_bn_statistics(model, train_ds, num_batches=22)
    precise = accuracy(False)
    assert len(updated) == 27  # every BN of the nested backbone
    assert batch_stats > 0.6, batch_stats  # the network did learn
    assert precise > ema + 0.3, (ema, precise)
    assert abs(precise - batch_stats) < 0.05, (precise, batch_stats)
