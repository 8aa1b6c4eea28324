"""train: real (short) training, run folders, determinism, resume, strategies, bad input."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import recipes

# One xdist worker for this module (--dist loadgroup), so its module-scoped fixture
# (the finished run folder) is made once.
pytestmark = pytest.mark.xdist_group("test_training")

TINY = dict(backbone="mobilenet", alpha=0.25, image_size=32, verbose=0)


@pytest.fixture(scope="module")
def small_data(digits_small):
    return recipes.load_data(digits_small, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp("train") / "run"
    return out, recipes.train(data=small_data, epochs=2, out=out, seed=7, **TINY)


def test_run_folder_has_everything_to_redo_the_run(folder_run, small_data):
    out, result = folder_run
    for name in ("model.keras", "recipe.json", "history.csv", "metrics.json", "curves.png"):
        assert (out / name).is_file(), name
    assert not (out / "backup").exists()  # removed once the run finished
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_accuracy", "test_loss"} <= set(metrics)
    recipe = recipes.Recipe.load(out / "recipe.json")
    assert recipe.backbone == "mobilenet" and recipe.alpha == 0.25 and recipe.epochs == 2
    assert recipe.batch_size == small_data.batch_size == 32  # what the run really used
    reloaded = keras.models.load_model(out / "model.keras")
    x = next(iter(small_data.test))[0]
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), result.model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    # the learning rate actually used, per epoch
    assert len(result.history["learning_rate"]) == 2


def test_same_seed_same_metrics(folder_run, small_data):
    _, first = folder_run
    again = recipes.train(data=small_data, epochs=2, seed=7, **TINY).metrics
    assert again["test_loss"] == first.metrics["test_loss"]
    assert again["test_accuracy"] == first.metrics["test_accuracy"]


class _Kill(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:  # every epoch-end hook (the backup too) ran for earlier epochs
            raise KeyboardInterrupt("simulated kill")


class _Seen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def _small_convnet():
    """A built two-layer convnet with BatchNorm: traced like a backbone (graph mode), in a
    fraction of its time. The resume path is the same for every model."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, use_bias=False)(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="convnet")


def test_killed_run_resumes_from_last_finished_epoch(tmp_path, small_data):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        recipes.train(_small_convnet(), small_data, epochs=4, out=out, callbacks=[_Kill(2)], verbose=0)
    assert (out / "backup").is_dir()
    seen = _Seen()
    result = recipes.train(_small_convnet(), small_data, epochs=4, out=out, callbacks=[seen], verbose=0)
    assert seen.epochs == [2, 3]  # epochs 0 and 1 finished before the kill
    assert len(result.history["loss"]) == 4  # one history across both processes
    assert result.metrics["epochs"] == 4


@pytest.mark.slow  # ~35 s in a subprocess; keeps the default suite under 6 minutes
def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    script = textwrap.dedent(
        """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import recipes
        from sklearn.datasets import load_digits
        d = load_digits()
        x = (d.images[:256] * 255 / 16).astype("uint8"); y = d.target[:256]
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        result = recipes.train("mobilenet", (x, y), epochs=1, alpha=0.25, image_size=32,
                               batch_size=32, strategy=strategy, verbose=0)
        assert strategy.num_replicas_in_sync == 2
        print("OK", result.metrics["test_accuracy"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OK" in proc.stdout


def test_train_accepts_a_built_model(small_data):
    model = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25, input_shape=(8, 8, 1))
    result = recipes.train(model, small_data, epochs=1, verbose=0)
    assert result.model is model and result.recipe.backbone == "mobilenet"
    for option in (dict(dropout=0.5), dict(augmentation="light")):
        with pytest.raises(ValueError, match="only apply when training from a backbone name"):
            recipes.train(model, small_data, epochs=1, **option)


def test_a_model_not_built_here_is_recorded_as_custom(small_data):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="tiny_mlp")
    result = recipes.train(model, small_data, epochs=1, verbose=0, precise_bn=False)
    assert result.recipe.backbone == "custom:tiny_mlp" and result.recipe.is_custom
    with pytest.raises(ValueError, match="Unknown backbone"):
        recipes.build_classifier(result.recipe.backbone, 10)


def test_explicit_none_overrides_the_recipe(small_data, monkeypatch):
    seen = {}

    def fake_build(backbone, num_classes, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop before training")

    monkeypatch.setattr(recipes.builder, "build_classifier", fake_build)
    base = recipes.Recipe(augmentation="light", dropout=0.4)
    with pytest.raises(RuntimeError, match="stop before training"):
        recipes.train("mobilenet", small_data, recipe=base, augmentation=None, alpha=0.25, image_size=32)
    assert seen["augmentation"] is None and seen["dropout"] == 0.4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(epochs=0), "epochs must be an int >= 1; Received: epochs=0"),
        (dict(epochs=1.5), "epochs must be an int"),
        (dict(optimizer="adamm"), "Unknown optimizer; Received: optimizer='adamm'. Did you mean: adam"),
        (dict(schedule="cosin"), "Unknown schedule; Received: schedule='cosin'. Did you mean: cosine"),
        (dict(label_smoothing=1.0), "label_smoothing must be a number in"),
        (dict(learning_rate=-1.0), "learning_rate must be a number"),
        (dict(dropuot=0.2), "Unknown recipe field; Received: field='dropuot'. Did you mean: dropout"),
        (dict(augment_placement="gpu"), "Unknown augment_placement; Received: augment_placement='gpu'"),
        (dict(mixup=float("inf")), "mixup must be a number >= 0; Received: mixup=inf"),
    ],
)
def test_bad_arguments_fail_before_building(kwargs, message, small_data, monkeypatch):
    monkeypatch.setattr(recipes.builder, "build_classifier", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        recipes.train("mobilenet", small_data, **kwargs)


def test_unknown_backbone_in_train_lists_matches(small_data):
    with pytest.raises(ValueError, match="Did you mean: mobilenet"):
        recipes.train("mobilnet", small_data, epochs=1)


def test_balanced_class_weight_reaches_fit(digits_small, monkeypatch):
    x, y = digits_small
    keep = (y != 1) | (np.arange(len(y)) % 3 == 0)  # class 1 down to a third
    data = recipes.load_data((x[keep], y[keep]), batch_size=32, seed=0)
    counts = np.asarray(data.class_counts)
    weights = data.class_weights()
    assert weights[1] > 2 * weights[0]
    np.testing.assert_allclose(
        [weights[i] * counts[i] for i in range(10)], [counts.sum() / 10] * 10, rtol=1e-9
    )
    seen = {}

    class Stop(Exception):
        pass

    def fake_fit(self, *args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(keras.Model, "fit", fake_fit)
    with pytest.raises(Stop):
        recipes.train(data=data, class_weight="balanced", **TINY)
    assert seen["class_weight"] == weights
    with pytest.raises(ValueError, match="Unknown class_weight; Received: class_weight='balance'"):
        recipes.train(data=data, class_weight="balance", **TINY)


def test_skipped_files_are_listed_in_the_run_and_reported_in_one_line(tmp_path, capsys):
    import types

    from recipes.cli.args import report_skipped
    from recipes.run import RunFolder
    from recipes.training import SKIPPED_FILE, record_skipped

    data = types.SimpleNamespace(skipped=["a/broken.jpg", "b/empty.png"])
    record_skipped(RunFolder(tmp_path / "run"), data)
    assert (tmp_path / "run" / SKIPPED_FILE).read_text() == "a/broken.jpg\nb/empty.png\n"
    report_skipped(data, tmp_path / "run")
    assert capsys.readouterr().out == (
        f"skipped 2 unreadable file(s) (listed in {tmp_path / 'run' / SKIPPED_FILE})\n"
    )
    record_skipped(RunFolder(tmp_path / "clean"), types.SimpleNamespace(skipped=[]))
    assert not (tmp_path / "clean").exists()
