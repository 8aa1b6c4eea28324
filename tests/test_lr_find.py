"""recipes.find_lr and `recipes find-lr` on real digits."""

import numpy as np

import recipes
from recipes.cli import main


def test_find_lr_restores_weights_and_suggests_inside_the_range(digits_small):
    data = recipes.load_data(digits_small, batch_size=32)
    model = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25, input_shape=(8, 8, 1))
    before = [w.copy() for w in model.get_weights()]
    result = recipes.find_lr(model, data, start=1e-5, end=1.0, steps=25)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # documented rule: the LR at the smoothed-loss minimum, divided by 10
    assert result.suggestion == result.suggestions["minimum"]
    assert min(result.lrs) / 10 <= result.suggestion <= max(result.lrs) / 10
    assert len(result.lrs) == len(result.losses) and len(result.lrs) <= 25


def test_find_lr_command_writes_plot(tmp_path, capsys):
    plot = tmp_path / "lr.png"
    code = main(["find-lr", "--backbone", "mobilenet", "--alpha", "0.25", "--image-size", "32",
                 "--steps", "15", "--start", "1e-5", "--end", "1", "--plot", str(plot)])
    assert code == 0
    assert plot.stat().st_size > 1000
    assert "suggested learning rate:" in capsys.readouterr().out
