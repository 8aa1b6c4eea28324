"""Shared fixtures: real data locations and small helpers."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(config, items):
    # Modules with a costly module-scoped fixture mark themselves `xdist_group` (`--dist
    # loadgroup` keeps each on one worker). Those groups first: one handed out last would keep its
    # worker busy while the other idles.
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)


#: The real MNIST test set shipped beside the project (skipped cleanly when absent).
MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    return MNIST_DIR


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache folder, so tests never see (or write) the user's ~/.keras."""
    from keras.src.backend import config

    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    # Keras reads KERAS_HOME once at import; point its resolved home at the temp folder.
    monkeypatch.setattr(config, "_KERAS_DIR", str(home))
    return home


@pytest.fixture(scope="session")
def digits_small():
    """A tiny real dataset: 300 sklearn digits as uint8 0-255 images with labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images[:300] * 255 / 16).astype("uint8")[..., None]
    return x, d.target[:300].astype("int32")
