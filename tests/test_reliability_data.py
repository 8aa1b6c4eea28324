"""Issue 15, items 6-8: bad data and bad arguments give one clear error (or a stated fix), never
silently damaged images, labels or tracebacks."""

import gzip
import struct
import warnings

import numpy as np
import pytest

import recipes
from recipes.cli import main
from recipes.validation import check_model_input


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _load(x, y, **kwargs):
    return recipes.load_data((x, y), validation_split=0.0, test_split=0.0, batch_size=1000,
                             **kwargs)


@pytest.fixture(scope="module")
def floats():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (30, 4, 4)).astype("float32"), np.arange(30) % 3


# ------------------------------------------------------------------------- arrays: pixels


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_pixel_is_an_error_not_a_rescaled_dataset(floats, bad):
    x, y = floats
    x = x.copy()
    x[3, 1, 1] = bad
    with pytest.raises(ValueError, match="non-finite pixel values; Received: .*shape \\(30, 4, 4, 1\\)"):
        _load(x, y)


@pytest.mark.parametrize(("shift", "dtype"), [(-128, "float32"), (-128, "int16"), (200, "float32")])
def test_out_of_range_pixels_are_an_error_with_the_range_found(floats, shift, dtype):
    x, y = floats
    shifted = (x + shift).astype(dtype)
    low, high = shifted.min(), shifted.max()
    with pytest.raises(ValueError, match=r"\[0, 1\] or \[0, 255\]; Received: values in") as err:
        _load(shifted, y)
    assert f"[{low:g}, {high:g}]" in str(err.value)


def test_the_0_1_and_0_255_scales_are_told_apart_by_the_whole_range(floats):
    x, y = floats
    as_255, _ = _collect(_load(x, y).train)
    as_01, _ = _collect(_load(x / 255.0, y).train)
    np.testing.assert_array_equal(np.sort(as_255.ravel()), np.sort(np.round(x).astype(np.uint8).ravel()))
    assert np.abs(as_01.astype(int) - as_255.astype(int)).max() <= 1  # same images either way


def test_16_bit_arrays_are_scaled_not_clipped(floats):
    x, y = floats
    x16 = np.round(x / 255.0 * 65535).astype(np.uint16)
    images, _ = _collect(_load(x16, y).train)
    assert images.max() > 200 and len(np.unique(images)) > 100  # neither binarized nor clipped
    np.testing.assert_array_equal(np.sort(images.ravel()),
                                  np.sort(np.round(x16 * (255 / 65535)).astype(np.uint8).ravel()))


# ------------------------------------------------------------------------- arrays: labels


def test_non_contiguous_labels_are_remapped_with_their_values_as_names(floats):
    x, y = floats
    with pytest.warns(UserWarning, match=r"labels are not 0\.\.2; remapped the 3 distinct values "
                                         r"\(0, 1000, 2000\)"):
        data = _load(x, y * 1000)
    assert data.num_classes == 3 and data.class_names == ["0", "1000", "2000"]
    _, labels = _collect(data.train)
    assert sorted(np.unique(labels)) == [0, 1, 2]
    assert data.class_counts == [10, 10, 10]


def test_contiguous_labels_keep_their_values_without_a_warning(floats):
    x, y = floats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _load(x, y).class_names == ["0", "1", "2"]


def test_a_single_class_message_names_that_one_class(floats):
    x, _ = floats
    with pytest.raises(ValueError, match=r"at least 2 classes; Received: 1 class \(\['3'\]\)"):
        _load(x, np.full(len(x), 3))


# ------------------------------------------------------------------------- IDX files


def _write_idx(path, array, compress=True):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "raw"])
def test_a_truncated_idx_file_is_named(tmp_path, compress):
    suffix = ".gz" if compress else ""
    images = tmp_path / f"train-images-idx3-ubyte{suffix}"
    _write_idx(images, np.random.default_rng(0).integers(0, 256, (40, 6, 6)), compress)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.arange(40) % 2, compress)
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated") as err:
        recipes.load_data(f"idx:{tmp_path}")
    assert str(images) in str(err.value)


def test_non_contiguous_idx_labels_are_remapped_across_train_and_test(tmp_path):
    rng = np.random.default_rng(2)
    for prefix, n in (("train", 30), ("t10k", 6)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 4)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", 2 * (1 + np.arange(n) % 3))
    with pytest.warns(UserWarning, match="remapped"):
        data = recipes.load_data(f"idx:{tmp_path}", validation_split=0.0)
    assert data.class_names == ["2", "4", "6"]
    np.testing.assert_array_equal(_collect(data.test)[1], np.arange(6) % 3)


# ------------------------------------------------------------------------- image folders


def _png(path, array, mode=None):
    from PIL import Image

    Image.fromarray(array, mode).save(path)


def test_16_bit_pngs_are_scaled_and_rgba_is_composited_on_white(tmp_path):
    (tmp_path / "deep").mkdir()
    (tmp_path / "clear").mkdir()
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 10  # what hides under the transparent pixels
    rgba[0, 0] = (200, 100, 50, 255)  # opaque
    rgba[0, 1] = (0, 0, 0, 128)  # half transparent black
    for i in range(2):
        _png(tmp_path / "deep" / f"{i}.png", np.full((4, 4), 40000, np.uint16))
        _png(tmp_path / "clear" / f"{i}.png", rgba, "RGBA")
    gray_alpha = np.stack([np.full((4, 4), 128, np.uint8), np.full((4, 4), 40, np.uint8)], -1)
    _png(tmp_path / "deep" / "la.png", gray_alpha, "LA")  # gray + alpha, composited too
    data = recipes.load_data(str(tmp_path), validation_split=0.0, test_split=0.0)
    x, y = _collect(data.train)
    deep = x[y == data.class_names.index("deep")]
    values = {int(image.min()) for image in deep}
    assert values == {round(40000 * 255 / 65535), round(128 * 40 / 255 + 255 * (1 - 40 / 255))}
    assert all(image.min() == image.max() for image in deep)
    clear = x[y == data.class_names.index("clear")][0]
    assert clear[0, 0].tolist() == [200, 100, 50]
    assert clear[0, 1].tolist() == [round(255 * (1 - 128 / 255))] * 3
    assert clear[1, 1].tolist() == [255, 255, 255]  # transparent: the stated background


def test_a_class_folder_of_only_corrupt_files_is_named(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            _png(tmp_path / name / f"{i}.png", np.full((4, 4, 3), 9, np.uint8))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped-file warning; the error is the point
        with pytest.raises(ValueError, match="Every class folder needs images") as err:
            recipes.load_data(str(tmp_path))
    assert str(tmp_path / "broken") in str(err.value)


# ------------------------------------------------------------------------- model vs data


def test_gray_data_into_a_3_channel_model_says_how_to_build_it():
    import keras

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))
    with pytest.raises(ValueError, match=r"build the model with input_shape=data.input_shape"):
        check_model_input(model, (8, 8, 1))
    check_model_input(model, (28, 28, 3))  # any size, three channels: fine


def test_find_lr_checks_a_built_models_input_before_training(digits_small):
    model = recipes.build_classifier("mobilenet", 10, image_size=32, alpha=0.25,
                                     input_shape=(None, None, 3))
    data = recipes.load_data(digits_small, batch_size=32)
    with pytest.raises(ValueError, match=r"takes images of shape \(None, None, 3\) but the "
                                         r"data's images are \(8, 8, 1\)"):
        recipes.find_lr(model, data, steps=3)
    assert not model.compiled  # refused before anything was compiled or run


# ------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(("args", "message"), [
    (["--image-size", "10000"], "image_size must be at most 1024 for mobilenet_v3_small"),
    (["--lr", "inf"], r"learning_rate=inf \(flag --learning-rate/--lr\)"),
    (["--seed", "-1"], r"seed must be an int in \[0, 4294967296\); Received: seed=-1"),
])
def test_bad_flags_name_the_flag(args, message, capsys, tmp_path):
    assert main(["train", *args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recipes train: error: ") and len(err.strip().splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("text", "message"), [
    ('{"epochs": 2,', "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"epochs": 0}', r"epochs=0 \(in the recipe file"),
])
def test_bad_recipe_files_are_named(text, message, capsys, tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text(text)
    assert main(["train", "--recipe", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err) and str(path) in err, err


def test_image_size_bound_follows_the_backbone():
    assert recipes.Recipe(backbone="efficientnet_b7", image_size=1200).image_size == 1200
    with pytest.raises(ValueError, match="at most 1200 for efficientnet_b7"):
        recipes.Recipe(backbone="efficientnet_b7", image_size=1201)
    with pytest.raises(ValueError, match="at most 1024 for mobilenet"):
        recipes.build_classifier("mobilenet", 3, image_size=(32, 5000))


def test_load_data_blames_a_bad_seed_not_the_splits():
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 4294967296\); Received: seed=-1"):
        recipes.load_data("digits", seed=-1)
