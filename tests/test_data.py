"""load_data: every source, stratified deterministic splits, and the clear errors."""

import gzip
import struct
import warnings

import numpy as np
import pytest

import recipes


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


def test_numpy_arrays_and_resizing(digits_small):
    x, y = digits_small
    data = recipes.load_data((x[..., 0], y), image_size=16, validation_split=0.2, test_split=0.0)
    assert data.test is None and data.input_shape == (16, 16, 1)
    xb, _ = next(iter(data.train))
    assert tuple(xb.shape[1:]) == (16, 16, 1) and xb.dtype.name == "uint8"
    assert data.sizes == {"train": 240, "validation": 60, "test": 0}


def test_float_01_arrays_are_scaled_to_255():
    x = np.random.default_rng(0).uniform(0, 1, (40, 4, 4, 3)).astype("float32")
    data = recipes.load_data((x, np.arange(40) % 2), validation_split=0.0, test_split=0.0)
    xb, _ = _collect(data.train)
    assert xb.max() > 200


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


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder_written_by_the_test(tmp_path):
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 6, 6)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.arange(60) % 3)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (9, 6, 6)))
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(9) % 3)
    data = recipes.load_data(f"idx:{tmp_path}", validation_split=0.2)
    assert data.sizes == {"train": 48, "validation": 12, "test": 9}  # official test set kept
    assert data.input_shape == (6, 6, 1) and data.num_classes == 3


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


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)not prepared.*download_and_prepare"):
        recipes.load_data("tfds:mnist", data_dir=str(tmp_path))


def test_tfds_prepared_dataset_loads(tmp_path):
    """A real tfds builder, prepared offline into data_dir by the test, goes through tfds.load."""
    import tensorflow_datasets as tfds

    class TinyShapes(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(6, 6, 1)),
                    "label": tfds.features.ClassLabel(names=["dark", "light"]),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(40, 0), "test": self._generate_examples(10, 1)}

        def _generate_examples(self, n, offset):
            for i in range(n):
                label = (i + offset) % 2
                yield f"{offset}-{i}", {"image": np.full((6, 6, 1), 200 * label, np.uint8), "label": label}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TinyShapes(data_dir=str(tmp_path)).download_and_prepare()
        data = recipes.load_data("tfds:tiny_shapes", data_dir=str(tmp_path), validation_split=0.25)
    assert data.class_names == ["dark", "light"]
    assert data.sizes == {"train": 30, "validation": 10, "test": 10}
    x, y = _collect(data.test)
    np.testing.assert_array_equal(x.reshape(len(x), -1).max(axis=1) > 0, y == 1)


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
