"""`recipes ensemble`, `recipes bag`, `recipes ablate`: outputs and one-line errors (exit 2)."""

import json

import keras
import numpy as np
import pytest

import recipes
from recipes.cli import main
from recipes.run import RunFolder


def _run_folder(path, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name=f"m{seed}")
    _write(RunFolder(path), model, recipes.Recipe(backbone=f"custom:m{seed}"))
    return model


def _write(run, model, recipe):  # a finished run folder, without training
    run.save_model(model)
    run.save_recipe(recipe)
    run.save_metrics({})


def test_ensemble_command_writes_the_model_and_every_accuracy(tmp_path, capsys):
    models = [_run_folder(tmp_path / f"r{i}", i) for i in range(2)]
    out = tmp_path / "ens"
    assert main(["ensemble", str(tmp_path / "r0"), str(tmp_path / "r1"), "--method", "vote",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    data = recipes.load_data("digits", batch_size=64)  # the runs' recipe: digits, seed 0
    x = np.concatenate([np.asarray(a) for a, _ in data.test])
    y = np.concatenate([np.asarray(b) for _, b in data.test])
    probs = [np.asarray(m(x)) for m in models]
    assert metrics["member_test_accuracy"] == pytest.approx([np.mean(p.argmax(1) == y) for p in probs])
    reloaded = keras.models.load_model(out / "model.keras")
    assert metrics["test_accuracy"] == pytest.approx(np.mean(np.asarray(reloaded(x)).argmax(1) == y))
    assert "vote of 2: test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["ablate", "dropuot"], "Unknown study; Received: study='dropuot'. Did you mean: dropout"),
    (["ablate", "dropout", "--seeds", "0"], "seeds"),
    (["ablate", "pretraining"], "needs a related source"),
    (["ablate"], "needs a STUDY"),
    (["bag", "--members", "1"], "members"),
    (["ensemble", "a", "b", "--method", "avg", "--out", "x"], "Did you mean: average"),
    (["ensemble", "nowhere1", "nowhere2", "--out", "x"], "Not a finished run folder"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"recipes {argv[0]}: error:") and message in err and "\n" not in err


def test_ensemble_refuses_runs_on_different_splits(tmp_path, capsys):
    _run_folder(tmp_path / "a", 0)
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    _write(RunFolder(tmp_path / "b"), model, recipes.Recipe(backbone="custom:b", seed=1))
    assert main(["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "e")]) == 2
    assert "different splits" in capsys.readouterr().err


def test_ablate_list_names_every_study(capsys):
    assert main(["ablate", "--list"]) == 0
    out = capsys.readouterr().out
    from recipes.ablate import STUDIES

    assert [line.split()[0] for line in out.splitlines()] == list(STUDIES)


def test_bag_command_passes_members_method_and_train_flags(tmp_path, capsys, monkeypatch):
    import importlib

    module = importlib.import_module("recipes.bagging")  # (recipes.bagging is the function)
    seen = {}

    def fake_bagging(**kw):
        seen.update(kw)
        return recipes.EnsembleResult(model=None, members=[], metrics={
            "method": kw["method"], "members": kw["members"],
            "member_test_accuracy": [0.5, 0.25, 0.75], "test_accuracy": 0.8})

    monkeypatch.setattr(module, "bagging", fake_bagging)
    assert main(["bag", "--members", "3", "--method", "vote", "--epochs", "2", "--dropout", "0.3",
                 "--out", str(tmp_path / "bag")]) == 0
    assert seen["members"] == 3 and seen["method"] == "vote" and seen["out"] == str(tmp_path / "bag")
    assert (seen["recipe"].epochs, seen["recipe"].dropout) == (2, 0.3)
    out = capsys.readouterr().out
    assert "member 2: test accuracy 0.7500" in out and "vote of 3: test accuracy 0.8000" in out
