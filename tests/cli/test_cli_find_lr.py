"""`recipes.find_lr` (a superset of `callbacks.find_lr`) and `recipes find-lr` on real digits."""

import inspect

import numpy as np
import pytest

import callbacks
import recipes
from recipes import lr_find
from recipes.cli import main


def test_find_lr_takes_every_argument_of_callbacks_find_lr_with_the_same_defaults():
    ours = inspect.signature(recipes.find_lr).parameters
    for name, param in inspect.signature(callbacks.find_lr).parameters.items():
        if name in ("model", "dataset"):
            continue
        assert name in ours and ours[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert ours[name].default == param.default, name
    assert {"optimizer", "recipe"} <= set(ours)


def test_find_lr_restores_weights_and_suggests_inside_the_range(digits_small):
    data = recipes.load_data(digits_small, batch_size=32)
    model = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25, input_shape=(8, 8, 1))
    before = [w.copy() for w in model.get_weights()]
    result = recipes.find_lr(model, data, start=1e-5, end=1.0, steps=10, smoothing=0.9)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # documented rule: the LR at the smoothed-loss minimum, divided by 10
    assert result.suggestion == result.suggestions["minimum"]
    assert min(result.lrs) / 10 <= result.suggestion <= max(result.lrs) / 10
    assert len(result.lrs) == len(result.losses) and len(result.lrs) <= 10


def test_find_lr_rejects_bad_input_before_building(digits_small, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("built a model")

    monkeypatch.setattr("recipes.training.build_from_recipe", no_build)
    data = recipes.load_data(digits_small, batch_size=32)
    with pytest.raises(ValueError, match="diverge"):
        recipes.find_lr("mobilenet", data, diverge=1.0)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        recipes.find_lr("mobilenet", data, optimizer="adamm")
    with pytest.raises(ValueError, match="needs a Data or a source"):
        recipes.find_lr("mobilenet", data.train)
    with pytest.raises(ValueError, match="recipe field"):
        recipes.find_lr("mobilenet", data, imagesize=32)


def test_find_lr_command_honours_the_recipe_splits_and_writes_a_plot(tmp_path, monkeypatch, capsys):
    seen = {}
    real = lr_find.find_lr

    def spy(model, data, **kwargs):
        seen.update(data=data, recipe=kwargs["recipe"])
        return real(model, data, **kwargs)

    monkeypatch.setattr(lr_find, "find_lr", spy)
    plot = tmp_path / "lr.png"
    code = main(["find-lr", "--backbone", "mobilenet", "--alpha", "0.25", "--image-size", "32",
                 "--validation-split", "0.3", "--test-split", "0.2", "--batch-size", "50",
                 "--steps", "8", "--start", "1e-5", "--end", "1", "--plot", str(plot)])
    assert code == 0
    expected = recipes.load_data("digits", validation_split=0.3, test_split=0.2, seed=0).sizes
    assert seen["data"].sizes == expected and seen["data"].batch_size == 50
    assert seen["recipe"].validation_split == 0.3
    assert plot.stat().st_size > 1000
    out = capsys.readouterr().out
    assert out.startswith("LR range test: mobilenet on digits") and "suggested learning rate:" in out
