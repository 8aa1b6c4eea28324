"""Shared fixtures: real data locations and small helpers."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: Modules whose module-scoped fixture trains for 5-45 s (the shared Hyperband search, the
#: fine-tuned run, the finished run folder, ...). Their tests stay on one xdist worker
#: (`--dist loadgroup`): spread over both, each worker would pay for the fixture again.
SHARED_FIXTURE_MODULES = (
    "tests/tuning/test_tuning_search.py", "tests/finetune/test_finetune_run.py",
    "tests/test_training.py", "tests/finetune/test_finetune_policy.py",
    "tests/after/test_after_gradcam.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.nodeid.split("::")[0]
        if module in SHARED_FIXTURE_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))
    # The groups first: one handed out last would keep its worker busy while the other idles.
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
