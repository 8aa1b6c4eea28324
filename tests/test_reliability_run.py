"""Run folders under faults (issue 15): a kill mid-write, a corrupt backup, a diverged run, a
resume with other settings, two processes on one folder, and the CLI's answers to them."""

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import recipes
from recipes.cli import main
from recipes.finetune.two_phase import _start_run
from recipes.run import RunFolder, RunFolderInUse, RunFolderMismatch, _process_start


@pytest.fixture(scope="module")
def data(digits_small):
    x, y = digits_small
    return recipes.load_data((x[:120], y[:120]), batch_size=32, seed=0)


@pytest.fixture
def eager(monkeypatch):
    """`train` with an eager model: the same code path without seconds of graph tracing per
    run (what these tests measure is the run folder, not the speed)."""
    import recipes.training

    compile_classifier = recipes.training.compile_classifier

    def compile_eagerly(model, *args, **kwargs):
        compile_classifier(model, *args, **kwargs)
        model.run_eagerly = True
        return model

    monkeypatch.setattr(recipes.training, "compile_classifier", compile_eagerly)


def small_model():
    """A compiled eager 4-feature model for callback-level tests (no tracing)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    return model


def fit(model, callbacks, epochs=3):
    x = np.random.RandomState(0).rand(32, 4).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    return model.fit(x, y, batch_size=16, epochs=epochs, callbacks=callbacks, verbose=0)


def tiny():
    """A two-layer classifier: trains in a fraction of a second, same name every time (the
    recipe records `custom:tiny`)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))
    x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="tiny")


FAST = dict(verbose=0, learning_rate=1e-2, patience=None)


class Kill(keras.callbacks.Callback):
    """Interrupts `fit` when epoch `at` begins (every earlier epoch-end hook ran)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt("simulated kill")


class Seen(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


class Poison(keras.callbacks.Callback):
    """Sets every weight to NaN when epoch `at` begins: the loss diverges at its first batch."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            for w in self.model.trainable_weights:
                w.assign(np.full(w.shape, np.nan, "float32"))


def interrupted(out, data, epochs=3, at=2, **kw):
    with pytest.raises(KeyboardInterrupt):
        recipes.train(tiny(), data, epochs=epochs, out=out, callbacks=[Kill(at)], **{**FAST, **kw})
    return RunFolder(out)


# ------------------------------------------------------------------ 1. corrupt backup (callback level)


def _interrupted_backup(tmp_path, epochs=3, at=2):
    from callbacks import ResilientBackup

    backup = ResilientBackup(tmp_path / "backup")
    with pytest.raises(KeyboardInterrupt):
        fit(small_model(), [backup, Kill(at)], epochs)
    return backup


def test_truncated_latest_backup_restores_the_previous_epoch_and_its_history(tmp_path):
    from callbacks import ResilientBackup, ResumableCSVLogger

    backup = _interrupted_backup(tmp_path)
    names = sorted(p.name for p in (tmp_path / "backup").iterdir())
    assert names == ["latest.weights.h5", "latest.weights.h5.bkp", "training_metadata.json",
                     "training_metadata.json.bkp"]  # the previous epoch kept, no temporary file
    with open(backup._weights_path, "r+b") as f:
        f.truncate(100)  # killed while the weights were written
    csv_file = tmp_path / "history.csv"
    csv_file.write_text("epoch,loss\n0,1.0\n1,0.9\n")  # what the killed run had logged
    again, seen = ResilientBackup(tmp_path / "backup"), Seen()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the previous backup: no warning needed
        fit(small_model(), [again, ResumableCSVLogger(csv_file, backup=again), seen])
    assert again.restored_epoch == 1 and seen.epochs == [1, 2]
    lines = csv_file.read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["0", "1", "2"]  # epoch 1 once
    assert lines[1] == "0,1.0"  # the restored epoch's row kept as it was


def test_unreadable_or_foreign_backup_restarts_with_one_warning_naming_the_folder(tmp_path):
    from callbacks import ResilientBackup

    _interrupted_backup(tmp_path)
    shutil.copytree(tmp_path / "backup", tmp_path / "other")
    for f in (tmp_path / "backup").iterdir():
        f.write_bytes(f.read_bytes()[:10])  # weights and metadata, latest and previous
    again, seen = ResilientBackup(tmp_path / "backup"), Seen()
    with pytest.warns(RuntimeWarning) as caught:
        fit(small_model(), [again, seen])
    messages = [str(w.message) for w in caught if "backup" in str(w.message)]
    assert len(messages) == 1 and str(tmp_path / "backup") in messages[0]
    assert "restarts from epoch 1" in messages[0]
    assert again.restarted and seen.epochs == [0, 1, 2]

    # A readable backup of another model (other layers): restart, nothing half-loaded.
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    other.compile("adam", "sparse_categorical_crossentropy", run_eagerly=True)
    fresh = [w.numpy().copy() for w in other.weights]

    class First(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not hasattr(self, "weights"):
                self.weights = [w.numpy().copy() for w in self.model.weights]

    first = First()
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        fit(other, [ResilientBackup(tmp_path / "other"), first], epochs=1)
    for before, after in zip(fresh, first.weights):
        np.testing.assert_array_equal(before, after)


def test_a_resumed_backup_holds_exactly_the_killed_runs_weights_and_optimizer_state(tmp_path):
    from callbacks import ResilientBackup
    from callbacks.resilience import is_state_file

    class Keep(keras.callbacks.Callback):  # the state at the end of the last backed-up epoch
        def on_epoch_end(self, epoch, logs=None):
            self.state = [v.numpy().copy() for v in
                          [*self.model.weights, *self.model.optimizer.variables]]

    keep, model = Keep(), small_model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, [keep, ResilientBackup(tmp_path / "backup"), Kill(2)])
    assert is_state_file(tmp_path / "backup" / "latest.weights.h5")

    class Restored(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not hasattr(self, "state"):
                self.state = [v.numpy().copy() for v in
                              [*self.model.weights, *self.model.optimizer.variables]]

    restored, again, seen = Restored(), ResilientBackup(tmp_path / "backup"), Seen()
    fit(small_model(), [again, restored, seen])
    assert again.restored_epoch == 2 and seen.epochs == [2]
    assert len(restored.state) == len(keep.state) > 4  # weights, iterations, Adam's moments
    for before, after in zip(keep.state, restored.state):
        np.testing.assert_array_equal(before, after)


def test_backup_state_round_trips_bfloat16_and_keras_written_backups_still_resume(tmp_path):
    from callbacks import ResilientBackup
    from callbacks.resilience import read_state, write_state

    variables = [keras.Variable(np.arange(6, dtype="float32").reshape(2, 3), dtype="bfloat16"),
                 keras.Variable(np.array(7, "int64"))]
    write_state(tmp_path / "s.h5", variables)
    copies = [keras.Variable(np.zeros((2, 3)), dtype="bfloat16"), keras.Variable(np.array(0, "int64"))]
    read_state(tmp_path / "s.h5", copies)
    assert copies[0].dtype == "bfloat16" and copies[0].numpy().astype("float32").tolist() == [
        [0, 1, 2], [3, 4, 5]] and int(copies[1].numpy()) == 7
    with pytest.raises(ValueError, match=r"holds .* as float32\[2, 3\]|holds 2 values"):
        read_state(tmp_path / "s.h5", [keras.Variable(np.zeros(3))])

    # A backup Keras' own BackupAndRestore wrote (this package before its own format).
    model = small_model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, [keras.callbacks.BackupAndRestore(str(tmp_path / "old")), Kill(1)])
    again, seen = ResilientBackup(tmp_path / "old"), Seen()
    fit(small_model(), [again, seen])
    assert again.restored_epoch == 1 and seen.epochs == [1, 2] and not again.restarted


# ------------------------------------------------------------------ 2. divergence (callback level)


def test_nan_loss_raises_with_epoch_and_batch_and_keeps_the_last_good_backup(tmp_path):
    from callbacks import ResilientBackup, StopOnDivergence, TrainingDiverged

    backup = ResilientBackup(tmp_path / "backup")
    with pytest.raises(TrainingDiverged, match=r"loss became NaN at epoch 2 batch 1; lower it"):
        fit(small_model(), [StopOnDivergence("lower it"), backup, Poison(1)])
    metadata = json.loads(open(backup._training_metadata_path).read())
    assert metadata["epoch"] == 1  # epoch 1's backup: no NaN weights written, none deleted


def test_exploding_loss_warns_once():
    from callbacks import LossExplosionWarning

    cb = LossExplosionWarning()
    with pytest.warns(RuntimeWarning, match=r"val_loss exploded to 1e\+23 at epoch 3"):
        for epoch, value in enumerate([2.0, 1.5, 1e23, 1e24]):
            cb.on_epoch_end(epoch, {"val_loss": value})
    assert cb.warned == ("val_loss", 3, 1e23)
    quiet = LossExplosionWarning()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for epoch, value in enumerate([2.3, 1.0, 0.8, 1.1]):  # normal noise: no warning
            quiet.on_epoch_end(epoch, {"loss": value, "val_loss": value})


# ------------------------------------------------------------------ through train (items 1-4, 9)


def test_killed_run_with_a_truncated_backup_resumes_and_refuses_other_settings(tmp_path, data, eager):
    run = interrupted(tmp_path / "run", data)
    assert run.recipe().learning_rate == FAST["learning_rate"]  # written when the run started
    assert not run.lock_path.exists()  # released although the run was killed
    with pytest.raises(RunFolderMismatch, match=r"interrupted run with other settings.*"
                       r"learning_rate: was 0.01, now 0.001.*overwrite=True.*--out") as info:
        recipes.train(tiny(), data, epochs=3, out=run.path, **{**FAST, "learning_rate": 1e-3})
    assert set(info.value.differences) == {"learning_rate"} and run.resumable
    latest = run.backup_dir / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[:100])  # a kill while the backup was written
    seen = Seen()
    result = recipes.train(tiny(), data, epochs=3, out=run.path, callbacks=[seen], **FAST)
    assert seen.epochs == [1, 2]  # resumed from epoch 1's backup, not 2's
    assert len(result.history["loss"]) == 3  # one row per epoch: epoch 2's stale row dropped
    assert run.metrics()["epochs"] == 3  # item 9: the whole run, not this process's part
    assert run.finished and not run.backup_dir.exists() and not run.lock_path.exists()
    assert sorted(p.name for p in run.path.iterdir()) == [
        "curves.png", "history.csv", "metrics.json", "model.keras", "recipe.json"]


def test_diverged_run_raises_and_writes_no_model(tmp_path, data, eager):
    out = tmp_path / "run"
    with pytest.raises(recipes.TrainingDiverged, match=r"loss became NaN at epoch 2 batch 1; lower "
                       r"the learning rate \(it was 0.01 with adam; find one with `recipes find-lr`"
                       ) as info:
        recipes.train(tiny(), data, epochs=2, out=out, callbacks=[Poison(1)], **FAST)
    assert (info.value.epoch, info.value.batch) == (2, 1)
    assert "overwrite" in str(info.value)  # how to train the kept backup with other settings
    run = RunFolder(out)
    assert not run.model_path.exists() and not run.metrics_path.exists()
    assert json.loads((run.backup_dir / "training_metadata.json").read_text())["epoch"] == 1
    assert not run.lock_path.exists()


@pytest.mark.slow  # ~15 s: three trainings
def test_finished_runs_keep_their_model_when_a_rerun_diverges_and_refuse_other_settings(
        tmp_path, data):
    out = tmp_path / "run"
    recipes.train(tiny(), data, epochs=2, out=out, **FAST)
    run = RunFolder(out)
    model, metrics = run.model_path.read_bytes(), run.metrics_path.read_text()
    with pytest.raises(recipes.TrainingDiverged):
        recipes.train(tiny(), data, epochs=2, out=out, callbacks=[Poison(0)], **FAST)
    assert run.model_path.read_bytes() == model and run.metrics_path.read_text() == metrics
    json.loads(metrics)  # strict JSON
    with pytest.raises(RunFolderMismatch, match="finished run with other settings.*epochs: was 2"):
        recipes.train(tiny(), data, epochs=3, out=out, **FAST)
    seen = Seen()
    recipes.train(tiny(), data, epochs=2, out=out, callbacks=[seen], **FAST)
    assert seen.epochs == [0, 1]  # the same settings train again, replacing the run
    assert len(run.history()["loss"]) == 2
    recipes.train(tiny(), data, epochs=3, out=out, overwrite=True, callbacks=[seen], **FAST)
    assert seen.epochs == [0, 1, 0, 1, 2] and run.recipe().epochs == 3


@pytest.mark.slow  # ~5 s: a real learning rate far too high, in graph mode
def test_a_real_learning_rate_too_high_diverges(data):
    with pytest.raises(recipes.TrainingDiverged, match="at epoch 1 batch"):
        recipes.train(tiny(), data, epochs=1, optimizer="sgd", verbose=0, learning_rate=1e30)


# ------------------------------------------------------------------ 3. recipe check (folder level)


def test_start_compares_recipes_and_writes_the_new_one_first(tmp_path):
    run = RunFolder(tmp_path / "run")
    first = recipes.Recipe(epochs=3)
    assert run.start(first) is False and run.recipe() == first
    assert run.start(first.replace(epochs=4)) is False  # nothing trained yet: any recipe
    run.write_text(run.HISTORY, "epoch,loss\n0,1.0\n")
    (run.backup_dir).mkdir()
    (run.backup_dir / "training_metadata.json").write_text('{"epoch": 1}')
    with pytest.raises(RunFolderMismatch, match="optimizer: was 'adam', now 'sgd'"):
        run.start(first.replace(epochs=4, optimizer="sgd"))
    assert run.start(first.replace(epochs=4)) is True  # the same recipe resumes
    assert run.start(first, overwrite=True) is False and not run.history_path.exists()
    run.recipe_path.write_text("{not json")
    run.write_text(run.HISTORY, "epoch,loss\n0,1.0\n")
    with pytest.raises(RunFolderMismatch, match="cannot be read"):
        run.start(first)


def test_fine_tune_folder_refuses_other_settings(tmp_path):
    run = RunFolder(tmp_path / "ft")
    first = recipes.Recipe.preset("fine-tune")
    assert _start_run(run, first) is False
    run.sub("phase1").write_text("history.csv", "epoch,loss\n0,1.0\n")
    with pytest.raises(RunFolderMismatch, match="head_epochs: was"):
        _start_run(run, first.replace(head_epochs=first.head_epochs + 1))
    assert run.sub("phase1").history_path.is_file()
    _start_run(run, first.replace(head_epochs=first.head_epochs + 1), overwrite=True)
    assert not run.sub("phase1").path.exists()


# ------------------------------------------------------------------ 4. lock


def test_busy_folder_refuses_a_second_run(tmp_path, data, eager):
    out = tmp_path / "run"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        RunFolder(out).path.mkdir()
        lock = {"pid": other.pid, "host": socket.gethostname(),
                "started": _process_start(other.pid), "since": "2026-01-01 10:00:00"}
        (out / ".lock").write_text(json.dumps(lock))
        with pytest.raises(RunFolderInUse, match=rf"run is in use by process {other.pid} since "
                           "2026-01-01 10:00:00"):
            recipes.train(tiny(), data, epochs=1, out=out, **FAST)
        assert not RunFolder(out).recipe_path.exists()  # refused before touching anything
        assert json.loads((out / ".lock").read_text())["pid"] == other.pid  # not taken over
    finally:
        other.kill()
        other.wait()
    run = RunFolder(out)
    with run.lock():  # its owner died: the lock is stale and does not block
        assert run.lock_owner()["pid"] == os.getpid()


def test_lock_is_taken_once_released_on_exceptions_and_survives_half_a_lock(tmp_path):
    run = RunFolder(tmp_path / "run")
    with pytest.raises(KeyError):
        with run.lock():
            assert run.lock_owner()["pid"] == os.getpid()
            with pytest.raises(RunFolderInUse, match="in use by process"):
                RunFolder(run.path).acquire_lock()
            raise KeyError("boom")
    assert not run.lock_path.exists() and run.lock_owner() is None
    run.lock_path.write_text('{"pid": 12')  # half a lock: its writer died while writing it
    with run.lock():
        pass
    recycled = {"pid": os.getpid(), "host": socket.gethostname(), "started": -1, "since": "x"}
    run.lock_path.write_text(json.dumps(recycled))  # a live pid, but another process's start
    assert run.lock_owner() is None


# ------------------------------------------------------------------ CLI


def test_cli_diverged_and_busy_runs_exit_1_with_one_line(monkeypatch, capsys, tmp_path):
    import recipes.training
    from callbacks import TrainingDiverged

    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        raise TrainingDiverged("loss became NaN at epoch 1 batch 9; lower the learning rate")

    monkeypatch.setattr(recipes.training, "train", fake)
    args = ["train", "--out", str(tmp_path / "d"), "--overwrite"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["recipes train: error: loss became NaN at epoch 1 batch 9; lower the learning rate"]
    assert calls[0]["overwrite"] is True

    def busy(**kwargs):
        raise RunFolderInUse(f"{tmp_path / 'd'} is in use by process 1 since now")

    monkeypatch.setattr(recipes.training, "train", busy)
    assert main(args[:3]) == 1
    assert "is in use by process 1" in capsys.readouterr().err


def test_cli_rejects_infinite_mixup(capsys):
    assert main(["train", "--mixup", "inf"]) == 2
    assert "mixup" in capsys.readouterr().err


def test_cli_prints_the_runs_warnings_on_one_line(capsys):
    import argparse

    from callbacks import RunWarning
    from recipes.cli.train import one_line_warnings

    with one_line_warnings(argparse.Namespace(command="train")):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("loss exploded to 5e+04 at epoch 2", RunWarning, stacklevel=1)
    assert capsys.readouterr().err == "recipes train: warning: loss exploded to 5e+04 at epoch 2\n"
