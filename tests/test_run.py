"""RunFolder and plotting: atomic files, strict JSON, history round trips, curves."""

import json
import math
import os

import keras
import numpy as np
import pytest

from recipes.config import Recipe
from recipes.plotting import image_grid, plot_curves, plot_trials
from recipes.run import RunFolder, atomic_write_text, strict_json


def test_atomic_write_leaves_no_temporary_file_and_keeps_the_old_one_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "a" / "metrics.json"
    atomic_write_text(path, "one")
    assert path.read_text() == "one"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "two")
    assert path.read_text() == "one"  # the good file survives a failed write
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left


def test_strict_json_writes_null_for_nan():
    text = strict_json({"loss": math.nan, "acc": [1.0, math.inf]})
    assert json.loads(text) == {"loss": None, "acc": [1.0, None]}
    assert "NaN" not in text and "Infinity" not in text


def test_history_round_trips_and_finish_marks_the_run(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert not run.finished and not run.resumable
    history = {"loss": [1.0, 0.5], "val_loss": [1.2, math.nan], "accuracy": [0.4, 0.8]}
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    run.backup_dir.mkdir(parents=True)
    (run.backup_dir / "state").write_text("x")
    assert run.resumable
    run.finish(model, Recipe(epochs=2), {"test_accuracy": 0.9, "test_loss": math.nan}, history)
    assert run.finished and not run.backup_dir.exists()
    back = run.history()
    assert back["loss"] == [1.0, 0.5] and math.isnan(back["val_loss"][1])
    assert run.metrics() == {"test_accuracy": 0.9, "test_loss": None}
    assert run.recipe().epochs == 2
    assert run.curves_path.stat().st_size > 1000
    x = np.ones((1, 2), "float32")
    np.testing.assert_allclose(run.load_model().predict(x, verbose=0), model.predict(x, verbose=0))
    assert not [p for p in run.path.iterdir() if p.name.startswith(".")]  # no temp files


def test_start_clears_a_finished_runs_history_but_not_an_interrupted_one(tmp_path):
    run = RunFolder(tmp_path)
    run.write_text(run.HISTORY, "epoch,loss\n0,1.0\n")
    assert run.start() is False and not run.history_path.exists()
    run.write_text(run.HISTORY, "epoch,loss\n0,1.0\n")
    (run.backup_dir).mkdir()
    (run.backup_dir / "training_metadata.json").write_text("{}")
    assert run.start() is True and run.history_path.exists()


def test_history_reads_the_NA_that_csvlogger_writes_without_validation(tmp_path):
    run = RunFolder(tmp_path)
    run.write_text(run.HISTORY, "epoch,loss,val_loss\n0,1.0,NA\n1,0.5,NA\n")
    assert run.history() == {"loss": [1.0, 0.5]}


def test_load_model_of_an_unfinished_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no model.keras"):
        RunFolder(tmp_path).load_model()


def test_csv_rows_with_missing_keys(tmp_path):
    run = RunFolder(tmp_path)
    run.write_csv("results.csv", [{"trial": 1, "score": 0.5}, {"trial": 2, "status": "FAILED"}])
    lines = (tmp_path / "results.csv").read_text().splitlines()
    assert lines == ["trial,score,status", "1,0.5,", "2,,FAILED"]


def test_plots_are_png_files(tmp_path):
    png = b"\x89PNG"
    curves = plot_curves({"loss": [1, 0.5], "val_loss": [1.1, 0.7]}, tmp_path / "c.png",
                         marks={1: "fine-tuning starts"})
    rows = [{"trial": "0", "status": "COMPLETED", "val_accuracy": 0.5},
            {"trial": "1", "status": "FAILED"},
            {"trial": "2", "status": "COMPLETED", "val_accuracy": 0.7}]
    trials = plot_trials(rows, "val_accuracy", "max", tmp_path / "t.png")
    grid = image_grid([np.zeros((2, 8, 8, 1)), np.full((2, 8, 8, 1), 255.0)], tmp_path / "g.png")
    for path in (curves, trials, grid):
        assert path.read_bytes()[:4] == png
    from PIL import Image

    with Image.open(grid) as im:  # 8 px tiles enlarged to 64 px, 2 columns and 2 rows, 2 px padding
        assert im.size == (2 * 66 + 2, 2 * 66 + 2)
