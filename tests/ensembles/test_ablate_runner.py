"""ablate: cells as run folders (resume), results.csv / table.md / plot.png, paired intervals,
fixed splits across seeds, bad input. `train` is replaced by a stand-in that writes a finished
run folder at once (the real thing is in the slow test at the end)."""

import csv

import numpy as np
import pytest

import recipes
import recipes.training
from recipes.ablate import STUDIES, ablate, get_study, paired_interval, summarize, verdict
from recipes.run import RunFolder

TINY = dict(backbone="mobilenet", alpha=0.25, image_size=32)


@pytest.fixture(scope="module")
def data(digits_small):
    return recipes.load_data(digits_small, batch_size=32, validation_split=0.2, test_split=0.2)


@pytest.fixture
def fake_train(monkeypatch):
    """Stands in for recipes.train: accuracy = a known function of dropout and seed."""
    calls = []

    def train(model_or_backbone, data, *, recipe, out, verbose=0):
        calls.append({"recipe": recipe, "sizes": dict(data.sizes), "model": model_or_backbone,
                      "counts": list(data.class_counts)})
        run = RunFolder(out)
        run.write_text(run.MODEL, "stand-in")
        run.save_recipe(recipe)
        acc = 0.8 + 0.2 * recipe.dropout + 0.01 * recipe.seed * recipe.dropout
        run.save_metrics({"test_accuracy": acc, "test_loss": 1 - acc, "train_seconds": 1.0,
                          "epochs": recipe.epochs})
        return None

    monkeypatch.setattr(recipes.training, "train", train)
    return calls


def test_study_writes_its_outputs_and_a_rerun_redoes_nothing(tmp_path, data, fake_train):
    lines = []
    result = ablate("dropout", data, seeds=2, out=tmp_path, progress=lines.append, **TINY)
    assert len(fake_train) == 8 and result.ran == 8
    assert {c["recipe"].seed for c in fake_train} == {0, 1}
    assert lines[0].startswith("[1/8] dropout 0 seed 0: test_accuracy 0.8000")
    assert lines[4].startswith("[5/8] dropout 0 seed 1")  # seed by seed
    study = tmp_path / "dropout"
    with open(study / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["row"], r["seed"]) for r in rows][:3] == [("0", "0"), ("0", "1"), ("0.2", "0")]
    table = (study / "table.md").read_text()
    # dropout 0.4: +8.0 pt at seed 0, +8.4 at seed 1 -> the paired interval excludes 0
    assert "| 0.4 | dropout=0.4 | 88.2 ± 0.3 | +8.2 [" in table and "helps" in table
    assert "| 0 | dropout=0.0 | 80.0 ± 0.0 | baseline |" in table
    assert (study / "plot.png").stat().st_size > 0
    fake_train.clear()
    lines.clear()
    again = ablate("dropout", data, seeds=2, out=tmp_path, progress=lines.append, **TINY)
    assert fake_train == [] and again.ran == 0 and all("(reused)" in line for line in lines)
    (study / "0.6" / "seed1" / "metrics.json").unlink()  # an interrupted cell reruns alone
    ablate("dropout", data, seeds=2, out=tmp_path, progress=None, **TINY)
    assert [(c["recipe"].dropout, c["recipe"].seed) for c in fake_train] == [(0.6, 1)]


def test_data_size_rows_are_fixed_subsamples_of_the_train_split(tmp_path, data, fake_train):
    ablate("data_size", data, seeds=2, out=tmp_path, progress=None, **TINY)
    sizes = {}
    for c in fake_train:
        sizes.setdefault(c["sizes"]["train"], []).append(c["counts"])
    assert sorted(sizes)[-1] == data.sizes["train"] and len(sizes) == 4
    for counts in sizes.values():  # both seeds of a row train on the same images
        assert counts[0] == counts[1]
    assert all(c["sizes"]["test"] == data.sizes["test"] for c in fake_train)
    # every row gets the full split's optimizer steps, not its epoch count (a tenth of the data
    # for the same epochs would be a tenth of the steps)
    assert len({c["recipe"].train_steps for c in fake_train} - {None}) == 1  # the preset's budget
    fake_train.clear()
    ablate("data_size", data, seeds=1, epochs=3, out=tmp_path / "epochs", progress=None, **TINY)
    batch = fake_train[-1]["recipe"].batch_size  # epochs=3: no budget, so 3 full-split epochs
    assert {c["recipe"].train_steps for c in fake_train} == {3 * (data.sizes["train"] // batch)}
    fake_train.clear()
    ablate("data_size", data, seeds=1, out=tmp_path / "budget", progress=None, train_steps=40,
           **TINY)
    assert {c["recipe"].train_steps for c in fake_train} == {40}  # a budget given is kept


def test_activation_row_replaces_the_dense_head_activation(data):
    from recipes.ablate.runner import _Runner

    recipe = recipes.Recipe(dense_units=(16,), **TINY)
    model = _Runner._with_activation(None, recipe, data, "sigmoid")
    layer = model.get_layer("head_dense_0")
    assert layer.activation.__name__ == "sigmoid" and layer.get_config()["activation"] == "sigmoid"


def test_paired_interval_and_verdicts():
    from scipy import stats

    mean, low, high = paired_interval([0.01, 0.03, 0.02])
    half = stats.t.ppf(0.975, 2) * np.std([0.01, 0.03, 0.02], ddof=1) / np.sqrt(3)
    assert (mean, low, high) == pytest.approx((0.02, 0.02 - half, 0.02 + half))
    assert verdict(low, high) == "within noise"
    assert verdict(0.001, 0.01) == "helps" and verdict(-0.02, -0.01) == "hurts"
    assert paired_interval([0.05])[1:] == (None, None) and verdict(None, None).startswith("n/a")
    # two seeds, each exactly one test image (1/180) better: no spread, but not proof either
    assert paired_interval([1 / 180, 1 / 180], resolution=1 / 180)[1:] == pytest.approx((0, 2 / 180))
    rows = [{"row": r, "seed": s, "test_accuracy": a} for r, s, a in
            [("a", 0, 0.5), ("a", 1, 0.6), ("b", 0, 0.4), ("b", 1, 0.45)]]
    b = summarize(rows, ["a", "b"], "a")[1]
    assert b["diff"] == pytest.approx(-0.125) and b["n"] == 2


def test_every_study_has_its_baseline_and_valid_rows():
    names = ["decay", "augmentation", "dropout", "optimizer", "regularization", "learning_rate",
             "batch_size", "data_size", "activation", "ensemble_size", "ensemble_method",
             "pretraining", "backbone"]
    assert list(STUDIES) == names
    base = recipes.Recipe()
    for study in STUDIES.values():
        assert study.baseline in study.rows
        for row in study.rows:
            base.replace(**{k: v for k, v in study.changes(row).items() if not k.startswith("_")})
    assert list(get_study("augmentation").rows) == ["none", "rotation", "flip", "zoom",
                                                    "brightness", "noise", "contrast", "preset"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(study="dropuot"), r"Unknown study; Received: study='dropuot'. Did you mean: dropout"),
    (dict(study="dropout", seeds=0), r"seeds"),
    (dict(study="pretraining"), r"needs a related source"),
    (dict(study="dropout", dropuot=0.1), r"Unknown recipe field"),
])
def test_bad_input_fails_before_training(kwargs, message, data, fake_train, tmp_path):
    with pytest.raises(ValueError, match=message):
        ablate(data=data, out=tmp_path, **kwargs)
    assert fake_train == []


@pytest.mark.slow
def test_real_ensemble_method_study_runs_and_resumes(tmp_path, data):
    result = ablate("ensemble_method", data, seeds=1, epochs=1, out=tmp_path, progress=None,
                    precise_bn=False, **TINY)
    assert [r["row"] for r in result.rows] == ["single", "vote", "average", "stack", "distilled"]
    assert all(0 <= r["test_accuracy"] <= 1 for r in result.rows)
    assert ablate("ensemble_method", data, seeds=1, epochs=1, out=tmp_path, progress=None,
                  precise_bn=False, **TINY).ran == 0


def test_pretraining_gets_a_real_budget_and_fresh_batchnorm_statistics(data):
    """The study's `--epochs 2` on a small related source is a few dozen steps: a backbone
    whose BatchNorm statistics are still the initial ones (the fine-tune then stays at chance)."""
    from recipes.ablate.runner import PRETRAIN_STEPS, pretrain_recipe

    base = recipes.Recipe(epochs=2, batch_size=32, **TINY)
    recipe = pretrain_recipe(base, data, "digits")
    assert recipe.precise_bn is True and recipe.dataset == "digits"
    assert recipe.train_steps == PRETRAIN_STEPS > 2 * (data.sizes["train"] // 32)
    long = pretrain_recipe(base.replace(epochs=400), data, "digits")
    assert long.train_steps == 400 * (data.sizes["train"] // 32)  # a longer study keeps its own
    assert pretrain_recipe(base.replace(train_steps=40), data, "digits").train_steps == 40
