"""In-memory sources (digits, numpy arrays, IDX): stratified splits, batch gathering, no copies."""

import gzip
import struct

import numpy as np
import pytest

import recipes
from recipes.data.arrays import array_pipeline, read_idx


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_digits_is_real_and_split_stratified():
    data = recipes.load_data("digits", batch_size=64)
    assert data.num_classes == 10 and data.class_names[3] == "3"
    assert data.input_shape == (8, 8, 1)
    assert sum(data.sizes.values()) == 1797
    x, y = _collect(data.train)
    assert x.dtype == np.uint8 and x.max() == 255 and x.min() == 0
    assert data.class_counts == np.bincount(y, minlength=10).tolist()
    assert sum(data.class_counts) == data.sizes["train"] and data.cache == "memory"
    _, y_test = _collect(data.test)
    # stratified: every class present in test in near-equal proportion
    counts = np.bincount(y_test, minlength=10)
    assert counts.min() >= 16 and counts.max() <= 19


def test_splits_are_deterministic_for_a_seed():
    a = _collect(recipes.load_data("digits", seed=3).test)[1]
    b = _collect(recipes.load_data("digits", seed=3).test)[1]
    c = _collect(recipes.load_data("digits", seed=4).test)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_train_is_reshuffled_each_epoch_but_complete():
    data = recipes.load_data("digits", batch_size=2000)
    first = _collect(data.train)[1]
    second = _collect(data.train)[1]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.sort(first), np.sort(second))


def test_fresh_train_pipeline_order_depends_only_on_the_seed():
    data = recipes.load_data("digits", batch_size=500)
    a, b = (_collect(data.train_pipeline(7))[1] for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _collect(data.train_pipeline(8))[1])


def test_numpy_arrays_and_resizing(digits_small):
    x, y = digits_small
    data = recipes.load_data((x[..., 0], y), image_size=16, validation_split=0.2, test_split=0.0)
    assert data.test is None and data.input_shape == (16, 16, 1)
    xb, _ = next(iter(data.train))
    assert tuple(xb.shape[1:]) == (16, 16, 1) and xb.dtype.name == "uint8"
    assert data.sizes == {"train": 240, "validation": 60, "test": 0}


def test_splits_gather_from_the_callers_array(digits_small):
    """Every split is the caller's images, batch by batch (no per-split copy is made)."""
    x, y = digits_small
    data = recipes.load_data((x, y), validation_split=0.2, test_split=0.2, batch_size=1000)
    seen = np.concatenate([_collect(ds)[0] for ds in (data.train, data.validation, data.test)])
    assert len(seen) == len(x)
    np.testing.assert_array_equal(np.sort(seen.reshape(len(x), -1), axis=0),
                                  np.sort(x.reshape(len(x), -1), axis=0))


def test_float_01_arrays_are_scaled_to_255():
    x = np.random.default_rng(0).uniform(0, 1, (40, 4, 4, 3)).astype("float32")
    data = recipes.load_data((x, np.arange(40) % 2), validation_split=0.0, test_split=0.0)
    xb, _ = _collect(data.train)
    assert xb.dtype == np.uint8 and xb.max() > 200
    np.testing.assert_array_equal(np.sort(xb.ravel()), np.sort((x * 255).round().astype(np.uint8).ravel()))


def test_array_over_2gb_is_gathered_batch_by_batch(tmp_path):
    """A > 2 GB memory-mapped array (a sparse file, never written) trains without being read
    whole or copied into the graph (`from_tensor_slices` would hit TF's 2 GB constant limit)."""
    import psutil

    n = 2**31 // (256 * 256) + 1  # 32,769 images of 256x256x1: 2,147,549,184 bytes
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 256, 256, 1))
    big[-1] = 7  # only the last image's pages are written
    del big
    x = np.load(path, mmap_mode="r")
    assert x.nbytes > 2**31
    y = (np.arange(n) % 2).astype(np.int32)
    before = psutil.Process().memory_info().rss
    data = recipes.load_data((x, y), batch_size=4, validation_split=0.0, test_split=0.0)
    images, labels = next(iter(data.train))
    assert tuple(images.shape) == (4, 256, 256, 1) and labels.shape == (4,)
    last = array_pipeline(x, y, [n - 1], batch_size=1)
    assert int(next(iter(last))[0].numpy().max()) == 7
    assert psutil.Process().memory_info().rss - before < 512 * 2**20
    assert data.sizes["train"] == n and data.class_counts == [n - n // 2, n // 2]


def _write_idx(path, array, compress=True):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder_with_the_official_test_set(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 6, 6)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(60) % 3)
    test_images = rng.integers(0, 256, (9, 6, 6))
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test_images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 3)
    data = recipes.load_data(f"idx:{tmp_path}", validation_split=0.2)
    assert data.sizes == {"train": 48, "validation": 12, "test": 9}  # official test set kept
    assert data.input_shape == (6, 6, 1) and data.num_classes == 3
    assert data.class_counts == [16, 16, 16]
    x, y = _collect(data.test)  # in file order
    np.testing.assert_array_equal(x[..., 0], test_images)
    np.testing.assert_array_equal(y, np.arange(9) % 3)


def test_idx_folder_without_a_test_set_is_split_and_memory_mapped(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 5, 5))
    _write_idx(tmp_path / "train-images-idx3-ubyte", images, compress=False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(50) % 2, compress=False)
    assert isinstance(read_idx(tmp_path / "train-images-idx3-ubyte"), np.memmap)
    data = recipes.load_data(f"idx:{tmp_path}", validation_split=0.2, test_split=0.2)
    assert data.sizes == {"train": 30, "validation": 10, "test": 10}
    assert data.class_counts == [15, 15]
    seen = np.concatenate([_collect(ds)[0] for ds in (data.train, data.validation, data.test)])
    np.testing.assert_array_equal(np.sort(seen.reshape(50, -1), axis=0),
                                  np.sort(images.reshape(50, -1), axis=0))


def test_real_mnist_idx(mnist_dir):
    data = recipes.load_data(f"idx:{mnist_dir}", batch_size=500)
    assert sum(data.sizes.values()) == 10_000
    x, y = _collect(data.test)
    assert x.shape[1:] == (28, 28, 1) and set(np.unique(y)) == set(range(10))


def test_idx_errors(tmp_path):
    with pytest.raises(ValueError, match="IDX folder not found"):
        recipes.load_data("idx:/no/such/folder")
    with pytest.raises(ValueError, match="No IDX image/label files"):
        recipes.load_data(f"idx:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x00\x01")
    with pytest.raises(ValueError, match="truncated header"):
        recipes.load_data(f"idx:{tmp_path}")
    with pytest.raises(ValueError, match="Not an IDX file of uint8 data"):
        (tmp_path / "x.txt").write_bytes(b"hello")
        read_idx(tmp_path / "x.txt")
