"""tensorflow-datasets sources."""

from __future__ import annotations

import numpy as np

from .arrays import as_nhwc_uint8

__all__ = ["from_tfds"]


def _tfds_arrays(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:
        raise ValueError(f"Unknown tensorflow-datasets dataset; Received: 'tfds:{name}' ({exc})") from None
    if not builder.is_prepared():
        where = data_dir or "~/tensorflow_datasets"
        raise ValueError(
            f"tensorflow-datasets dataset {name!r} is not prepared in {where} and cannot be "
            "downloaded here. Prepare it on a machine with internet access, then copy the folder:\n"
            f"  python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
            f"data_dir='{where}').download_and_prepare()\"\n"
            f"and pass data_dir='{where}' (CLI: --data-dir)."
        )
    info = builder.info
    keys = list(info.supervised_keys or ("image", "label"))
    label_feature = info.features[keys[1]]
    class_names = list(getattr(label_feature, "names", None) or [])
    splits = list(info.splits)

    def arrays(split):
        ds = builder.as_dataset(split=split, as_supervised=True)
        xs, ys = zip(*tfds.as_numpy(ds)) if len(info.splits[split].filenames) else ((), ())
        return as_nhwc_uint8(np.stack(xs)), np.asarray(ys, np.int32)

    main = "train" if "train" in splits else splits[0]
    x, y = arrays(main)
    x_test = y_test = None
    if "test" in splits and main != "test":
        x_test, y_test = arrays("test")
    if not class_names:
        class_names = [str(i) for i in range(int(y.max()) + 1)]
    return x, y, x_test, y_test, class_names


def from_tfds(name, *, data_dir=None, crop=None, **opts):
    """A prepared tensorflow-datasets dataset (its own test split when it has one)."""
    from .arrays import from_memory

    x, y, x_test, y_test, class_names = _tfds_arrays(name, data_dir)
    return from_memory(x, y, class_names, x_test=x_test, y_test=y_test, where=f"tfds:{name}", **opts)
