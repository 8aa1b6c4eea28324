"""Precise BatchNorm: replace BN moving averages by true population statistics."""

import time

import keras
import numpy as np

from callbacks.schedules import check_positive_int


def _all_layers(model):
    # Also the layers held by custom (non-Model) layers, which `.layers` does not list.
    from recipes.compat import flatten_layers  # lazy: recipes imports callbacks

    return flatten_layers(model)


def _inputs_of(batch):
    if isinstance(batch, (tuple, list)) and not isinstance(batch, dict):
        batch = batch[0]
    # predict_on_batch on JAX (and torch) takes arrays, not the tf.Tensors tf.data yields.
    return keras.tree.map_structure(np.asarray, batch)


def _trainable_bn_layers(model):
    return [
        layer
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


class _StatsModel(keras.Model):
    """Runs ``model`` in training mode and returns each BN input's batch moments.

    The moments are computed inside the same compiled function as the
    forward pass, so only per-channel vectors leave the
    device. They are returned as outputs rather than written to variables so
    that this also works where compiled functions are stateless (JAX).
    """

    def __init__(self, model, bn_layers):
        super().__init__(name="precise_bn_stats")
        self.inner = model
        self.bn_layers = bn_layers
        self._records = []

    def hook(self, index, layer, call):
        def hooked(inputs, *args, training=None, **kwargs):
            # A BN called with training=False inside a training forward pass
            # normalizes with its moving stats during fit too: leave it.
            if training:
                x = keras.ops.cast(inputs, "float32")
                axis = layer.axis % len(x.shape)
                axes = [i for i in range(len(x.shape)) if i != axis]
                mean, var = keras.ops.moments(x, axes)
                channels = x.shape[axis]
                count = keras.ops.cast(keras.ops.size(x), "float32") / float(channels)
                self._records.append((index, mean, var, count))
            return call(inputs, *args, training=training, **kwargs)

        return hooked

    def call(self, inputs):
        self._records = []
        self.inner(inputs, training=True)
        outputs = {}
        for index, mean, var, count in self._records:
            key = f"{index}_{sum(1 for k in outputs if k.startswith(f'{index}_'))}"
            outputs[key] = (
                keras.ops.expand_dims(mean, 0),
                keras.ops.expand_dims(var, 0),
                keras.ops.reshape(count, (1, 1)),
            )
        return outputs


def _stats_function(stats_model, example):
    """The compiled stats pass: on TensorFlow traced once for any batch size.

    Keras' `predict_on_batch` traces again for a batch of another size (a last partial batch),
    which costs as much as the first trace: 4 s of 11 for the default model on 2 CPU cores.
    JAX compiles per shape anyway, and a distribution strategy needs Keras' own replica logic.
    """
    if keras.backend.backend() != "tensorflow":
        return stats_model.predict_on_batch
    import tensorflow as tf

    if tf.distribute.has_strategy():
        return stats_model.predict_on_batch
    spec = tf.nest.map_structure(
        lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)), example
    )
    compiled = tf.function(stats_model.call, input_signature=[spec])
    return lambda x: tf.nest.map_structure(lambda t: t.numpy(), compiled(x))


def _run_stats(stats_model, dataset, num_batches):
    """Pool per-batch moments exactly: returns {bn index: (mean, variance)}."""
    model = stats_model.inner
    bn_layers = stats_model.bn_layers
    # The training-mode forward passes also move the EMA statistics (and any
    # other non-trainable state); snapshot it and put it back afterwards.
    state = list(model.non_trainable_weights)
    snapshot = [keras.ops.convert_to_numpy(v) for v in state]
    chunks = {}
    seen = 0
    run = None
    try:
        for index, layer in enumerate(bn_layers):
            # Instance attribute shadows the class method; Layer.__call__
            # looks up `self.call` at every call (and tracing happens here).
            object.__setattr__(layer, "call", stats_model.hook(index, layer, layer.call))
        for batch in dataset:
            if seen >= num_batches:
                break
            inputs = _inputs_of(batch)
            run = run or _stats_function(stats_model, inputs)
            outputs = run(inputs)
            for key, (mean, var, count) in outputs.items():
                index = int(key.split("_")[0])
                chunks.setdefault(index, []).append((mean[0], var[0], float(count.ravel()[0])))
            seen += 1
    finally:
        for layer in bn_layers:
            if "call" in layer.__dict__:
                object.__delattr__(layer, "call")
        for variable, value in zip(state, snapshot, strict=True):
            variable.assign(value)
    if seen == 0:
        raise ValueError("dataset yielded no batches; Received: an empty dataset")
    pooled = {}
    for index, parts in chunks.items():
        means = np.stack([p[0] for p in parts]).astype("float64")
        variances = np.stack([p[1] for p in parts]).astype("float64")
        weights = np.array([p[2] for p in parts], dtype="float64")[:, None]
        total = weights.sum()
        mean = (weights * means).sum(0) / total
        # Law of total variance: within-batch variance + variance of batch means.
        variance = (weights * (variances + (means - mean) ** 2)).sum(0) / total
        pooled[index] = (mean, variance)
    return pooled


def _assign(bn_layers, pooled):
    updated = []
    for index, (mean, variance) in sorted(pooled.items()):
        layer = bn_layers[index]
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
        updated.append(layer)
    return updated


def recompute_bn_statistics(model, dataset, num_batches=50):
    """Set every trainable BatchNormalization layer's moving stats to population stats.

    Runs the model in training mode (as during ``fit``) on up to
    ``num_batches`` batches, records the per-channel mean and variance of each
    BN layer's *input*, pools them exactly over all batches (count-weighted
    mean of batch means; variance = mean within-batch variance + variance of
    the batch means) and assigns them to ``moving_mean`` /
    ``moving_variance``. Works on nested models (e.g. a ``keras.applications``
    backbone inside a functional model) because the statistics are captured
    by temporarily hooking each BN layer's ``call``; the forward pass runs
    compiled, traced once for every batch size on TensorFlow (``predict_on_batch`` elsewhere).

    Skipped (their statistics are meant to stay as they are): BN layers with
    ``trainable=False`` -- a frozen backbone, ``base.trainable = False`` -- and
    BN layers that still receive ``training=False`` in a training forward
    pass (a layer calling ``self.bn(x, training=False)``). Note that in Keras 3
    the outer ``training`` value overrides a ``training=False`` recorded when a
    functional graph was built (``base(x, training=False)``), so such a BN is
    in training mode during ``fit`` and *is* updated unless it is
    ``trainable=False``. Variance is the biased (population) one, as Keras' BN
    uses for its moving variance. All other weights are left exactly as they
    were.

    Args:
        model: A built ``keras.Model``.
        dataset: Iterable of batches (``tf.data.Dataset`` or list) of ``x`` or
            ``(x, y[, w])``; the training data, ideally without augmentation
            changes you do not train with.
        num_batches: int > 0, default 50. Batches to average over.

    Returns:
        List of the BN layers that were updated.

    Raises:
        ValueError: If ``num_batches`` < 1 or the dataset yields no batch.

    Example:
        >>> updated = recompute_bn_statistics(model, train_ds, num_batches=100)
    """
    check_positive_int("num_batches", num_batches)
    bn_layers = _trainable_bn_layers(model)
    if not bn_layers:
        return []
    stats_model = _StatsModel(model, bn_layers)
    return _assign(bn_layers, _run_stats(stats_model, dataset, num_batches))


@keras.saving.register_keras_serializable(package="callbacks")
class PreciseBN(keras.callbacks.Callback):
    """Recompute BN statistics from training batches during ``fit`` (PreciseBN).

    Calls :func:`recompute_bn_statistics` with the current weights. With
    ``every_epoch=True`` it runs after the last training batch of each epoch
    (when ``fit`` knows the number of steps), i.e. *before* validation, so
    ``val_*`` metrics, checkpoints and early stopping see the precise
    statistics; when the step count is unknown it runs at epoch end instead.
    With ``every_epoch=False`` it runs once at the end of training. The time
    spent is logged as ``precise_bn_seconds``.

    The dataset is not part of ``get_config``; a deserialized PreciseBN needs
    it passed again (``dataset=None`` raises).

    Args:
        dataset: Training batches (``tf.data.Dataset`` of ``x`` or ``(x, y)``).
        num_batches: int > 0, default 50.
        every_epoch: bool, default True.

    Returns:
        A ``keras.callbacks.Callback``.

    Raises:
        ValueError: If ``dataset`` is None or ``num_batches`` < 1.

    Example:
        >>> model.fit(train_ds, epochs=10, validation_data=val_ds,
        ...           callbacks=[PreciseBN(train_ds, num_batches=100)])
    """

    def __init__(self, dataset, num_batches=50, every_epoch=True):
        super().__init__()
        if dataset is None:
            raise ValueError("dataset must be an iterable of training batches; Received: None")
        check_positive_int("num_batches", num_batches)
        self.dataset = dataset
        self.num_batches = int(num_batches)
        self.every_epoch = bool(every_epoch)
        self._done_this_epoch = False
        self._seconds = None
        self._stats_model = None
        self._stats_key = None

    def _run(self):
        began = time.perf_counter()
        bn_layers = _trainable_bn_layers(self.model)
        if bn_layers:
            # Reuse the compiled stats function across epochs unless the set of
            # trainable BN layers changed (e.g. GradualUnfreeze).
            key = (id(self.model), tuple(id(layer) for layer in bn_layers))
            if self._stats_key != key:
                self._stats_model = _StatsModel(self.model, bn_layers)
                self._stats_key = key
            pooled = _run_stats(self._stats_model, self.dataset, self.num_batches)
            _assign(bn_layers, pooled)
        self._seconds = time.perf_counter() - began

    def on_epoch_begin(self, epoch, logs=None):
        self._done_this_epoch = False
        self._seconds = None

    def on_train_batch_end(self, batch, logs=None):
        steps = (self.params or {}).get("steps")
        if self.every_epoch and steps and batch >= steps - 1 and not self._done_this_epoch:
            self._run()
            self._done_this_epoch = True

    def on_epoch_end(self, epoch, logs=None):
        if self.every_epoch and not self._done_this_epoch:
            self._run()
            self._done_this_epoch = True
        if logs is not None and self._seconds is not None:
            logs["precise_bn_seconds"] = self._seconds

    def on_train_end(self, logs=None):
        if not self.every_epoch:
            self._run()

    def get_config(self):
        return {"dataset": None, "num_batches": self.num_batches, "every_epoch": self.every_epoch}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
