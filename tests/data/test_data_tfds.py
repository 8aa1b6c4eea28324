"""tensorflow-datasets sources: streamed splits (own or carved), mocked data, clear errors."""

import warnings

import numpy as np
import pytest

import recipes
from recipes.data import tfds as tfds_source


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture
def mock_mnist():
    import tensorflow_datasets as tfds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tfds.testing.mock_data(num_examples=40):
            yield


def _builder_class(splits, shape=(6, 6, 1)):
    """A real tfds builder (registered as `tiny_<splits>`) whose labels show in its pixels."""
    import tensorflow_datasets as tfds

    sizes = dict(splits)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=shape),
                "label": tfds.features.ClassLabel(names=["dark", "light"]),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {name: self._generate_examples(n, name) for name, n in sizes.items()}

    def _generate_examples(self, n, name):
        for i in range(n):
            label = i % 2
            h, w = (5 + i % 3, 7) if shape[0] is None else shape[:2]
            image = np.full((h, w, shape[-1]), 200 * label + i % 50, np.uint8)  # label and index
            yield f"{name}-{i}", {"image": image, "label": label}

    # The class name is the registered tfds name (snake_cased), so one per layout.
    class_name = "Tiny" + "".join(s.capitalize() for s in sizes) + ("Var" if shape[0] is None else "")
    return type(class_name, (tfds.core.GeneratorBasedBuilder,), {
        "VERSION": tfds.core.Version("1.0.0"), "_info": _info,
        "_split_generators": _split_generators, "_generate_examples": _generate_examples,
    })


def _prepare(builder_cls, data_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder_cls(data_dir=str(data_dir)).download_and_prepare()
    return builder_cls.name


def test_mocked_mnist_streams_and_is_deterministic(mock_mnist, monkeypatch):
    """Under `tfds.testing.mock_data` (no metadata: only `train` is known), validation and test
    are carved from train; nothing goes through numpy or `from_tensor_slices` with images."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    sliced = []
    real = tf.data.Dataset.from_tensor_slices
    monkeypatch.setattr(tf.data.Dataset, "from_tensor_slices", staticmethod(
        lambda t, name=None: sliced.append(np.shape(t)) or real(t, name)))
    monkeypatch.setattr(tfds, "as_numpy", lambda *a, **k: pytest.fail("split read into numpy"))
    data = recipes.load_data("tfds:mnist", batch_size=8, validation_split=0.1, test_split=0.1)
    assert data.sizes == {"train": 32, "validation": 4, "test": 4}
    assert data.input_shape == (28, 28, 1) and data.class_names == [str(i) for i in range(10)]
    assert sum(data.class_counts) == 40 and len(data.class_counts) == 10  # the mock ignores slices
    assert data.cache == "memory" and data.source == "tfds:mnist"
    x, y = next(iter(data.train))
    assert tuple(x.shape) == (8, 28, 28, 1) and x.dtype == tf.uint8 and y.dtype == tf.int32
    first, again = (_collect(data.train_pipeline(1))[1] for _ in range(2))
    np.testing.assert_array_equal(first, again)  # a fresh pipeline: same seed, same order
    assert not np.array_equal(first, _collect(data.train_pipeline(2))[1])
    np.testing.assert_array_equal(np.sort(first), np.sort(_collect(data.test)[1]))  # mock: same 40
    assert not any(len(shape) >= 3 for shape in sliced), sliced


def test_mocked_variable_size_images_resized_and_cropped(mock_mnist):
    data = recipes.load_data("tfds:tf_flowers", batch_size=4, image_size=16, crop="center",
                             cache=None)
    assert data.input_shape == (16, 16, 3) and data.cache == "none" and data.num_classes == 5
    x, _ = next(iter(data.train))
    assert tuple(x.shape) == (4, 16, 16, 3) and x.dtype.name == "uint8"
    default = recipes.load_data("tfds:tf_flowers", batch_size=2, crop="pad")
    assert default.input_shape == (tfds_source.DEFAULT_IMAGE_SIZE,) * 2 + (3,)


def test_own_test_split_kept_validation_carved_by_slicing(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    name = _prepare(_builder_class({"train": 40, "test": 10}), tmp_path)
    opened = []
    real = tfds.core.DatasetBuilder.as_dataset
    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset",
                        lambda self, split, **kw: opened.append(split) or real(self, split=split, **kw))
    data = recipes.load_data(f"tfds:{name}", data_dir=str(tmp_path), validation_split=0.25)
    assert data.class_names == ["dark", "light"] and data.class_counts == [15, 15]
    assert data.sizes == {"train": 30, "validation": 10, "test": 10}
    assert set(opened) == {"train[:30]", "train[30:40]", "test"}
    x, y = _collect(data.test)
    np.testing.assert_array_equal(x.reshape(len(x), -1).max(axis=1) >= 200, y == 1)
    _, y_val = _collect(data.validation)
    _, y_train = _collect(data.train)
    assert len(y_val) == 10 and len(y_train) == 30


def test_train_only_dataset_carves_validation_and_test(tmp_path):
    name = _prepare(_builder_class({"train": 50}, shape=(None, None, 3)), tmp_path)
    data = recipes.load_data(f"tfds:{name}", data_dir=str(tmp_path), image_size=8, batch_size=64,
                             validation_split=0.2, test_split=0.1)
    assert data.sizes == {"train": 35, "validation": 10, "test": 5}
    assert data.input_shape == (8, 8, 3)
    counts = [len(_collect(ds)[1]) for ds in (data.train, data.validation, data.test)]
    assert counts == [35, 10, 5]
    # the carved slices are disjoint and deterministic: the same images every load
    again = recipes.load_data(f"tfds:{name}", data_dir=str(tmp_path), image_size=8,
                              validation_split=0.2, test_split=0.1)
    np.testing.assert_array_equal(_collect(data.test)[0], _collect(again.test)[0])
    # streamed (no cache): files and buffer shuffled by the seed alone
    streamed = recipes.load_data(f"tfds:{name}", data_dir=str(tmp_path), image_size=8,
                                 batch_size=64, cache=None)
    assert streamed.cache == "none"
    a, b, c = (_collect(streamed.train_pipeline(seed))[0][:, 0, 0, 0] for seed in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and sorted(a) == sorted(c)


def test_plan_splits():
    plan = tfds_source.plan_splits
    assert plan({"train": 100, "test": 20}, 0.1, 0.3) == {
        "train": ("train[:90]", 90), "validation": ("train[90:100]", 10), "test": ("test", 20)}
    assert plan({"train": 100, "validation": 5, "test": 7}, 0.1, 0.1) == {
        "train": ("train", 100), "validation": ("validation", 5), "test": ("test", 7)}
    assert plan({"train": 100}, 0.0, 0.0)["validation"] == (None, 0)
    assert plan({"train": 10}, 0.1, 0.1) == {
        "train": ("train[:8]", 8), "validation": ("train[8:9]", 1), "test": ("train[9:10]", 1)}
    with pytest.raises(ValueError, match="non-empty 'train' split; Received: splits"):
        plan({"test": 10})


def test_unknown_name_lists_closest_matches():
    with pytest.raises(ValueError, match=r"Unknown tensorflow-datasets dataset; Received: "
                                         r"tfds='mnistt'\. Did you mean: mnist"):
        recipes.load_data("tfds:mnistt")


def test_not_prepared_says_how_to_prepare(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)'mnist' is not prepared in .*download_and_prepare"
                                         r".*--data-dir"):
        recipes.load_data("tfds:mnist", data_dir=str(tmp_path))


def test_bad_crop_and_cache_before_any_read(mock_mnist):
    with pytest.raises(ValueError, match="Unknown crop"):
        recipes.load_data("tfds:mnist", crop="centre")
    with pytest.raises(ValueError, match="Unknown cache"):
        recipes.load_data("tfds:mnist", cache="memroy")
