"""recipes.search: real (tiny) KerasTuner searches, resume, failed trials, results, search space.

Every trial builds and traces a real MobileNet (alpha 0.25, 32 px) and trains it for one epoch on
digits; tracing dominates the time, so the tests share searches and keep trial counts minimal.
Each tuner finishes a search here: hyperband (shared fixture), grid (NaN trial), bayesian
(resume); random in test_tuning_distributed.py (and the failure-limit test here).
"""

import csv
import json

import keras
import pytest

import recipes
from recipes.tuning import SearchFailedError, resolve_search_space, search

# Everything but the learning rate fixed: trials stay cheap and differ in one known place.
FIXED_SPACE = {
    "optimizer": "sgd", "image_size": 32, "batch_size": 64, "augmentation": None,
    "schedule": "constant", "dropout": 0.2, "l2": 0.0, "label_smoothing": 0.0,
}
TINY = dict(backbones="mobilenet", alpha=0.25, max_epochs=1, verbose=0)


def space(**changes):
    return {**FIXED_SPACE, **changes}


@pytest.fixture(scope="module")
def data():
    return recipes.load_data("digits", batch_size=64)


@pytest.fixture(scope="module")
def hyperband(data, tmp_path_factory):
    """Hyperband, max_epochs=2, factor=2, 3 trials: two 1-epoch trials, then the better one
    continued for a second epoch from its checkpoint."""
    directory = tmp_path_factory.mktemp("tuning")
    kwargs = dict(
        TINY, tuner="hyperband", max_epochs=2, max_trials=3, tuner_options={"factor": 2},
        search_space=space(learning_rate=(0.01, 0.1, "log")), directory=directory,
        project_name="hb",
    )
    return search(data, **kwargs), kwargs


def _rows(result):
    return {row["trial"]: row for row in result.table()}


# ---------------------------------------------------------------------------------------------
# Hyperband search (shared): table, files, best model, resume, refine, retrain
# ---------------------------------------------------------------------------------------------


def test_hyperband_continues_the_better_trial_with_its_weights(hyperband, capsys):
    result, _ = hyperband
    rows = _rows(result)
    assert [r["status"] for r in rows.values()] == ["COMPLETED"] * 3
    first, second, cont = rows.values()
    better = first if first["val_accuracy"] >= second["val_accuracy"] else second
    assert cont["continues"] == better["trial"]
    assert cont["learning_rate"] == better["learning_rate"]
    assert (cont["epochs"], cont["total_epochs"]) == (1, 2)  # one more epoch on top of one
    assert first["learning_rate"] != second["learning_rate"]
    assert all(0.01 <= r["learning_rate"] <= 0.1 for r in rows.values())


def test_results_files(hyperband):
    result, _ = hyperband
    with open(result.project_dir / "results.csv") as f:
        saved = list(csv.DictReader(f))
    assert [r["trial"] for r in saved] == [r["trial"] for r in result.table()]
    assert {"status", "val_accuracy", "learning_rate", "epochs", "seconds"} <= set(saved[0])
    assert (result.project_dir / "results.png").stat().st_size > 1000
    best = recipes.Recipe.load(result.project_dir / "best_recipe.json")
    assert best == result.best_recipe
    assert (best.backbone, best.alpha, best.optimizer, best.image_size) == ("mobilenet", 0.25, "sgd", 32)
    assert best.learning_rate == result.best_hyperparameters["learning_rate"]
    assert "val_accuracy" in result.summary().splitlines()[0]


def test_best_model_reloads_and_scores_as_recorded(hyperband, data):
    result, _ = hyperband
    model = result.best_model()
    scores = model.evaluate(data.validation, return_dict=True, verbose=0)
    state = json.loads((result.project_dir / f"trial_{result.best_trial_id}" / "trial.json").read_text())
    recorded_loss = state["metrics"]["metrics"]["val_loss"]["observations"][0]["value"][0]
    assert scores["accuracy"] == pytest.approx(result.best_score, abs=1e-6)
    assert scores["loss"] == pytest.approx(recorded_loss, rel=1e-5)


def test_rerunning_a_finished_search_redoes_nothing(hyperband, data, capsys):
    result, kwargs = hyperband
    before = {p: p.stat().st_mtime_ns for p in result.project_dir.glob("trial_*/checkpoint*")}
    again = search(data, **kwargs)
    assert again.table() == result.table()
    assert {p: p.stat().st_mtime_ns for p in result.project_dir.glob("trial_*/checkpoint*")} == before
    assert "COMPLETED" not in capsys.readouterr().out  # no trial ran


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(max_epochs=3), "max_epochs"),
        (dict(search_space=space(learning_rate=(0.01, 0.2, "log"))), "learning_rate"),
        (dict(tuner_options={"factor": 3}), "factor"),
        (dict(dropout=0.3, search_space=space(learning_rate=(0.01, 0.1, "log"), dropout=0.3)), None),
        (dict(label_smoothing=0.1, search_space={k: v for k, v in space(learning_rate=(0.01, 0.1, "log")).items() if k != "label_smoothing"}), "label_smoothing"),
    ],
)
def test_resume_with_changed_arguments_is_refused(hyperband, data, change, named):
    _, kwargs = hyperband
    if named is None:  # a field both fixed and searched: refused before the project is read
        with pytest.raises(ValueError, match="both fixed"):
            search(data, **{**kwargs, **change})
        return
    with pytest.raises(ValueError, match="started with different arguments") as info:
        search(data, **{**kwargs, **change})
    assert named in str(info.value) and "overwrite=True" in str(info.value)


def test_refined_space_narrows_ranges_and_fixes_choices(hyperband):
    result, _ = hyperband
    refined = result.refined_search_space(factor=3)
    best_lr = result.best_hyperparameters["learning_rate"]
    lr = refined["learning_rate"]
    assert lr["sampling"] == "log" and 0.01 <= lr["min"] <= best_lr <= lr["max"] <= 0.1
    assert lr["max"] / lr["min"] == pytest.approx((0.1 / 0.01) ** (1 / 3))
    assert refined["backbone"] == {"value": "mobilenet"}
    assert refined["image_size"] == {"value": 32}
    assert refined["optimizer"] == {"value": "sgd"}
    with pytest.raises(ValueError, match="factor"):
        result.refined_search_space(factor=1)


def test_retrain_data_moves_validation_into_training(data):
    from recipes.tuning import _with_validation_in_train

    full = _with_validation_in_train(data, seed=0)
    n = data.sizes["train"] + data.sizes["validation"]
    assert sum(int(len(y)) for _, y in full.train) == n == full.sizes["train"]
    assert full.validation is None and full.test is data.test
    assert full.steps_per_epoch == -(-n // data.batch_size)


@pytest.mark.slow  # one more real training (~20 s); the data merge above is the fast check
def test_retrain_uses_train_plus_validation(hyperband, data):
    result, _ = hyperband
    final = result.retrain(epochs=1, verbose=0)
    assert final.recipe.learning_rate == result.best_recipe.learning_rate
    assert "test_accuracy" in final.metrics
    assert not any(k.startswith("val_") for k in final.history)  # validation joined training


# ---------------------------------------------------------------------------------------------
# The other tuners, resume after an interruption, failures
# ---------------------------------------------------------------------------------------------


class _InterruptSecondTraining(keras.callbacks.Callback):
    # Class-level on purpose: KerasTuner deep-copies callbacks for every trial.
    starts = []

    def on_train_begin(self, logs=None):
        type(self).starts.append(True)
        if len(type(self).starts) == 2:
            raise KeyboardInterrupt  # like Ctrl-C: not a trial failure, the search itself stops


def test_bayesian_search_resumes_after_an_interruption_without_redoing_trials(data, tmp_path):
    # One random point, then the Gaussian process proposes the second trial.
    kwargs = dict(
        TINY, tuner="bayesian", max_trials=2, tuner_options={"num_initial_points": 1},
        search_space=space(learning_rate=(0.01, 0.1, "log")), directory=tmp_path,
    )
    _InterruptSecondTraining.starts.clear()
    with pytest.raises(KeyboardInterrupt):
        search(data, callbacks=[_InterruptSecondTraining()], **kwargs)
    project = tmp_path / "digits_bayesian"  # the default project name
    first = (project / "trial_0" / "recipes_trial.json").read_text()
    interrupted = json.loads((project / "trial_1" / "trial.json").read_text())
    assert interrupted["status"] == "RUNNING"
    result = search(data, callbacks=[_InterruptSecondTraining()], **kwargs)
    # One more training (the interrupted trial, from scratch), none for the finished one.
    assert len(_InterruptSecondTraining.starts) == 3
    assert (project / "trial_0" / "recipes_trial.json").read_text() == first
    rows = result.table()
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert rows[1]["learning_rate"] == interrupted["hyperparameters"]["values"]["learning_rate"]
    assert rows[0]["learning_rate"] != rows[1]["learning_rate"]


def test_grid_search_marks_a_nan_trial_failed_and_goes_on(data, tmp_path, capsys):
    # Grid search starts from the defaults: the first choice, a learning rate that diverges. The
    # clipped cross-entropy alone stays finite however large the weights get; the L2 penalty on
    # the head grows by a factor 2 * lr * l2 = 2000 per step and overflows within the epoch.
    result = search(
        data, **TINY, tuner="grid", max_trials=5,
        search_space=space(learning_rate=[1e6, 0.05], l2=1e-3), directory=tmp_path,
        project_name="grid",
    )
    rows = result.table()
    assert [(r["learning_rate"], r["status"]) for r in rows] == [(1e6, "FAILED"), (0.05, "COMPLETED")]
    assert "loss became nan" in rows[0]["message"] or "loss became inf" in rows[0]["message"]
    assert rows[0]["val_accuracy"] is None
    assert result.best_trial_id == rows[1]["trial"]
    out = capsys.readouterr().out
    assert "trial 0 FAILED" in out and "trial 1 COMPLETED" in out


class _Boom(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("boom: broken input pipeline")


def test_too_many_failures_in_a_row_stop_with_a_clear_message(data, tmp_path):
    with pytest.raises(SearchFailedError) as info:
        search(
            data, **TINY, tuner="random", max_trials=3, max_consecutive_failed_trials=1,
            callbacks=[_Boom()], search_space=space(learning_rate=(0.01, 0.1, "log")),
            directory=tmp_path, project_name="boom",
        )
    message = str(info.value)
    assert "1 trial(s) in a row failed" in message and "boom: broken input pipeline" in message
    assert "results.csv" in message
    assert (tmp_path / "boom" / "results.csv").is_file()


# ---------------------------------------------------------------------------------------------
# Search space (no training)
# ---------------------------------------------------------------------------------------------


def test_default_space_has_a_default_for_everything(data):
    resolved = resolve_search_space(data, backbones=["mobilenet", "mobilenet_v3_small"])
    assert resolved["backbone"] == {"values": ["mobilenet", "mobilenet_v3_small"], "default": "mobilenet"}
    # 8x8 digits from scratch: small sizes, per backbone (conditional on it)
    assert resolved["image_size:mobilenet"] == {"values": [32, 64], "default": 32}
    assert resolved["learning_rate"]["sampling"] == "log"
    for key in ("optimizer", "dropout", "l2", "augmentation", "label_smoothing", "schedule", "batch_size"):
        assert "default" in resolved[key], key
    assert resolved["augmentation"]["values"] == [None, "light", "medium"]
    assert "unfreeze" not in resolved  # only when fine-tuning


def test_search_space_overrides_and_fixed_fields(data):
    resolved = resolve_search_space(
        data, backbones="mobilenet", alpha=0.25,
        search_space={"dropout": [0.0, 0.2, 0.4], "learning_rate": (1e-4, 1e-2, "log"),
                      "optimizer": "adam", "dense_units": [(), (64,)]},
        l2=1e-4,
    )
    assert resolved["dropout"] == {"values": [0.0, 0.2, 0.4], "default": 0.2}
    assert resolved["learning_rate"] == {"min": 1e-4, "max": 1e-2, "sampling": "log", "default": 5e-3}
    assert resolved["optimizer"] == {"value": "adam"}
    assert resolved["dense_units"]["values"] == [[], [64]]
    assert "l2" not in resolved and "alpha" not in resolved  # fixed for every trial


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(search_space={"dropuot": [0.1]}), r"Unknown search-space key; Received: 'dropuot'\. Valid keys \(closest first\): dropout,"),
        (dict(dropuot=0.1), r"Did you mean: dropout"),
        (dict(search_space={"optimizer": ["adam", "adamm"]}), r"adamm.*Did you mean: adam"),
        (dict(search_space={"unfreeze": ["all"]}), r"only when fine-tuning"),
        (dict(epochs=3), r"max_epochs"),
        (dict(search_space={"backbone": ["resnet50"]}), r"backbones="),
        (dict(search_space={"image_size": [16, 32]}), r">= 32"),
        (dict(search_space={"learning_rate": (0, 1, "log")}), r"min > 0"),
        (dict(search_space={"dropout": {"min": 0.1}}), r"must be a list"),
        (dict(dropout=0.3, search_space={"dropout": [0.1, 0.2]}), r"both fixed"),
        (dict(alpha=0.3), r"alpha must be one of"),
    ],
)
def test_search_space_errors(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        resolve_search_space(data, backbones="mobilenet", **kwargs)


def test_bad_search_arguments(data, tmp_path):
    with pytest.raises(ValueError, match="Did you mean: random"):
        search(data, tuner="randon", directory=tmp_path)
    with pytest.raises(ValueError, match="Unknown backbone"):
        search(data, backbones="mobilenet_v9", directory=tmp_path)
    with pytest.raises(ValueError, match="callbacks cannot reach"):
        search(data, isolate=True, callbacks=[_Boom()], directory=tmp_path)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_cli_tune_errors(tmp_path, capsys):
    from recipes.cli import main

    assert main(["tune", "--directory", str(tmp_path), "--search-space", "{bad"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["tune", "--epochs", "3"]) == 2
    assert "--max-epochs" in capsys.readouterr().err
    assert main(["tune", "--worker", "1"]) == 2
    assert "--chief-address" in capsys.readouterr().err
    assert main(["tune", "--directory", str(tmp_path), "--search-space", '{"dropuot": [0.1]}']) == 2
    assert "dropout" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Fine-tuning trials (two-phase, from a saved backbone) in isolated processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~40 s: two subprocess trials; the in-process paths stay in the default run
def test_isolated_fine_tuning_trials_from_saved_backbone(hyperband, data, tmp_path):
    pytest.importorskip("recipes.finetune", reason="recipes.finetune (fine_tune) not there yet")
    result, _ = hyperband
    weights = recipes.save_backbone(result.best_model(), tmp_path / "digits_mobilenet.weights.h5")
    tuned = search(
        data, **TINY, tuner="random", max_trials=1, weights=str(weights), isolate=True,
        head_epochs=1, search_space=space(learning_rate=(1e-3, 1e-2, "log"), unfreeze=["top:30%", "all"]),
        directory=tmp_path, project_name="ft",
    )
    (row,) = tuned.table()
    assert row["status"] == "COMPLETED", row["message"]
    assert row["epochs"] == 2  # head phase + fine-tuning phase
    assert row["unfreeze"] in ("top:30%", "all")
    assert tuned.best_recipe.weights == str(weights)
    trial_dir = tuned.project_dir / f"trial_{row['trial']}"
    assert (trial_dir / "isolated.log").is_file() and (tuned.project_dir / "isolated_data.npz").is_file()
    # The child process wrote KerasTuner's checkpoint: the best model reloads here.
    scores = tuned.best_model().evaluate(data.validation, return_dict=True, verbose=0)
    assert scores["accuracy"] == pytest.approx(tuned.best_score, abs=1e-6)
