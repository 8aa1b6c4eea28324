"""Image folders streamed through tf.data: formats, bad files, split folders, crops, caching, memory."""

import io
import json
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

import recipes
from recipes.data import folders
from recipes.data.images import jpeg_ratio


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _solid(color, size=(14, 10)):
    """An RGB image of `color` with width, height = `size`."""
    return Image.new("RGB", size, color)


def _two_classes(root, n=6, size=(12, 10), fmt="png"):
    for name, color in (("cat", (250, 10, 10)), ("dog", (10, 10, 250))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            _solid(color, size).save(root / name / f"{i}.{fmt}")


def _load(root, **kwargs):
    kwargs.setdefault("validation_split", 0.0)
    kwargs.setdefault("test_split", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return recipes.load_data(str(root), **kwargs)


def test_mixed_formats_and_sizes_become_one_size_3_channel_uint8(tmp_path):
    red, gray = tmp_path / "red", tmp_path / "gray"
    red.mkdir()
    gray.mkdir()
    color = (230, 20, 20)
    _solid(color, (20, 12)).save(red / "a.png")
    _solid(color, (31, 17)).save(red / "b.jpg", quality=95)
    _solid(color, (9, 9)).save(red / "c.bmp")
    _solid(color, (16, 24)).save(red / "d.gif")
    _solid(color, (12, 12)).convert("RGBA").save(red / "e.png")
    _solid(color, (13, 11)).convert("P").save(red / "f.png")
    _solid(color, (10, 10)).save(red / "g.webp", lossless=True)
    frames = [_solid(color, (8, 8)), _solid((0, 255, 0), (8, 8))]
    frames[0].save(red / "h.gif", save_all=True, append_images=frames[1:])  # first frame used
    _solid(color, (10, 10)).save(red / "i.JPEG")  # upper-case suffix
    Image.new("L", (15, 10), 128).save(gray / "a.png")
    Image.new("L", (10, 15), 128).save(gray / "b.jpg", quality=95)
    Image.new("L", (11, 11), 128).save(gray / "c.bmp")
    Image.new("LA", (12, 12), (128, 255)).save(gray / "d.png")  # opaque (see the alpha test)
    Image.fromarray(np.full((9, 14), 128 * 257, np.uint16)).save(gray / "e.png")  # 16-bit
    assert Image.open(gray / "e.png").mode.startswith("I")
    data = _load(tmp_path, image_size=16)
    assert data.skipped == [] and data.class_names == ["gray", "red"]
    assert data.input_shape == (16, 16, 3) and data.sizes["train"] == 14
    x, y = _collect(data.train)
    assert x.dtype == np.uint8 and x.shape == (14, 16, 16, 3)
    np.testing.assert_allclose(x[y == 1].mean(axis=(1, 2)), np.tile(color, (9, 1)), atol=8)
    np.testing.assert_allclose(x[y == 0].astype(float), 128, atol=3)


def test_an_all_grayscale_folder_stays_1_channel_and_16_bit_is_scaled(tmp_path):
    for name, level in (("dark", 50), ("light", 200)):
        (tmp_path / name).mkdir()
        Image.new("L", (8, 8), level).save(tmp_path / name / "a.png")
        Image.new("L", (8, 8), level).save(tmp_path / name / "b.bmp")
        Image.fromarray(np.full((8, 8), level * 257, np.uint16)).save(tmp_path / name / "c.png")
    data = _load(tmp_path)
    assert data.input_shape == (8, 8, 1)
    x, y = _collect(data.train)
    np.testing.assert_array_equal(x.reshape(len(x), -1).max(axis=1), np.where(y == 0, 50, 200))


def test_every_bad_file_kind_is_skipped_counted_and_named(tmp_path):
    _two_classes(tmp_path, n=4)
    buf = io.BytesIO()
    _solid((250, 10, 10), (40, 30)).save(buf, "JPEG")
    good_jpeg = buf.getvalue()
    png = (tmp_path / "cat" / "0.png").read_bytes()
    bad = {
        "cat/corrupt.png": png[:60] + np.random.default_rng(0).bytes(400),
        "cat/truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "dog/zero.png": b"",
        "dog/text.gif": b"GIF? no, just some text",
        "dog/jpeg_named.txt": good_jpeg,  # not an image file type: listed, not decoded
    }
    for rel, raw in bad.items():
        (tmp_path / rel).write_bytes(raw)
    (tmp_path / "dog" / "png_named.jpg").write_bytes(png)  # content sniffing: a good image
    (tmp_path / "dog" / ".DS_Store").write_bytes(b"hidden files are ignored")
    with pytest.warns(UserWarning, match=r"Skipped 5 unreadable file\(s\).*empty file"):
        data = recipes.load_data(str(tmp_path), validation_split=0.0, test_split=0.0)
    assert sorted(data.skipped) == sorted(str(tmp_path / rel) for rel in bad)
    assert data.class_counts == [4, 5] and data.sizes["train"] == 9
    assert len(_collect(data.train)[1]) == 9


def test_verify_pass_is_remembered_in_a_manifest(tmp_path, monkeypatch):
    _two_classes(tmp_path, n=3)
    (tmp_path / "cat" / "broken.png").write_bytes(b"broken")
    first = _load(tmp_path)
    manifest = json.loads((tmp_path / folders.MANIFEST_NAME).read_text())
    assert len(manifest["files"]) == 7 and manifest["files"]["cat/broken.png"][4] == 0
    calls = []
    real = folders._measure
    monkeypatch.setattr(folders, "_measure",
                        lambda root, files: calls.append([f.rel for f in files]) or real(root, files))
    again = _load(tmp_path)
    assert calls == [] and again.skipped == first.skipped  # nothing read up front
    _solid((0, 0, 0), (5, 5)).save(tmp_path / "cat" / "1.png")  # changed file: checked again
    _load(tmp_path)
    assert calls[-1] == ["cat/1.png"]


def _header_cases():
    """(name, encoded bytes) of the JPEG and PNG kinds a photo folder holds."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8))
    cases = []

    def add(name, image, fmt, **kw):
        buf = io.BytesIO()
        image.save(buf, fmt, **kw)
        cases.append((name, buf.getvalue()))

    add("rgb.jpg", rgb, "JPEG")
    add("gray.jpg", rgb.convert("L"), "JPEG")
    add("cmyk.jpg", rgb.convert("CMYK"), "JPEG")
    add("progressive.jpg", rgb, "JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x010E] = "x" * 20_000  # a large APP1 block before the frame header
    add("exif.jpg", rgb, "JPEG", exif=exif.tobytes())
    for mode in ("L", "LA", "RGB", "RGBA", "P", "I;16"):
        add(f"{mode.replace(';', '')}.png", rgb.convert(mode) if mode != "I;16" else
            Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257), "PNG")
    add("p_transparent.png", rgb.convert("P"), "PNG", transparency=0)
    add("L_transparent.png", rgb.convert("L"), "PNG", transparency=5)
    add("RGB_transparent.png", rgb, "PNG", transparency=(1, 2, 3))
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "tRNS IDAT" * 1000)  # chunk names inside a text chunk
    add("p_text.png", rgb.convert("P"), "PNG", pnginfo=text)
    return cases


def _bogus_huffman_table(jpeg):
    """Code counts that add up to more than 256 symbols: libjpeg refuses the file."""
    dht = jpeg.index(b"\xff\xc4")
    return jpeg[:dht + 5] + b"\xff" * 16 + jpeg[dht + 21:]


def _without_dqt(jpeg):
    """The quantization tables removed: libjpeg refuses the frame that uses them."""
    while (k := jpeg.find(b"\xff\xdb")) != -1:
        jpeg = jpeg[:k] + jpeg[k + 2 + struct.unpack(">H", jpeg[k + 2:k + 4])[0]:]
    return jpeg


def _frame_precision(jpeg, bits):
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[:sof + 4] + bytes([bits]) + jpeg[sof + 5:]


def test_header_probe_agrees_with_decoding_and_leaves_damage_to_it(tmp_path):
    from recipes.data.headers import read_header

    cases = _header_cases()
    for name, raw in cases:
        (tmp_path / name).write_bytes(raw)
    rels = [name for name, _ in cases]
    decoded = folders._verify(tmp_path, rels)  # TensorFlow decodes every file: the reference
    for name, raw in cases:
        assert read_header(str(tmp_path / name), len(raw)) == decoded[name], name
    jpeg, png = dict(cases)["rgb.jpg"], dict(cases)["RGB.png"]
    damaged = {"truncated.jpg": jpeg[: len(jpeg) // 2], "appended.jpg": jpeg + b"trailer",
               "truncated.png": png[:-20], "no_frame.jpg": jpeg[:2] + b"\xff\xda" + jpeg[4:],
               "tiny.jpg": jpeg[:20], "bad_tables.jpg": _bogus_huffman_table(jpeg),
               "12_bit.jpg": _frame_precision(jpeg, 12),
               "second_soi.jpg": jpeg[:2] + b"\xff\xd8" + jpeg[2:],
               "flipped_byte.png": png[:60] + bytes([png[60] ^ 1]) + png[61:]}
    for name, raw in damaged.items():
        (tmp_path / name).write_bytes(raw)
        assert read_header(str(tmp_path / name), len(raw)) is None, name
    no_tables = _without_dqt(jpeg)  # (TensorFlow's 1/8-scale probe decodes this one)
    (tmp_path / "no_tables.jpg").write_bytes(no_tables)
    assert read_header(str(tmp_path / "no_tables.jpg"), len(no_tables)) is None
    # What the header cannot vouch for is decoded: the truncated files are skipped, the
    # image with bytes appended after it is kept.
    readable, skipped = folders._probe_all(tmp_path, [
        folders._File(name, 0, None, len(raw), 0) for name, raw in damaged.items()])
    assert set(readable) == {"appended.jpg"}
    assert {rel for rel, _ in skipped} == set(damaged) - {"appended.jpg"}


def test_manifest_goes_to_the_keras_home_when_the_folder_is_read_only(tmp_path, monkeypatch,
                                                                     keras_home):
    real_access = os.access
    monkeypatch.setattr(folders.os, "access",
                        lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    where = folders.manifest_path(tmp_path)
    assert str(where).startswith(str(keras_home)) and where.suffix == ".json"


def test_split_folders_are_used_as_given(tmp_path):
    counts = {"train": 6, "val": 2, "test": 3}
    for part, n in counts.items():
        _two_classes(tmp_path / part, n=n)
    data = _load(tmp_path, validation_split=0.3, test_split=0.3)  # given splits win
    assert data.sizes == {"train": 12, "validation": 4, "test": 6}
    assert data.class_names == ["cat", "dog"] and data.class_counts == [6, 6]
    _, y = _collect(data.test)
    assert np.bincount(y).tolist() == [3, 3]


def test_a_missing_validation_folder_is_carved_from_train(tmp_path):
    _two_classes(tmp_path / "train", n=10)
    _two_classes(tmp_path / "test", n=2)
    data = _load(tmp_path, validation_split=0.2, test_split=0.5)
    assert data.sizes == {"train": 16, "validation": 4, "test": 4}


@pytest.mark.parametrize(
    "crop,expected_rows",
    [
        (None, ["red", "green", "blue"]),  # stretched: all three bands survive
        ("center", ["green", "green", "green"]),  # the centred square is the green band
        ("pad", ["black", "green", "black"]),  # letterboxed: black bars above and below
    ],
)
def test_crop_modes(tmp_path, crop, expected_rows):
    image = np.zeros((20, 60, 3), np.uint8)  # wide: red | green | blue bands of 20 px
    image[:, :20, 0] = image[:, 20:40, 1] = image[:, 40:, 2] = 255
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(image).save(tmp_path / name / "x.png")
    data = _load(tmp_path, image_size=30, crop=crop)
    x = _collect(data.train)[0][0].astype(int)
    names = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "black": (0, 0, 0)}
    if crop == "pad":  # probe the middle column top, centre, bottom
        probes = [x[2, 15], x[15, 15], x[27, 15]]
    else:  # probe the middle row left, centre, right
        probes = [x[15, 3], x[15, 15], x[15, 26]]
    for got, want in zip(probes, expected_rows):
        np.testing.assert_allclose(got, names[want], atol=10)


def test_splits_and_train_order_are_deterministic_for_a_seed(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(20):  # every image different: its gray level identifies it
            Image.new("L", (6, 6), i * 10 + (name == "b") * 5).save(tmp_path / name / f"{i}.png")

    def order(data, seed):
        return _collect(data.train_pipeline(seed))[0][:, 0, 0, 0]

    one = _load(tmp_path, validation_split=0.2, test_split=0.2, seed=1, batch_size=5)
    two = _load(tmp_path, validation_split=0.2, test_split=0.2, seed=1, batch_size=5)
    other = _load(tmp_path, validation_split=0.2, test_split=0.2, seed=2, batch_size=5)
    np.testing.assert_array_equal(_collect(one.test)[0], _collect(two.test)[0])
    assert not np.array_equal(_collect(one.test)[0], _collect(other.test)[0])
    np.testing.assert_array_equal(order(one, 7), order(two, 7))
    assert not np.array_equal(order(one, 7), order(one, 8))
    assert sorted(order(one, 7)) == sorted(order(one, 8))
    assert np.bincount(_collect(one.test)[1]).tolist() == [4, 4]  # stratified


def test_class_counts_and_balanced_weights(tmp_path):
    for name, n in (("few", 3), ("many", 9)):
        (tmp_path / name).mkdir()
        for i in range(n):
            _solid((i, i, i), (6, 6)).save(tmp_path / name / f"{i}.png")
    data = _load(tmp_path)
    assert data.class_counts == [3, 9]
    weights = data.class_weights()
    assert weights[0] == pytest.approx(2.0) and weights[1] == pytest.approx(12 / 18)


def test_default_size_is_the_most_common_never_the_first(tmp_path):
    _two_classes(tmp_path, n=4, size=(20, 10))
    _solid((1, 2, 3), (7, 5)).save(tmp_path / "cat" / "00_first.png")  # sorts first
    data = _load(tmp_path)
    assert data.input_shape == (10, 20, 3)
    assert folders._default_size([(3000, 4000)] * 2 + [(10, 10)]) == (384, 512)  # capped


def test_cache_choices_are_recorded(tmp_path, monkeypatch):
    _two_classes(tmp_path, n=4)
    assert _load(tmp_path).cache == "memory"  # tiny: auto keeps it in memory
    assert _load(tmp_path, cache=None).cache == "none"
    monkeypatch.setattr(folders, "AUTO_CACHE_BYTES", 100)
    assert _load(tmp_path).cache == "none"
    prefix = str(tmp_path / "cache" / "imgs")
    data = _load(tmp_path, cache=prefix)
    assert data.cache == prefix
    first = _collect(data.train)
    assert any(p.name.startswith("imgs_train") for p in (tmp_path / "cache").iterdir())
    np.testing.assert_array_equal(np.sort(_collect(data.train)[1]), np.sort(first[1]))


def test_large_jpegs_decode_at_a_reduced_scale_close_to_full_decoding(tmp_path):
    np.testing.assert_array_equal(jpeg_ratio([256, 256, 100, 64], [256, 128, 100, 600], (32, 32)),
                                  [8, 4, 2, 2])
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((32, 32, 1))).astype(np.uint8)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(smooth).save(tmp_path / name / "x.jpg", quality=95)
        Image.fromarray(smooth).save(tmp_path / name / "x.png")
    x, _ = _collect(_load(tmp_path, image_size=32, cache=None).train)
    assert x.shape == (4, 32, 32, 3)
    # the 1/8-scale JPEG and the full-size PNG give the same 32 px image, within JPEG error
    assert np.abs(x[0].astype(int) - x[1].astype(int)).mean() < 6


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_growth(ds, warmup=3):
    import ctypes
    import gc

    it = iter(ds)
    for _ in range(warmup):
        next(it)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages would hide growth when reused
    base = peak = _rss()
    for _ in it:
        peak = max(peak, _rss())
    return peak - base


def test_the_pipeline_streams_instead_of_holding_the_folder(tmp_path):
    """600 held-out images of 160 px (46 MB decoded): after start-up, streaming them grows RSS by
    a small fraction of that, while the in-memory cache (the control: it proves the measure sees
    images) holds them all. Validation pipelines have no shuffle buffer, so both measures match."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(400):
            tile = rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)
            Image.fromarray(np.kron(tile, np.ones((40, 40, 1), np.uint8))).save(
                tmp_path / name / f"{i}.jpg", quality=80)
    kwargs = dict(image_size=160, batch_size=8, validation_split=0.75, test_split=0.0)
    streamed = _load(tmp_path, cache=None, **kwargs)
    assert streamed.cache == "none" and streamed.sizes["validation"] == 600
    decoded = 600 * 160 * 160 * 3
    growth = _peak_growth(streamed.validation)
    held = _peak_growth(_load(tmp_path, cache="memory", **kwargs).validation)
    assert held > 0.6 * decoded, (held, decoded)
    assert growth < 0.25 * decoded, (growth, decoded)


def _raising_scandir(blocked):
    real = os.scandir

    def scandir(path="."):
        if str(path) == str(blocked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    return scandir


def test_bad_folders_fail_before_any_work(tmp_path, monkeypatch):
    def fails(match, root=tmp_path, **kwargs):
        with pytest.raises(ValueError, match=match):
            recipes.load_data(str(root), **kwargs)

    fails("No images")  # empty folder
    (tmp_path / "only").mkdir()
    _solid((1, 2, 3)).save(tmp_path / "only" / "0.png")
    fails(r"at least 2 classes; Received: 1 class \(\['only'\]\)")
    (tmp_path / "empty").mkdir()
    fails(r"Every class folder needs images; Received: no image files in .*empty")
    for name in ("empty", "only"):
        for p in (tmp_path / name).iterdir():
            p.unlink()
        (tmp_path / name / "bad.png").write_bytes(b"nope")
        (tmp_path / name / "zero.jpg").write_bytes(b"")
    fails(r"All 4 files in .* are unreadable as images; Received: e\.g\. empty/bad\.png")
    _solid((1, 2, 3)).save(tmp_path / "only" / "1.png")
    fails(r"needs images; Received: no readable images in .*empty")
    _two_classes(tmp_path / "split" / "train", n=2)
    _two_classes(tmp_path / "split" / "val", n=2)
    for p in (tmp_path / "split" / "val" / "dog").iterdir():
        p.unlink()
    (tmp_path / "split" / "val" / "dog").rmdir()
    fails(r"same class folders; Received: .*val has no \['dog'\] \(found in train/\)",
          root=tmp_path / "split")
    (tmp_path / "split" / "validation").mkdir()
    fails("one validation folder, not both", root=tmp_path / "split")
    monkeypatch.setattr(os, "scandir", _raising_scandir(tmp_path / "only"))
    fails(r"Cannot read the image folder .*only: Permission denied")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(crop="centre"), r"Unknown crop; Received: crop='centre'. Did you mean: center"),
        (dict(cache="memroy"), r"Unknown cache; Received: cache='memroy'. Did you mean: memory"),
    ],
)
def test_bad_crop_or_cache(tmp_path, kwargs, message):
    _two_classes(tmp_path, n=2)
    with pytest.raises(ValueError, match=message):
        recipes.load_data(str(tmp_path), **kwargs)


def test_a_file_that_fails_only_while_training_is_dropped_not_a_crash(tmp_path):
    import keras

    from recipes.config import Recipe

    _two_classes(tmp_path, n=32, size=(8, 8))
    png = (tmp_path / "cat" / "0.png").read_bytes()
    # damaged compressed pixels under a recomputed CRC: only decoding finds it
    start = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[start:start + 4])
    data = bytes(b ^ 0xFF for b in png[start + 8:start + 8 + length])
    chunk = png[start:start + 8] + data + struct.pack(">I", zlib.crc32(b"IDAT" + data))
    (tmp_path / "cat" / "0.png").write_bytes(png[:start] + chunk + png[start + 12 + length:])
    data = _load(tmp_path, image_size=8)
    assert data.skipped == [] and data.sizes["train"] == 64  # the header check let it through
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    # 63 decodable images make 1 whole batch of 32, not the 2 the listing promised
    result = recipes.train(model, data, recipe=Recipe.preset("fast", epochs=2, batch_size=32),
                           verbose=0)
    assert len(result.history["loss"]) == 2
