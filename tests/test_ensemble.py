"""ensemble: the weighted mean of members' probabilities, saved and reloaded."""

import keras
import numpy as np
import pytest

import recipes


def test_ensemble_is_weighted_mean_and_reloads(tmp_path, digits_small):
    a = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25, input_shape=(8, 8, 1), name="a")
    b = recipes.build_classifier("mobilenet_v3_small", 10, image_size=32, input_shape=(8, 8, 1), name="b")
    both = recipes.ensemble([a, b], weights=[3, 1])
    x = digits_small[0][:4]

    def probs(model):  # an eager call: predict() would trace a graph per model
        return keras.ops.convert_to_numpy(model(x, training=False))

    expected = 0.75 * probs(a) + 0.25 * probs(b)
    np.testing.assert_allclose(probs(both), expected, rtol=1e-5, atol=1e-6)
    both.save(tmp_path / "e.keras")
    reloaded = keras.models.load_model(tmp_path / "e.keras")
    np.testing.assert_allclose(probs(reloaded), expected, rtol=1e-5, atol=1e-6)


def test_ensemble_errors():
    a = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, name="a")
    b = recipes.build_classifier("mobilenet", 4, image_size=32, alpha=0.25, name="b")
    with pytest.raises(ValueError, match="at least 2 models"):
        recipes.ensemble([a])
    with pytest.raises(ValueError, match=r"same number of classes; Received: \[3, 4\]"):
        recipes.ensemble([a, b])
    with pytest.raises(ValueError, match="non-negative"):
        recipes.ensemble([a, a], weights=[1, -1])
    c = recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25, name="a")
    assert recipes.ensemble([a, c]).output_shape == (None, 3)  # same names are made unique


# ---------------------------------------------------------------- vote and stack (issue 13)

def _tiny(seed, size=8, classes=10, name=None):
    """A fast stand-in member: raw (8, 8, 1) pixels -> its own resize -> Dense softmax."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    if size != 8:
        x = keras.layers.Resizing(size, size)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(classes, activation="softmax",
                             kernel_initializer=keras.initializers.RandomNormal(stddev=0.3))(x)
    return keras.Model(inputs, out, name=name or f"tiny{seed}")


def _p(model, x):
    return np.asarray(model(x, training=False))  # eager: no predict() tracing per model


def _numpy_vote(probs):
    """Majority of the members' argmax; a tie goes to the class with the higher mean probability."""
    probs = np.stack(probs)  # (M, N, C)
    votes = np.zeros(probs.shape[1:])
    for member in probs:
        votes[np.arange(len(member)), member.argmax(1)] += 1
    mean = probs.mean(0)
    best = votes.max(1, keepdims=True)
    return np.where(votes == best, mean, -1).argmax(1), votes / len(probs)


@pytest.fixture(scope="module")
def small_split(digits_small):
    return recipes.load_data(digits_small, batch_size=64, validation_split=0.3, test_split=0.2)


def test_vote_is_the_numpy_majority_with_ties_by_mean_and_reloads(tmp_path, digits_small):
    members = [_tiny(s, size) for s, size in ((1, 8), (2, 16), (3, 12))]  # input sizes differ
    x = digits_small[0][:120]
    probs = [_p(m, x) for m in members]
    winner, share = _numpy_vote(probs)
    ties = (share.max(1) == 1 / 3).sum()
    assert ties > 0  # three members, ten classes: some images get three different votes
    vote = recipes.ensemble(members, "vote")
    out = _p(vote, x)
    np.testing.assert_array_equal(out.argmax(1), winner)
    np.testing.assert_allclose(out, share, atol=1e-3)  # the vote share (ties nudged by 1e-3)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)
    vote.save(tmp_path / "vote.keras")
    again = keras.models.load_model(tmp_path / "vote.keras")
    np.testing.assert_allclose(_p(again, x), out, atol=1e-6)
    heavy = _p(recipes.ensemble(members, "vote", weights=[5, 1, 1]), x)  # 5 > 1 + 1 votes
    np.testing.assert_array_equal(heavy.argmax(1), probs[0].argmax(1))


def test_stack_is_the_fitted_logistic_regression_on_validation_and_reloads(tmp_path, small_split):
    from recipes.ensemble import fit_stacker, predict_split

    members = [_tiny(7), _tiny(8, 16)]
    stacked = recipes.ensemble(members, "stack", data=small_split)
    val_probs, val_y = predict_split(members, small_split.validation)
    meta = fit_stacker(val_probs, val_y)  # the same fit on the same (validation) predictions
    test_probs, _ = predict_split(members, small_split.test)
    expected = meta.predict_proba(np.concatenate(test_probs, axis=1))
    xs = np.concatenate([np.asarray(x) for x, _ in small_split.test])
    got = _p(stacked, xs)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    stacked.save(tmp_path / "stack.keras")
    again = keras.models.load_model(tmp_path / "stack.keras")
    np.testing.assert_allclose(_p(again, xs), expected, atol=1e-4)


@pytest.mark.slow
def test_stack_writes_a_two_class_regression_as_softmax(digits_small):
    x, y = digits_small
    keep = y < 2
    data = recipes.load_data((x[keep], y[keep]), batch_size=32, validation_split=0.4, test_split=0.2)
    from recipes.ensemble import fit_stacker, predict_split

    members = [_tiny(9, classes=2), _tiny(10, classes=2)]
    stacked = recipes.ensemble(members, "stack", data=data)
    probs, labels = predict_split(members, data.validation)
    xv = np.concatenate([np.asarray(a) for a, _ in data.validation])
    np.testing.assert_allclose(_p(stacked, xv),
                               fit_stacker(probs, labels).predict_proba(np.concatenate(probs, 1)),
                               atol=1e-4)


def test_method_errors(small_split):
    a, b = _tiny(11), _tiny(12)
    with pytest.raises(ValueError, match=r"Unknown method; Received: method='avg'.*average"):
        recipes.ensemble([a, b], "avg")
    with pytest.raises(ValueError, match="fits its meta-learner on data.validation; Received: data=None"):
        recipes.ensemble([a, b], "stack")
    with pytest.raises(ValueError, match="learns its own member weights"):
        recipes.ensemble([a, b], "stack", weights=[1, 2], data=small_split)
