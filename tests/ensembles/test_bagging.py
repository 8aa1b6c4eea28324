"""bagging, snapshot_ensemble, distill: members on distinct bootstrap samples, resume, one model."""

import json

import keras
import numpy as np
import pytest

import recipes
import recipes.training
from recipes.bagging import bootstrap_indices, split_arrays

FAST = dict(epochs=1, verbose=0, precise_bn=False, warmup_epochs=0, patience=None)


def _mlp(name="mlp"):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name=name)


@pytest.fixture(scope="module")
def data(digits_small):
    return recipes.load_data(digits_small, batch_size=64, validation_split=0.2, test_split=0.2)


def test_bagging_members_train_on_their_own_bootstrap_and_rerun_reuses_them(tmp_path, data, monkeypatch):
    seen = []
    real_train = recipes.training.train

    def spy(model, member_data, **kw):  # what each member's train() really iterates
        labels = np.concatenate([np.asarray(y) for _, y in member_data.train_pipeline(kw["recipe"].seed)])
        seen.append(np.bincount(labels, minlength=10))
        return real_train(model, member_data, **kw)

    monkeypatch.setattr(recipes.training, "train", spy)
    out = tmp_path / "bag"
    bag = recipes.bagging(_mlp(), data, members=2, out=out, seed=3, **FAST)
    _, y = split_arrays(data, "train")
    assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])
    for i, (idx, counts) in enumerate(zip(bag.samples, seen)):
        np.testing.assert_array_equal(idx, bootstrap_indices(len(y), 3 + i))
        np.testing.assert_array_equal(counts, np.bincount(y[idx], minlength=10))
        assert len(np.unique(idx)) < len(y)  # drawn with replacement
        record = json.loads((out / f"member{i}" / "bootstrap.json").read_text())
        assert record["class_counts"] == counts.tolist() and record["seed"] == 3 + i
    assert bag.metrics["members"] == 2 and len(bag.metrics["member_test_accuracy"]) == 2
    x_test = np.concatenate([np.asarray(x) for x, _ in data.test])
    y_test = np.concatenate([np.asarray(t) for _, t in data.test])
    expected = np.mean([m.model(x_test, training=False) for m in bag.members], axis=0)
    assert bag.metrics["test_accuracy"] == pytest.approx(np.mean(expected.argmax(1) == y_test))
    reloaded = keras.models.load_model(out / "model.keras")
    np.testing.assert_allclose(np.asarray(reloaded(x_test)), expected, atol=1e-5)
    seen.clear()
    again = recipes.bagging(_mlp(), data, members=2, out=out, seed=3, **FAST)
    assert seen == [] and again.metrics["test_accuracy"] == bag.metrics["test_accuracy"]


@pytest.mark.slow
def test_snapshot_cycles_continue_from_the_previous_snapshot(tmp_path, data):
    snap = recipes.snapshot_ensemble(_mlp(), data, cycles=2, cycle_epochs=1, method="vote",
                                     out=tmp_path / "snap", **FAST)
    first, second = (m.history["learning_rate"] for m in snap.members)
    assert len(first) == len(second) == 1 and first == second  # each cycle restarts at the peak
    assert snap.metrics["method"] == "vote" and (tmp_path / "snap" / "model.keras").is_file()
    w0, w1 = (m.model.get_weights()[0] for m in snap.members)
    assert not np.allclose(w0, w1)


@pytest.mark.slow
def test_distill_trains_a_student_that_reloads(tmp_path, data):
    teacher = _mlp("teacher")
    student = recipes.distill(teacher, _mlp("student"), data, temperature=2.0, alpha=0.5,
                              out=tmp_path / "student", **FAST)
    assert 0 <= student.metrics["test_accuracy"] <= 1
    assert student.metrics["teacher_test_accuracy"] is not None
    keras.models.load_model(tmp_path / "student" / "model.keras")


def test_distillation_loss_matches_numpy():
    from recipes.distill import DistillationLoss, soften

    rng = np.random.default_rng(0)
    teacher = rng.dirichlet(np.ones(4), 5).astype("float32")
    student = rng.dirichlet(np.ones(4), 5).astype("float32")
    labels = rng.integers(0, 4, 5)
    t, alpha = 3.0, 0.3
    soft = soften(teacher, t)
    y_true = np.concatenate([np.eye(4)[labels], soft], 1).astype("float32")
    q_t = soften(student, t)
    expected = np.mean(alpha * -np.log(student[np.arange(5), labels])
                       + (1 - alpha) * t ** 2 * (soft * np.log(soft / q_t)).sum(1))
    assert float(DistillationLoss(t, alpha)(y_true, student)) == pytest.approx(expected, rel=1e-4)


def test_bad_arguments_fail_before_training(data):
    with pytest.raises(ValueError, match="members"):
        recipes.bagging(_mlp(), data, members=1)
    with pytest.raises(ValueError, match="Unknown method"):
        recipes.bagging(_mlp(), data, method="mean")
    with pytest.raises(ValueError, match="cycles"):
        recipes.snapshot_ensemble(_mlp(), data, cycles=1)
    with pytest.raises(ValueError, match="temperature"):
        recipes.distill(_mlp(), _mlp(), data, temperature=0)
    with pytest.raises(ValueError, match="MixUp/CutMix"):
        recipes.distill(_mlp(), _mlp(), data, mixup=0.2)
