"""LR decay callbacks, warmup, make_schedule, one-cycle, LR logging, saving, plotting."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import callbacks

# fit() on tf.data warns that shuffle=True (its default) is ignored; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:`shuffle=True` was passed")

EPOCHS, STEPS, BATCH = 6, 4, 8
RNG = np.random.default_rng(0)
X = RNG.normal(size=(STEPS * BATCH, 3)).astype("float32")
Y = (X @ np.array([[1.0], [-2.0], [0.5]], dtype="float32")).astype("float32")
# tf.data input: Keras' per-epoch overhead on numpy input dominates tiny fits.
DS = tf.data.Dataset.from_tensor_slices((X, Y)).batch(BATCH)


def tiny_model(optimizer=None):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer or keras.optimizers.SGD(0.5), "mse")
    return model


class RecordLR(keras.callbacks.Callback):
    """LR the optimizer holds right before each batch (after all on_*_begin hooks)."""

    def __init__(self):
        super().__init__()
        self.lrs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


_SHARED = {}


def fit_lrs(callback, epochs=EPOCHS):
    # One compiled model for all cases: its train function is traced once.
    model = _SHARED.setdefault("model", tiny_model())
    recorder = RecordLR()
    history = model.fit(
        DS,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[callback, recorder],
    )
    return np.array(history.history["learning_rate"]), np.array(recorder.lrs)


# Closed forms at epoch e (W = warmup epochs; decay clock starts after warmup).
def warm(lr, e, w):
    return lr * (e + 1) / w


CASES = [
    (callbacks.StepDecay(0.1, drop=0.5, every=2), lambda e: 0.1 * 0.5 ** math.floor(e / 2)),
    (callbacks.ExponentialDecay(0.1, rate=0.7), lambda e: 0.1 * 0.7**e),
    (callbacks.TimeBasedDecay(0.1, decay=0.5), lambda e: 0.1 / (1 + 0.5 * e)),
    (callbacks.PowerDecay(0.1, epochs=6, power=2.0), lambda e: 0.1 * (1 - e / 6) ** 2),
    (callbacks.LinearDecay(0.1, epochs=6), lambda e: 0.1 * (1 - e / 6)),
    (
        callbacks.CosineDecay(0.1, epochs=6, min_lr=0.01),
        lambda e: 0.01 + 0.09 * (1 + math.cos(math.pi * e / 6)) / 2,
    ),
    (
        callbacks.StepDecay(0.1, drop=0.1, every=2, warmup_epochs=2),
        lambda e: warm(0.1, e, 2) if e < 2 else 0.1 * 0.1 ** math.floor((e - 2) / 2),
    ),
    (
        callbacks.PowerDecay(0.2, epochs=6, power=0.5, warmup_epochs=2),
        lambda e: warm(0.2, e, 2) if e < 2 else 0.2 * (1 - (e - 2) / 4) ** 0.5,
    ),
    (
        callbacks.CosineDecay(0.1, epochs=6, warmup_epochs=3),
        lambda e: warm(0.1, e, 3) if e < 3 else 0.1 * (1 + math.cos(math.pi * (e - 3) / 3)) / 2,
    ),
    (callbacks.ConstantLR(0.05, warmup_epochs=4), lambda e: warm(0.05, e, 4) if e < 4 else 0.05),
    (
        callbacks.StepDecay(0.1, drop=0.5, every=[1, 4]),
        lambda e: 0.1 * 0.5 ** ((e >= 1) + (e >= 4)),
    ),
]


@pytest.mark.parametrize(
    "callback,formula", CASES, ids=lambda c: getattr(c, "__name__", None) or type(c).__name__
)
def test_epoch_callbacks_follow_closed_forms(callback, formula):
    logged, per_batch = fit_lrs(callback)
    expected = np.array([formula(e) for e in range(EPOCHS)])
    np.testing.assert_allclose(logged, expected, rtol=1e-5)
    # per_step=False: constant within each epoch, equal to the logged value.
    np.testing.assert_allclose(per_batch, np.repeat(expected, STEPS), rtol=1e-5)


def test_per_step_is_smooth_matches_as_schedule_and_warms_up_per_step():
    callback = callbacks.ExponentialDecay(0.1, rate=0.5, per_step=True, warmup_steps=4)
    logged, per_batch = fit_lrs(callback)
    schedule = callback.as_schedule(STEPS)
    expected = [float(schedule(i)) for i in range(EPOCHS * STEPS)]
    np.testing.assert_allclose(per_batch, expected, rtol=1e-6)
    # Warmup: lr * (step + 1) / 4, then decay at fractional epochs (step - 4) / STEPS.
    np.testing.assert_allclose(per_batch[:4], [0.025, 0.05, 0.075, 0.1], rtol=1e-6)
    np.testing.assert_allclose(
        per_batch[4:8], [0.1 * 0.5 ** (s / STEPS) for s in range(4)], rtol=1e-6
    )
    # Logged value = LR of the epoch's first step.
    np.testing.assert_allclose(logged, per_batch[::STEPS], rtol=1e-6)


def test_decay_callback_rejects_schedule_optimizer():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model = tiny_model(keras.optimizers.SGD(schedule))
    with pytest.raises(ValueError, match="float learning_rate"):
        model.fit(DS, epochs=1, verbose=0, shuffle=False, callbacks=[callbacks.CosineDecay(0.1, 3)])


@pytest.mark.parametrize(
    "build,message",
    [
        (
            lambda: callbacks.StepDecay(0.1, drop=1.5),
            r"drop must be a number in \(0, 1\]; Received: drop=1.5",
        ),
        (lambda: callbacks.StepDecay(0.1, every=0), "every must be an int >= 1"),
        (lambda: callbacks.StepDecay(0.1, every=[3, 2]), "strictly increasing"),
        (lambda: callbacks.ExponentialDecay(-0.1, 0.5), "initial_lr must be a number"),
        (
            lambda: callbacks.CosineDecay(0.1, epochs=3, warmup_epochs=3),
            "warmup_epochs must be smaller",
        ),
        (lambda: callbacks.CosineDecay(0.1, epochs=3, warmup_steps=3), "needs per_step=True"),
        (lambda: callbacks.TimeBasedDecay(0.1, decay=-1), "decay must be a number"),
        (lambda: callbacks.Warmup(0.1, 10), "LearningRateSchedule"),
        (lambda: callbacks.OneCycle(0.1, 3, moms=(0.9, 0.8)), "moms must be 3 floats"),
    ],
)
def test_bad_arguments_raise_keras_style_value_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


# --------------------------------------------------------------------------- #
# make_schedule
# --------------------------------------------------------------------------- #
def values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_make_schedule_defaults_and_formulas():
    lr, epochs, spe = 0.1, 10, 5
    total = epochs * spe
    make = lambda name, **kw: callbacks.make_schedule(  # noqa: E731
        name, lr, epochs=epochs, steps_per_epoch=spe, **kw
    )
    # step: drop 0.5 every epochs // 3 = 3 epochs.
    np.testing.assert_allclose(
        values(make("step"), [0, 14, 15, 30, 45]), [0.1, 0.1, 0.05, 0.025, 0.0125]
    )
    # exponential: lr * rate ** e with rate = 0.01 ** (1 / epochs): lr / 100 at the end.
    np.testing.assert_allclose(
        values(make("exponential"), [0, 25, total]), [0.1, 0.01, 0.001], rtol=1e-5
    )
    # time: lr / (1 + 9 / epochs * e): lr / 10 at the end.
    np.testing.assert_allclose(values(make("time"), [0, total]), [0.1, 0.01], rtol=1e-5)
    # power 0.9 to zero; cosine and linear to zero.
    np.testing.assert_allclose(float(make("power")(25)), 0.1 * 0.5**0.9, rtol=1e-5)
    np.testing.assert_allclose(values(make("cosine"), [0, 25, total]), [0.1, 0.05, 0.0], atol=1e-7)
    np.testing.assert_allclose(values(make("linear"), [0, 10, total]), [0.1, 0.08, 0.0], atol=1e-7)
    np.testing.assert_allclose(values(make("constant"), [0, 49]), [0.1, 0.1])
    # cosine_restarts: first cycle of epochs // 3 = 3 epochs, then restart at the peak.
    np.testing.assert_allclose(values(make("cosine_restarts"), [0, 15]), [0.1, 0.1], rtol=1e-5)
    # Warmup: linear ramp per step, decay starts after it.
    warm = make("cosine", warmup_epochs=2)
    np.testing.assert_allclose(
        values(warm, range(10)), [0.1 * (s + 1) / 10 for s in range(10)], rtol=1e-6
    )
    np.testing.assert_allclose(values(warm, [10, 30, total]), [0.1, 0.05, 0.0], atol=1e-7)
    # Overrides pass through.
    np.testing.assert_allclose(float(make("step", drop=0.1, every=1)(5)), 0.01, rtol=1e-6)


def test_make_schedule_onecycle_matches_fastai_shape():
    schedule = callbacks.make_schedule("onecycle", 0.01, epochs=4, steps_per_epoch=25)
    assert isinstance(schedule, callbacks.OneCycleSchedule)
    got = values(schedule, [0, 25, 99, 100, 500])
    np.testing.assert_allclose(got[:2], [0.01 / 25, 0.01], rtol=1e-5)  # start, peak at 25%
    assert got[2] < 1e-5 and got[3] == pytest.approx(0.01 / 1e5, rel=1e-4)
    assert got[4] == pytest.approx(got[3])  # clamped after the cycle
    # warmup_epochs sets pct_start.
    warm = callbacks.make_schedule("onecycle", 0.01, epochs=4, steps_per_epoch=25, warmup_epochs=2)
    assert float(warm(50)) == pytest.approx(0.01)
    steps = np.arange(100)
    np.testing.assert_allclose(
        values(schedule, steps),
        [callbacks.one_cycle.one_cycle_value(s, 100, 0.25, 0.01 / 25, 0.01, 1e-7) for s in steps],
        rtol=1e-4,
    )


def test_make_schedule_errors():
    with pytest.raises(ValueError) as info:
        callbacks.make_schedule("cosin", 0.1, epochs=3, steps_per_epoch=2)
    message = str(info.value)
    assert "Received: name='cosin'" in message
    assert message.index("'cosine'") < message.index("'step'")  # closest first
    assert all(f"'{name}'" in message for name in callbacks.SCHEDULE_NAMES)
    with pytest.raises(
        ValueError, match=r"Unknown argument\(s\) for schedule 'cosine': \['drop'\]"
    ):
        callbacks.make_schedule("cosine", 0.1, epochs=3, steps_per_epoch=2, drop=0.5)
    with pytest.raises(ValueError, match="warmup_epochs must be smaller"):
        callbacks.make_schedule("linear", 0.1, epochs=3, steps_per_epoch=2, warmup_epochs=3)
    with pytest.raises(ValueError, match="steps_per_epoch must be an int >= 1"):
        callbacks.make_schedule("linear", 0.1, epochs=3, steps_per_epoch=0)


# --------------------------------------------------------------------------- #
# Saving, serialization, logging, plotting
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["cosine", "onecycle", "step"])
def test_model_with_schedule_survives_save_and_load(tmp_path, name):
    schedule = callbacks.make_schedule(name, 0.05, epochs=3, steps_per_epoch=4, warmup_epochs=1)
    model = tiny_model(keras.optimizers.SGD(schedule, momentum=0.9))
    model.fit(DS, epochs=1, verbose=0, shuffle=False)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects
    restored = loaded.optimizer._learning_rate
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = range(12)
    np.testing.assert_allclose(values(restored, steps), values(schedule, steps), rtol=1e-7)
    assert int(loaded.optimizer.iterations) == 4
    np.testing.assert_allclose(
        float(loaded.optimizer.learning_rate), float(model.optimizer.learning_rate)
    )


def test_warmup_wraps_any_keras_schedule_and_serializes():
    inner = keras.optimizers.schedules.PiecewiseConstantDecay([10], [0.2, 0.02])
    schedule = callbacks.Warmup(inner, warmup_steps=5)
    np.testing.assert_allclose(
        values(schedule, [0, 4, 5, 15, 16]), [0.04, 0.2, 0.2, 0.2, 0.02], rtol=1e-6
    )
    # Keras keeps a piecewise value at step == boundary: inner step 10 is step 15.
    config = keras.saving.serialize_keras_object(schedule)
    clone = keras.saving.deserialize_keras_object(config)
    np.testing.assert_allclose(values(clone, range(20)), values(schedule, range(20)))


@pytest.mark.parametrize(
    "callback",
    [
        callbacks.StepDecay(0.1, drop=0.2, every=[2, 5], warmup_epochs=1),
        callbacks.CosineRestarts(0.1, 2, t_mul=1.5, per_step=True, warmup_steps=3),
        callbacks.OneCycle(0.01, 5, steps_per_epoch=7, moms=(0.9, 0.8, 0.9)),
        callbacks.LRFinder(start=1e-5, steps=30),
        callbacks.GradualUnfreeze({0: 2, 3: ["dense"], 5: "conv.*"}, target="backbone"),
        callbacks.Throughput(batch_size=32),
        callbacks.LearningRateLogger(),
    ],
    ids=lambda c: type(c).__name__,
)
def test_callbacks_round_trip_through_keras_serialization(callback):
    config = keras.saving.serialize_keras_object(callback)
    assert config["registered_name"] == f"callbacks>{type(callback).__name__}"
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(callback)
    assert clone.get_config() == callback.get_config()


def test_learning_rate_in_history_with_optimizer_schedule():
    schedule = callbacks.make_schedule("linear", 0.1, epochs=EPOCHS, steps_per_epoch=STEPS)
    # Keras 3.15 itself does not log a schedule's LR (only LearningRateScheduler /
    # ReduceLROnPlateau do); LearningRateLogger fills the gap.
    plain = tiny_model(keras.optimizers.SGD(schedule)).fit(DS, epochs=2, verbose=0, shuffle=False)
    assert "learning_rate" not in plain.history
    model = tiny_model(keras.optimizers.SGD(schedule))
    history = model.fit(
        DS, epochs=EPOCHS, verbose=0, shuffle=False, callbacks=[callbacks.LearningRateLogger()]
    )
    expected = [0.1 * (1 - e / EPOCHS) for e in range(EPOCHS)]
    np.testing.assert_allclose(history.history["learning_rate"], expected, rtol=1e-5)
    # With Keras' own LearningRateScheduler the logger does not overwrite its value.
    model = tiny_model()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))
    history = model.fit(
        DS,
        epochs=3,
        verbose=0,
        shuffle=False,
        callbacks=[callbacks.LearningRateLogger(), scheduler],
    )
    np.testing.assert_allclose(history.history["learning_rate"], [0.01, 0.02, 0.03], rtol=1e-6)


def test_plot_schedule_writes_png(tmp_path):
    path = tmp_path / "plots" / "lr.png"
    out = callbacks.plot_schedule(callbacks.CosineDecay(0.1, 5, warmup_epochs=1), 5, 10, path)
    assert out == str(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        callbacks.plot_schedule(
            callbacks.make_schedule("step", 0.1, epochs=2, steps_per_epoch=2), 0, 2, path
        )


# --------------------------------------------------------------------------- #
# OneCycle callback: LR and inverse momentum
# --------------------------------------------------------------------------- #
class RecordHyper(keras.callbacks.Callback):
    def __init__(self, attr):
        super().__init__()
        self.attr, self.lrs, self.moms, self.config_types = attr, [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.lrs.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        self.moms.append(float(keras.ops.convert_to_numpy(getattr(optimizer, self.attr))))
        self.config_types.append(type(optimizer.get_config()[self.attr]))


def test_one_cycle_momentum_is_really_used_by_sgd():
    # Full-batch linear regression: replay Keras' SGD-momentum update in numpy
    # with the recorded LR/momentum; a momentum frozen at trace time would diverge.
    x = X[:BATCH]
    y = Y[:BATCH]
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "mse")
    w = keras.ops.convert_to_numpy(model.layers[0].kernel).astype("float64")
    cycle = callbacks.OneCycle(0.05, epochs=8, moms=(0.95, 0.5, 0.95))
    recorder = RecordHyper("momentum")
    model.fit(DS.take(1), epochs=8, verbose=0, shuffle=False, callbacks=[cycle, recorder])
    total = 8
    np.testing.assert_allclose(
        recorder.moms, [cycle.momentum_at(s, total) for s in range(total)], rtol=1e-6
    )
    np.testing.assert_allclose(
        recorder.lrs, [float(cycle.as_schedule(1)(s)) for s in range(total)], rtol=1e-6
    )
    assert min(recorder.moms) < 0.6 and recorder.moms[0] == pytest.approx(0.95)
    velocity = np.zeros_like(w)
    for lr, mom in zip(recorder.lrs, recorder.moms, strict=True):
        grad = 2.0 / len(x) * x.T.astype("float64") @ (x @ w - y)
        velocity = mom * velocity - lr * grad
        w = w + velocity
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.layers[0].kernel), w, rtol=1e-4)
    # Restored to a plain float, and get_config stayed a float during training.
    assert isinstance(model.optimizer.momentum, float)
    assert set(recorder.config_types) == {float}


def test_one_cycle_with_adam_cycles_beta_1_and_keeps_optimizer_saveable(tmp_path):
    model = tiny_model(keras.optimizers.Adam(1e-3))
    cycle = callbacks.OneCycle(0.01, epochs=3)
    recorder = RecordHyper("beta_1")
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "mid.keras")
    history = model.fit(
        DS, epochs=3, verbose=0, shuffle=False, callbacks=[cycle, recorder, checkpoint]
    )
    total = 3 * STEPS
    np.testing.assert_allclose(
        recorder.moms, [cycle.momentum_at(s, total) for s in range(total)], rtol=1e-6
    )
    assert recorder.lrs[0] == pytest.approx(0.01 / 25, rel=1e-5)
    assert max(recorder.lrs) == pytest.approx(0.01, rel=0.05)
    np.testing.assert_allclose(history.history["learning_rate"], recorder.lrs[::STEPS], rtol=1e-6)
    assert isinstance(model.optimizer.beta_1, float)
    assert len(model.optimizer.variables) == 2 + 2 * 2  # no stray tracked variable
    loaded = keras.models.load_model(tmp_path / "mid.keras")
    assert isinstance(loaded.optimizer.beta_1, float)
