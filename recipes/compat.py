"""Every use of Keras private API in keras-recipes, in one place, on a pinned Keras range.

Keras 3 has no public way to do these few things; each function names what it touches, and
`tests/test_compat.py` has one test per function, so a Keras upgrade that breaks one fails there
first, with the function's name. Nothing else in `recipes/` or `callbacks/` may touch
`keras.src` or an underscore attribute of a Keras object. `setup.cfg` pins `keras` to
`KERAS_RANGE`, the range the test suite passes on.
"""

from __future__ import annotations

import contextlib

__all__ = [
    "KERAS_RANGE",
    "keras_home",
    "intercept_get_file",
    "flatten_layers",
    "child_layers",
    "learning_rate_slot",
    "set_learning_rate_slot",
    "optimizer_tracks",
    "multi_optimizer_parts",
    "set_iterations",
    "set_saved_optimizer",
    "accept_trainable_state",
    "set_metric_direction",
    "own_trainable_variables",
    "build_training_state",
    "backup_paths",
    "set_initial_epoch",
    "tensorflow_onednn",
]

#: The Keras versions this package is tested on (also in setup.cfg's install_requires).
KERAS_RANGE = ">=3.15,<3.16"


def keras_home() -> str:
    """Keras' base folder (`$KERAS_HOME`, read once at import; default `~/.keras`).

    Touches: `keras.src.backend.config.keras_home` (no public accessor).
    """
    from keras.src.backend import config

    return config.keras_home()


@contextlib.contextmanager
def intercept_get_file(replacement):
    """Replaces the `get_file` that `keras.applications` call, for the duration of the block.

    `keras.applications` builders call `keras.src.utils.file_utils.get_file(fname, origin, ...)`;
    swapping it tells which file a builder would download, without any network.

    Touches: `keras.src.utils.file_utils.get_file`.
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file
    file_utils.get_file = replacement
    try:
        yield
    finally:
        file_utils.get_file = original


def flatten_layers(layer, *, include_self=False) -> list:
    """Every layer below `layer`, recursively, including layers held by custom (non-Model)
    layers such as `InferenceModeBackbone`, which `.layers` does not list.

    Touches: `Layer._flatten_layers`.
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=True))


def child_layers(layer) -> list:
    """The layers directly tracked by `layer` (its `.layers` for models, plus those held by
    attributes of custom layers).

    Touches: `Layer._layers`.
    """
    return list(getattr(layer, "_layers", []))


def learning_rate_slot(optimizer):
    """What the optimizer holds as its learning rate: a `keras.Variable` or a schedule.

    Touches: `Optimizer._learning_rate` (`optimizer.learning_rate` evaluates a schedule).
    """
    return getattr(optimizer, "_learning_rate", None)


def set_learning_rate_slot(optimizer, value):
    """Puts `value` (a variable or schedule) in the optimizer's learning-rate slot, untracked.

    Touches: `Optimizer._learning_rate`; `object.__setattr__` keeps Keras from tracking the
    value (tracking would change the optimizer's variable list).
    """
    object.__setattr__(optimizer, "_learning_rate", value)


def optimizer_tracks(optimizer, variables) -> bool:
    """True when a built optimizer already has state for every variable in `variables`.

    Touches: `Optimizer._trainable_variables_indices`, `Optimizer._var_key`.
    """
    known = getattr(optimizer, "_trainable_variables_indices", None)
    if known is None:
        return False
    return all(optimizer._var_key(v) in known for v in variables)


def multi_optimizer_parts(optimizer, variable=None):
    """A `keras.optimizers.MultiOptimizer`'s sub-optimizers, or the one a variable routes to.

    Args:
        optimizer: A built MultiOptimizer.
        variable: Optional; then the sub-optimizer for it is returned (None when unrouted).

    Touches: `MultiOptimizer._inner_optimizers`, `MultiOptimizer._var_to_optimizer_idx`.
    """
    parts = list(optimizer._inner_optimizers)
    if variable is None:
        return parts
    index = optimizer._var_to_optimizer_idx.get(optimizer._var_key(variable))
    return None if index is None else parts[index]


def set_iterations(optimizer, value):
    """Sets an optimizer's step counter (so schedules of late-unfrozen groups stay in step).

    Touches: `Optimizer._iterations` (`iterations` is read-only).
    """
    optimizer._iterations.assign(value)


def set_initial_epoch(model, epoch):
    """Makes the running `fit` start at `epoch` (what `BackupAndRestore` does after restoring).

    Touches: `Model._initial_epoch` (read by `fit` after the callbacks' `on_train_begin`).
    """
    model._initial_epoch = epoch


def set_saved_optimizer(model, optimizer):
    """Makes `model.save` record `optimizer` after it was swapped in after `compile`.

    Touches: `Model._compile_config` (what `model.save` writes as the compile arguments).
    """
    if getattr(model, "_compile_config", None) is not None:
        model._compile_config.config["optimizer"] = optimizer


def accept_trainable_state(model):
    """Tells Keras the current trainable flags are the compiled ones (after a callback made more
    layers trainable and rebuilt the train function), so it does not warn at every epoch.

    Touches: `Model._compiled_trainable_state`, `Layer._flatten_layers`.
    """
    if hasattr(model, "_compiled_trainable_state"):
        model._compiled_trainable_state = {
            layer: layer.trainable for layer in model._flatten_layers()
        }


def set_metric_direction(metric, direction: str):
    """Marks a custom metric as better `"up"` or `"down"`, which KerasTuner reads to infer an
    objective's direction.

    Touches: `Metric._direction`.
    """
    metric._direction = direction


def own_trainable_variables(layer) -> list:
    """The variables `layer` itself created trainable, whatever its current `trainable` flag.

    The public `trainable_weights` is empty for a frozen layer and cannot tell a frozen kernel
    from a statistic (both report `trainable=False`).

    Touches: `Layer._trainable_variables`.
    """
    return list(getattr(layer, "_trainable_variables", None) or [])


def build_training_state(model, element_spec) -> None:
    """Creates the optimizer, metric and loss variables of a compiled model before `fit`.

    Without a distribution strategy, Keras' TensorFlow trainer defers this to the first trace of
    the train function; TensorFlow then sees variables created inside a `tf.function` and traces
    the whole train step a second time (measured: about half of the first step's 20-40 s for
    MobileNetV3-Small on 2 CPU cores). Building them first, from the dataset's element spec
    (symbolic: no batch is read), makes the first step trace once. A no-op on a built model.

    Touches: `keras.Model._symbolic_build` (Keras calls it itself under a strategy).
    """
    import keras

    def symbolic(spec):
        return None if spec is None else keras.KerasTensor(tuple(spec.shape), spec.dtype.name)

    batch = keras.tree.map_structure(symbolic, element_spec)
    model._symbolic_build(data_batch=tuple(batch) if isinstance(batch, list) else batch)


def backup_paths(callback) -> tuple:
    """The four files of a `keras.callbacks.BackupAndRestore` made with `double_checkpoint=True`:
    `(latest weights, latest metadata, previous weights, previous metadata)`.

    Keras writes and reads them but names them only in private attributes; the resilient backup
    (`callbacks.ResilientBackup`) validates and replaces them atomically.

    Touches: `BackupAndRestore._weights_path`, `._training_metadata_path`, `._prev_weights_path`,
    `._prev_training_metadata_path`.
    """
    return (callback._weights_path, callback._training_metadata_path, callback._prev_weights_path,
            callback._prev_training_metadata_path)


def tensorflow_onednn():
    """Whether the imported TensorFlow runs oneDNN's CPU kernels; None before it is imported.

    TensorFlow turns them on by default only on some x86 CPUs (measured here: on an AVX2-only
    AMD EPYC they stayed off with `TF_ENABLE_ONEDNN_OPTS` unset), so the flag alone does not
    tell; TensorFlow's own answer does. TensorFlow's private API, kept here with Keras'.

    Touches: `tensorflow.python.util._pywrap_util_port.IsMklEnabled`.
    """
    import sys

    if "tensorflow" not in sys.modules:
        return None
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())
