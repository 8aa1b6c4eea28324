"""One test per Keras private-API touch in recipes.compat, plus the pinned range and a guard that
nothing else in the package touches Keras internals."""

import re
from importlib.metadata import version
from pathlib import Path

import keras
import numpy as np
import pytest

from recipes import compat

ROOT = Path(__file__).resolve().parents[1]


def _model():
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Dense(3, name="inner_dense")(inner_in), name="inner")
    inputs = keras.Input((4,))
    from recipes.layers import Backbone

    x = Backbone(inner, name="backbone")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def test_installed_keras_is_in_the_pinned_range():
    low, high = re.match(r">=([\d.]+),<([\d.]+)", compat.KERAS_RANGE).groups()

    def key(text):
        return tuple(int(p) for p in text.split(".")[:2])

    assert key(low) <= key(version("keras")) < key(high)
    assert f"keras{compat.KERAS_RANGE}" in (ROOT / "setup.cfg").read_text().replace(" ", "")


def test_keras_home_follows_the_folder_keras_resolved(keras_home):
    # The fixture points Keras' resolved home at a temp folder; compat must report that folder.
    assert compat.keras_home() == str(keras_home)


def test_intercept_get_file_sees_the_file_an_application_wants():
    seen = {}

    class Stop(Exception):
        pass

    def fake(fname=None, origin=None, *args, **kwargs):
        seen["fname"] = fname
        raise Stop

    with compat.intercept_get_file(fake), pytest.raises(Stop):
        keras.applications.MobileNet(weights="imagenet", include_top=False, input_shape=(128, 128, 3),
                                     alpha=0.25)
    assert seen["fname"].startswith("mobilenet_2_5_128")


def test_flatten_layers_reaches_layers_held_by_custom_layers():
    names = {layer.name for layer in compat.flatten_layers(_model())}
    assert {"backbone", "inner", "inner_dense", "head"} <= names


def test_child_layers_lists_direct_children():
    model = _model()
    backbone = model.get_layer("backbone")
    assert [layer.name for layer in compat.child_layers(backbone)] == ["inner"]


def test_learning_rate_slot_holds_a_variable_or_a_schedule():
    plain = keras.optimizers.Adam(1e-3)
    assert isinstance(compat.learning_rate_slot(plain), keras.Variable)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)
    scheduled = keras.optimizers.Adam(schedule)
    assert compat.learning_rate_slot(scheduled) is schedule
    variable = keras.Variable(0.5, trainable=False)
    compat.set_learning_rate_slot(scheduled, variable)
    assert float(scheduled.learning_rate) == 0.5
    compat.set_learning_rate_slot(scheduled, schedule)
    assert compat.learning_rate_slot(scheduled) is schedule


def test_optimizer_tracks():
    model = _model()
    opt = keras.optimizers.Adam()
    head = model.get_layer("head").trainable_variables
    opt.build(head)
    assert compat.optimizer_tracks(opt, head)
    assert not compat.optimizer_tracks(opt, model.trainable_variables)


def test_multi_optimizer_parts_routes_variables():
    model = _model()
    slow, fast = keras.optimizers.SGD(0.01), keras.optimizers.SGD(0.1)
    opt = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(fast, {"inner_dense/[^/]+": slow})
    )
    opt.build(model.trainable_variables)
    parts = compat.multi_optimizer_parts(opt)
    assert len(parts) == 2
    inner = model.get_layer("backbone").backbone.get_layer("inner_dense").kernel
    head = model.get_layer("head").kernel
    assert float(compat.multi_optimizer_parts(opt, inner).learning_rate) == pytest.approx(0.01)
    assert float(compat.multi_optimizer_parts(opt, head).learning_rate) == pytest.approx(0.1)


def test_set_iterations():
    opt = keras.optimizers.Adam()
    opt.build([keras.Variable(np.zeros(2))])
    compat.set_iterations(opt, 7)
    assert int(opt.iterations) == 7


def test_set_saved_optimizer_is_what_model_save_writes(tmp_path):
    model = _model()
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    swapped = keras.optimizers.SGD(0.5)
    model.optimizer = swapped
    compat.set_saved_optimizer(model, swapped)
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.optimizer, keras.optimizers.SGD)


def test_accept_trainable_state_silences_the_changed_state_warning():
    model = _model()
    model.get_layer("head").trainable = False
    model.compile("adam", "mse")
    model.get_layer("head").trainable = True
    compat.accept_trainable_state(model)
    state = model._compiled_trainable_state
    assert state[model.get_layer("head")] is True


def test_set_metric_direction():
    from recipes.mixing import MixedAccuracy

    metric = MixedAccuracy()
    compat.set_metric_direction(metric, "down")
    assert metric._direction == "down"


def test_own_trainable_variables_survive_freezing():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    layer.trainable = False
    assert layer.trainable_weights == []
    assert [v.name for v in compat.own_trainable_variables(layer)] == ["kernel", "bias"]


def test_build_training_state_leaves_no_variable_for_the_first_trace():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((8, 4), "float32"), np.zeros(8, "int32")))
    ds = ds.batch(4)
    compat.build_training_state(model, ds.element_spec)
    assert model.optimizer.built
    created = []

    def creator(next_creator, **kwargs):
        if tf.inside_function():
            created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        model.fit(ds, epochs=1, verbose=0)
    assert created == []  # nothing left to create: the train step traced once


def test_backup_paths_are_the_files_backup_and_restore_writes(tmp_path):
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "b"), double_checkpoint=True)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=2, verbose=0, callbacks=[backup])
    weights, metadata, prev_weights, prev_metadata = compat.backup_paths(backup)
    assert Path(weights).parent == tmp_path / "b" and weights.endswith(".weights.h5")
    assert prev_weights == weights + ".bkp" and prev_metadata == metadata + ".bkp"


def test_set_initial_epoch_makes_the_running_fit_start_there():
    class Start(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            compat.set_initial_epoch(self.model, 2)

        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    seen = []
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=4, verbose=0, callbacks=[Start()])
    assert seen == [2, 3]


def test_tensorflow_onednn_asks_the_imported_tensorflow(monkeypatch):
    # Its value against TensorFlow's log, with the flag forced both ways, is checked in fresh
    # processes by tests/test_startup.py::test_the_console_program_really_turns_onednn_off.
    import sys

    from tensorflow.python.util import _pywrap_util_port

    assert compat.tensorflow_onednn() is bool(_pywrap_util_port.IsMklEnabled())
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert compat.tensorflow_onednn() is None


def test_nothing_outside_compat_touches_keras_internals():
    pattern = re.compile(
        r"keras\.src|\._(flatten_layers|layers|learning_rate|inner_optimizers|var_to_optimizer_idx|"
        r"var_key|iterations|initial_epoch|compile_config|trainable_variables_indices|compiled_trainable_state|"
        r"direction|trainable_variables)\b"
    )
    offenders = []
    for folder in ("recipes", "callbacks"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "compat.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if pattern.search(code) and "self._" not in code:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
