"""Several workers on an image folder: each decodes only its share, the global batches unchanged.

No JAX processes: `Cluster.shard_train` is plain tf.data, so each worker's pipeline is built here
side by side and compared with the single-machine pipeline of the same seed.
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from recipes import distribute
from recipes.data import core, folders

CLASSES, PER_CLASS, BATCH, SEED = 3, 11, 6, 7
N_IMAGES = CLASSES * PER_CLASS  # 33: 5 whole batches of 6, a partial one of 3 (dropped)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 11 uniform 8x8 gray PNGs; image j has every pixel 5 + 7 * j (its identity)."""
    root = tmp_path_factory.mktemp("shard_folder")
    for j in range(N_IMAGES):
        label, k = divmod(j, PER_CLASS)
        (root / f"c{label}").mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8), 5 + 7 * j, np.uint8)).save(root / f"c{label}" / f"{k}.png")
    return root


@pytest.fixture
def decoded(monkeypatch):
    """The identities of the images the pipelines decode, one entry per decode."""
    seen = []
    real = folders.decode_image

    def counting(raw, channels, ratio=None):
        image = real(raw, channels, ratio)

        def note(img):
            seen.append(_identity(img.numpy()))
            return img

        out = tf.py_function(note, [image], tf.uint8)
        out.set_shape(image.shape)
        return out

    monkeypatch.setattr(folders, "decode_image", counting)
    return seen


def _identity(image):
    return (int(image.reshape(-1)[0]) - 5) // 7


def _epochs(ds, epochs=2):
    """`[[image identities of each batch] per epoch]`, iterating the one dataset `epochs` times
    (as `fit` does: every pass reshuffles)."""
    return [[[_identity(x) for x in images.numpy()] for images, _ in ds] for _ in range(epochs)]


def _load(folder, cache):
    return folders.from_folder(folder, image_size=8, batch_size=BATCH, validation_split=0,
                               test_split=0, seed=0, cache=cache)


@pytest.mark.parametrize("cache", [None, "memory"])
@pytest.mark.parametrize("workers", [2, 3])
def test_worker_shares_interleave_to_the_single_machine_batches(folder, decoded, workers, cache):
    data = _load(folder, cache)
    assert data.sizes["train"] == N_IMAGES and data.cache == (cache or "none")
    single = [[b for b in epoch if len(b) == BATCH] for epoch in _epochs(data.train_pipeline(SEED))]
    steps = N_IMAGES // BATCH
    assert [len(e) for e in single] == [steps, steps] and single[0] != single[1]  # reshuffled
    addresses = tuple(f"h{i}:1" for i in range(workers))
    for index in range(workers):
        del decoded[:]
        share = distribute.Cluster(addresses, index).shard_train(
            data.train_pipeline(SEED), BATCH, data.sizes["train"])
        assert int(share.cardinality()) == steps  # assert_cardinality, as before
        got = _epochs(share)
        part = BATCH // workers
        expected = [[b[index * part:(index + 1) * part] for b in epoch] for epoch in single]
        assert got == expected  # the index-th slice of every whole global batch, both epochs
        mine = [x for epoch in got for b in epoch for x in b]
        if cache is None:  # decoded every epoch, but only this worker's images
            assert sorted(decoded) == sorted(mine) and len(decoded) == 2 * steps * part
        else:  # decoded once (all of them, into the cache), then sliced after the shuffle
            assert sorted(decoded) == list(range(N_IMAGES))


def test_only_the_marked_pipeline_itself_is_shared_out(folder):
    data = _load(folder, None)
    marked = data.train_pipeline(SEED)
    assert core.train_shard(marked, BATCH, 0, 2) is not None
    # A derived pipeline (re-batched, mapped, ...) is another object: cut batch by batch.
    assert core.train_shard(marked.unbatch().batch(BATCH), BATCH, 0, 2) is None
    assert core.train_shard(marked, 2 * BATCH, 0, 2) is None  # another global batch size
    assert core.train_shard(data.train, BATCH, 0, 2) is None  # `train` keeps its own state
    with pytest.raises(ValueError, match="multiple of the number of workers"):
        core.train_shard(marked, BATCH, 0, 4)
