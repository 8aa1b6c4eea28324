"""The same `Data` splits re-batched for a trial, or with validation joined to training (retrain)."""

from __future__ import annotations

import dataclasses

__all__ = ["rebatch", "with_validation_in_train"]


def rebatch(data, batch_size: int):
    """The same splits with another training batch size (a `Data` bakes its batch size in).

    Args:
        data: A `Data`.
        batch_size: The training batch size wanted.

    Returns:
        `data` itself when the size already matches, else a copy whose training pipeline (and
        `make_train`) yields batches of `batch_size`; validation and test are untouched.
    """
    if batch_size == data.batch_size:
        return data
    import tensorflow as tf

    # Re-batching loses the known length; stating it spares Keras' "ran out of data" warning.
    batches = max(1, -(-int(data.sizes.get("train", 0)) // batch_size))

    def again(ds):
        ds = ds.unbatch().batch(batch_size)
        return ds.apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)

    changes = {"train": again(data.train), "batch_size": batch_size}
    if data.make_train is not None:
        make_train = data.make_train
        changes["make_train"] = lambda seed: again(make_train(seed))
    return dataclasses.replace(data, **changes)


def with_validation_in_train(data, seed: int):
    """The same `Data` with the validation split moved into training (and no validation).

    Args:
        data: A `Data`.
        seed: Shuffle seed of the joined training split.

    Returns:
        A copy whose `train` holds train + validation, reshuffled every epoch; `data` itself when
        it has no validation split.

    Example:
        >>> full = with_validation_in_train(data, seed=0)
        >>> full.sizes["train"] == data.sizes["train"] + data.sizes["validation"]
        True
    """
    import tensorflow as tf

    if data.validation is None:
        return data
    batch = data.batch_size
    n = int(data.sizes.get("train", 0)) + int(data.sizes.get("validation", 0))
    parts = data.train.unbatch().concatenate(data.validation.unbatch())

    def make(shuffle_seed):
        ds = parts.shuffle(max(1, n), seed=shuffle_seed, reshuffle_each_iteration=True).batch(batch)
        ds = ds.apply(tf.data.experimental.assert_cardinality(max(1, -(-n // batch))))
        return ds.prefetch(tf.data.AUTOTUNE)

    changes = {"train": make(seed), "validation": None, "sizes": {**data.sizes, "train": n, "validation": 0}}
    if data.make_train is not None:
        changes["make_train"] = make
    return dataclasses.replace(data, **changes)
