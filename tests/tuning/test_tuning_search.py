"""recipes.search: real (tiny) KerasTuner searches, resume, failed trials, results.

Every trial builds and traces a real MobileNet (alpha 0.25, 32 px) and trains it for one epoch on
300 digits; tracing dominates the time (~15 s a training), so the default run has five trainings:
a shared Hyperband search (three) and a grid search (two) that fails a NaN trial and resumes an
interrupted one. Random searches here only build (failures), and finish in
test_tuning_distributed.py; Bayesian's proposals are checked without training in
test_tuning_space.py and its full search is `slow`.
"""

import csv
import gc
import json

import keras
import pytest

import recipes
from recipes.tuning import SearchFailedError, search

# One xdist worker for this module (--dist loadgroup), so its module-scoped fixture
# (the shared Hyperband search) is made once.
pytestmark = pytest.mark.xdist_group("test_tuning_search")

# Everything but the learning rate fixed: trials stay cheap and differ in one known place.
FIXED_SPACE = {
    "optimizer": "sgd", "image_size": 32, "batch_size": 32, "augmentation": None,
    "schedule": "constant", "dropout": 0.2, "l2": 0.0, "label_smoothing": 0.0,
}
TINY = dict(backbones="mobilenet", alpha=0.25, max_epochs=1, verbose=0)


def space(**changes):
    return {**FIXED_SPACE, **changes}


@pytest.fixture(scope="module")
def data(digits_small):
    """300 real digits: 180 train, 60 validation, 60 test, batches of 32."""
    return recipes.load_data(digits_small, batch_size=32, validation_split=0.2, test_split=0.2)


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
# Hyperband search (shared): table, files, best model, resume, refine
# ---------------------------------------------------------------------------------------------


def test_hyperband_continues_the_better_trial_with_its_weights(hyperband):
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
    info = json.loads((result.project_dir / f"trial_{result.best_trial_id}" / "recipes_trial.json").read_text())
    assert info["status"] == "COMPLETED" and info["recipe"]["learning_rate"] == best.learning_rate
    args = json.loads((result.project_dir / "search_args.json").read_text())
    assert args["tuner"] == "hyperband" and args["fixed"] == {"alpha": 0.25}


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
        (dict(label_smoothing=0.1, search_space={k: x for k, x in space(learning_rate=(0.01, 0.1, "log")).items() if k != "label_smoothing"}), "label_smoothing"),
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


@pytest.mark.slow  # one more real training; the data merge is checked in test_tuning_space.py
def test_retrain_uses_train_plus_validation(hyperband, tmp_path):
    result, _ = hyperband
    final = result.retrain(epochs=1, verbose=0, out=tmp_path / "best")
    assert final.recipe.learning_rate == result.best_recipe.learning_rate
    assert "test_accuracy" in final.metrics
    assert not any(k.startswith("val_") for k in final.history)  # validation joined training
    assert recipes.RunFolder(tmp_path / "best").finished


# ---------------------------------------------------------------------------------------------
# Failures, interruption and resume
# ---------------------------------------------------------------------------------------------


class _InterruptSecondTraining(keras.callbacks.Callback):
    # Class-level on purpose: KerasTuner deep-copies callbacks for every trial.
    starts = []

    def on_train_begin(self, logs=None):
        type(self).starts.append(True)
        if len(type(self).starts) == 2:
            raise KeyboardInterrupt  # like Ctrl-C: not a trial failure, the search itself stops


def test_grid_search_fails_a_nan_trial_and_resumes_an_interrupted_one(data, tmp_path, capsys):
    # Grid search starts from the defaults: the first choice, a learning rate that diverges. The
    # clipped cross-entropy alone stays finite however large the weights get; the L2 penalty on
    # the head grows by a factor 2 * lr * l2 = 2e6 per step and overflows within the epoch.
    kwargs = dict(
        TINY, tuner="grid", max_trials=5, search_space=space(learning_rate=[1e9, 0.05], l2=1e-3),
        directory=tmp_path, project_name="grid", callbacks=[_InterruptSecondTraining()],
    )
    _InterruptSecondTraining.starts.clear()
    with pytest.raises(KeyboardInterrupt):
        search(data, **kwargs)
    first = (tmp_path / "grid" / "trial_0" / "recipes_trial.json").read_text()
    interrupted = json.loads((tmp_path / "grid" / "trial_1" / "trial.json").read_text())
    assert interrupted["status"] == "RUNNING"

    result = search(data, **kwargs)
    # One more training (the interrupted trial, from scratch), none for the failed one.
    assert len(_InterruptSecondTraining.starts) == 3
    assert (tmp_path / "grid" / "trial_0" / "recipes_trial.json").read_text() == first
    rows = result.table()
    assert [(r["learning_rate"], r["status"]) for r in rows] == [(1e9, "FAILED"), (0.05, "COMPLETED")]
    assert "loss became nan" in rows[0]["message"] or "loss became inf" in rows[0]["message"]
    assert rows[0]["val_accuracy"] is None
    assert result.best_trial_id == rows[1]["trial"]
    out = capsys.readouterr().out
    assert "trial 0 FAILED" in out and "trial 1 COMPLETED" in out


class _Boom(keras.callbacks.Callback):
    def __init__(self, error=RuntimeError):
        super().__init__()
        self.error = error

    def on_train_begin(self, logs=None):
        raise self.error("boom: broken input pipeline")


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


class _FreezeCount(_Boom):
    """Records how many objects are frozen when each trial starts training, then fails it."""

    counts = []

    def on_train_begin(self, logs=None):
        self.counts.append(gc.get_freeze_count())
        super().on_train_begin(logs)


def test_each_trials_survivors_are_frozen_out_of_the_next_trials_collections(data, tmp_path):
    # A failed trial still ends with on_trial_end, so two cheap failures show the freeze.
    _FreezeCount.counts = []
    with pytest.raises(SearchFailedError):
        search(
            data, **TINY, tuner="random", max_trials=2, max_consecutive_failed_trials=2,
            callbacks=[_FreezeCount()], search_space=space(learning_rate=(0.01, 0.1, "log")),
            directory=tmp_path, project_name="freeze",
        )
    first, second = _FreezeCount.counts
    assert second > first  # the end of trial 0 froze what survived it


def test_a_value_error_while_training_stops_the_search_at_once(data, tmp_path):
    """A ValueError inside training is a bug (every value was checked before training), not an
    invalid recipe: it propagates instead of failing trial after trial."""
    with pytest.raises(ValueError, match="boom: broken input pipeline") as info:
        search(
            data, **TINY, tuner="random", max_trials=3, max_consecutive_failed_trials=3,
            callbacks=[_Boom(ValueError)], search_space=space(learning_rate=(0.01, 0.1, "log")),
            directory=tmp_path, project_name="bug",
        )
    assert "Invalid recipe" not in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)  # the original error, with its traceback
    trials = sorted((tmp_path / "bug").glob("trial_*/trial.json"))
    assert len(trials) == 1  # no second trial was wasted on it
    assert json.loads(trials[0].read_text())["status"] == "RUNNING"  # resumable, not FAILED


@pytest.mark.slow  # two real trainings; the Gaussian process is checked without training
def test_bayesian_search_resumes_after_an_interruption_without_redoing_trials(data, tmp_path):
    # One random point, then the Gaussian process proposes the second trial.
    kwargs = dict(
        TINY, tuner="bayesian", max_trials=2, tuner_options={"num_initial_points": 1},
        search_space=space(learning_rate=(0.01, 0.1, "log")), directory=tmp_path,
        callbacks=[_InterruptSecondTraining()],
    )
    _InterruptSecondTraining.starts.clear()
    with pytest.raises(KeyboardInterrupt):
        search(data, **kwargs)
    project = tmp_path / "arrays_300_8_8_1_bayesian"  # the default project name
    first = (project / "trial_0" / "recipes_trial.json").read_text()
    interrupted = json.loads((project / "trial_1" / "trial.json").read_text())
    assert interrupted["status"] == "RUNNING"
    result = search(data, **kwargs)
    assert len(_InterruptSecondTraining.starts) == 3
    assert (project / "trial_0" / "recipes_trial.json").read_text() == first
    rows = result.table()
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED"]
    assert rows[1]["learning_rate"] == interrupted["hyperparameters"]["values"]["learning_rate"]
    assert rows[0]["learning_rate"] != rows[1]["learning_rate"]


# ---------------------------------------------------------------------------------------------
# Fine-tuning trials (two-phase, from a saved backbone) in isolated processes
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # ~40 s: two subprocess trials; the in-process paths stay in the default run
def test_isolated_fine_tuning_trials_from_saved_backbone(hyperband, data, tmp_path):
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
    # The child process wrote KerasTuner's checkpoint (Keras' ModelCheckpoint): it reloads here.
    scores = tuned.best_model().evaluate(data.validation, return_dict=True, verbose=0)
    assert scores["accuracy"] == pytest.approx(tuned.best_score, abs=1e-6)
