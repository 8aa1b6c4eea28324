"""load_data: image folders and the dispatcher's clear errors (arrays, digits and IDX:
tests/data/test_data_arrays.py; tensorflow-datasets: tests/data/test_data_tfds.py)."""

import numpy as np
import pytest

import recipes


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _write_png(path, color, size=(12, 10)):
    from PIL import Image

    Image.new("RGB", size, color).save(path)


def test_folder_source_skips_corrupt_files_with_a_warning(tmp_path):
    for name, color in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / name).mkdir()
        for i in range(6):
            _write_png(tmp_path / name / f"{i}.png", color, size=(12 + i, 10))
    (tmp_path / "cat" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "dog" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match="Skipped 2 unreadable"):
        data = recipes.load_data(str(tmp_path), validation_split=0.0, test_split=0.25)
    assert data.class_names == ["cat", "dog"]
    assert data.input_shape == (10, 12, 3)  # the first image's size
    x, y = _collect(data.train)
    assert len(y) == 9
    red = x[y == 0][..., 0].mean()
    assert red > 250


def test_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="No images"):
        recipes.load_data(str(tmp_path))
    (tmp_path / "only").mkdir()
    for i in range(3):
        _write_png(tmp_path / "only" / f"{i}.png", (1, 2, 3))
    with pytest.raises(ValueError, match="at least 2 classes; Received: 1"):
        recipes.load_data(str(tmp_path))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(source="cifar"), "Unknown data source; Received: source='cifar'"),
        (dict(source=42), "source must be"),
        (dict(batch_size=0), "batch_size must be a positive int; Received: batch_size=0"),
        (dict(validation_split=1.5), "validation_split must be a fraction"),
        (dict(validation_split=0.5, test_split=0.5), "must leave data to train on"),
        (dict(source=(np.zeros((4, 3, 3)), np.array([0, 1, 0]))), "one per image"),
        (dict(source=(np.zeros((4, 3, 3)), np.zeros(4, int))), "at least 2 classes"),
        (dict(source=(np.zeros((4, 3, 3, 2)), np.array([0, 1, 0, 1]))), r"\(N, H, W, 1\|3\)"),
        (dict(source=(np.zeros((30, 4, 4)), np.arange(30) % 10)), "Cannot split 30 images of 10 classes"),
    ],
)
def test_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        recipes.load_data(**kwargs)
