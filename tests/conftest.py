"""Shared fixtures: real data locations and small helpers."""

import gc
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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    # TensorFlow never frees a trained model's traced graphs (~200k Python objects per `fit`,
    # even after `del model` and `clear_session()`: tf-keras#286, tensorflow#61791), so a worker
    # accumulates millions of live objects and every full collection walks all of them again:
    # the collections grew to tens of seconds per worker. At each module's end, collect what is
    # garbage and move the survivors to the permanent generation, out of later collections.
    if nextitem is None or nextitem.module is not item.module:
        gc.collect()
        gc.freeze()


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
