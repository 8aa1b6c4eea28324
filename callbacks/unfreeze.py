"""Gradual unfreezing (ULMFiT-style) of a frozen backbone during ``fit``."""

import re

import keras

from callbacks.schedules import check_positive_int


def _is_container(layer):
    # Only models are expanded; a layer with internal sublayers (attention,
    # RNN cell) is one unit.
    return isinstance(layer, keras.Model)


def _children(layer):
    from recipes import compat  # lazy: recipes imports callbacks at import time

    return compat.child_layers(layer)


def _preorder(layer):
    """``layer`` and all its descendants, every parent before its children."""
    yield layer
    for child in _children(layer):
        yield from _preorder(child)


def _leaves(layer):
    """Leaf layers of ``layer`` (InputLayers excluded) in flattened order."""
    found = []
    for child in layer.layers:
        if _is_container(child):
            found.extend(_leaves(child))
        elif not isinstance(child, keras.layers.InputLayer):
            found.append(child)
    return found


def _set_trainable_flags(root, flags):
    # `Layer.trainable = x` cascades to every sublayer, so restore parents
    # before children (pre-order): each child's own flag is written last.
    for layer in _preorder(root):
        if id(layer) in flags:
            layer.trainable = flags[id(layer)]


def _ancestors(root, target):
    """Containers on the path from ``root`` down to (and excluding) ``target``."""

    def walk(layer, path):
        if layer is target:
            return path
        for child in _children(layer):
            found = walk(child, path + [layer])
            if found is not None:
                return found
        return None

    return walk(root, []) or []


def _check_spec(epoch, spec):
    if isinstance(spec, bool):
        raise ValueError(f"schedule[{epoch}] must not be a bool; Received: {spec!r}")
    if isinstance(spec, int):
        check_positive_int(f"schedule[{epoch}]", spec)
    elif isinstance(spec, str):
        try:
            re.compile(spec)
        except re.error as err:
            raise ValueError(
                f"schedule[{epoch}] is not a valid regex ({err}); Received: {spec!r}"
            ) from None
    elif isinstance(spec, (list, tuple)):
        if not spec or not all(isinstance(name, str) for name in spec):
            raise ValueError(
                f"schedule[{epoch}] must be a non-empty list of layer names; Received: {spec!r}"
            )
    else:
        raise ValueError(
            f"schedule[{epoch}] must be a list of layer names, an int or a regex str; "
            f"Received: {spec!r}"
        )


@keras.saving.register_keras_serializable(package="callbacks")
class GradualUnfreeze(keras.callbacks.Callback):
    """Unfreeze the layers of a (sub-)model progressively, by epoch (ULMFiT).

    ``schedule`` maps an epoch to what becomes trainable at the start of that
    epoch (unfreezing is cumulative, nothing is re-frozen):

    * a list of layer names (looked up anywhere inside ``target``);
    * an int ``n``: the last ``n`` layers of ``target``'s flattened leaf-layer
      list (nested models expanded, every layer type but ``InputLayer``
      counted, as in ``base.layers[-n:]``);
    * a str: a regex, matched with ``re.search`` against layer names.

    BatchNormalization layers are never unfrozen: they stay in inference mode
    with their pretrained statistics. Containers on the path to an unfrozen
    layer get ``trainable=True`` without cascading to their other children.

    Keras builds the optimizer only for the variables trainable when ``fit``
    starts and refuses unknown variables later, so at ``on_train_begin`` the
    optimizer is rebuilt (same class and config, state copied by variable
    path) for every variable the schedule will ever unfreeze; frozen
    variables simply receive no update. At each change the train function is
    rebuilt (``make_train_function(force=True)``). Because the state is
    recomputed from the schedule at every epoch, resuming with
    ``BackupAndRestore`` at epoch k yields the right trainable set. On the JAX
    backend the set of trainable variables is fixed per ``fit`` call; run one
    ``fit`` per stage there.

    Args:
        schedule: dict ``{epoch: names | int | regex}`` with int epochs >= 0.
        target: Where to look for layers: None (the model, default), a layer
            name (e.g. the backbone's name) or a ``keras.Model``/layer.
        verbose: int, default 1. Print what is unfrozen.

    Returns:
        A ``keras.callbacks.Callback``; ``self.unfrozen`` maps epochs to the
        layer names unfrozen then.

    Raises:
        ValueError: On a malformed schedule (at construction) or, when
            training starts, on names/regexes matching no layer of the target.

    Example:
        >>> base = keras.applications.MobileNet(include_top=False, pooling="avg", weights=None)
        >>> base.trainable = False
        >>> schedule = {2: 10, 4: r"conv_pw_(9|1\\d)", 6: 1000}
        >>> model.fit(ds, epochs=8, callbacks=[GradualUnfreeze(schedule, target=base.name)])
    """

    def __init__(self, schedule, target=None, verbose=1):
        super().__init__()
        if not isinstance(schedule, dict) or not schedule:
            raise ValueError(
                "schedule must be a non-empty dict {epoch: layer names | int | regex}; "
                f"Received: schedule={schedule!r}"
            )
        parsed = {}
        for epoch, spec in schedule.items():
            # JSON configs turn int keys into str.
            if isinstance(epoch, str) and epoch.isdigit():
                epoch = int(epoch)
            check_positive_int("schedule epoch", epoch, minimum=0)
            _check_spec(epoch, spec)
            parsed[epoch] = list(spec) if isinstance(spec, (list, tuple)) else spec
        if target is not None and not isinstance(target, (str, keras.layers.Layer)):
            raise ValueError(
                f"target must be None, a layer name or a keras layer/model; Received: {target!r}"
            )
        self.schedule = dict(sorted(parsed.items()))
        self.target = target
        self.verbose = verbose
        self.unfrozen = {}

    # -- resolution -----------------------------------------------------------
    def _target_layer(self):
        if self.target is None:
            return self.model
        if isinstance(self.target, keras.layers.Layer):
            return self.target
        for layer in _preorder(self.model):
            if layer.name == self.target:
                return layer
        raise ValueError(
            f"No layer named {self.target!r} in the model; Received: target={self.target!r}"
        )

    def _select(self, spec):
        leaves = _leaves(self._root) if _is_container(self._root) else [self._root]
        if isinstance(spec, int):
            chosen = leaves[-spec:]
        elif isinstance(spec, str):
            pattern = re.compile(spec)
            chosen = [layer for layer in leaves if pattern.search(layer.name)]
            if not chosen:
                raise ValueError(
                    f"regex {spec!r} matches no layer of {self._root.name!r}; Received: {spec!r}"
                )
        else:
            by_name = {layer.name: layer for layer in _preorder(self._root)}
            missing = [name for name in spec if name not in by_name]
            if missing:
                raise ValueError(
                    f"No layer(s) {missing} in {self._root.name!r}; Received: {spec!r}"
                )
            chosen = []
            for name in spec:
                layer = by_name[name]
                chosen.extend(_leaves(layer) if _is_container(layer) else [layer])
        return [layer for layer in chosen if not isinstance(layer, keras.layers.BatchNormalization)]

    def _unfreeze(self, layers):
        names = []
        for layer in layers:
            for parent in _ancestors(self.model, layer):
                if not parent.trainable:
                    flags = {id(x): x.trainable for x in _preorder(parent)}
                    flags[id(parent)] = True
                    _set_trainable_flags(parent, flags)
            if not layer.trainable:
                layer.trainable = True
                names.append(layer.name)
        return names

    def _apply_until(self, epoch):
        changed = []
        for start, spec in self.schedule.items():
            if start <= epoch:
                changed.extend(self._unfreeze(self._select(spec)))
        return changed

    # -- optimizer ------------------------------------------------------------
    def _prepare_optimizer(self):
        model = self.model
        flags = {id(x): x.trainable for x in _preorder(model)}
        self._apply_until(max(self.schedule))
        needed = list(model.trainable_variables)
        _set_trainable_flags(model, flags)

        from recipes import compat  # lazy: recipes imports callbacks at import time

        optimizer = model.optimizer
        if compat.optimizer_tracks(optimizer, needed):
            return
        fresh = type(optimizer).from_config(optimizer.get_config())
        fresh.build(needed)
        old = {v.path: v for v in optimizer.variables}
        for variable in fresh.variables:
            source = old.get(variable.path)
            if source is not None and tuple(source.shape) == tuple(variable.shape):
                variable.assign(source)
        model.optimizer = fresh

    # -- hooks ----------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._root = self._target_layer()
        for spec in self.schedule.values():
            self._select(spec)  # raises on names/regexes that match nothing
        self._prepare_optimizer()
        self.model.make_train_function(force=True)

    def on_epoch_begin(self, epoch, logs=None):
        changed = self._apply_until(epoch)
        if changed:
            self.unfrozen[epoch] = changed
            from recipes import compat  # lazy: recipes imports callbacks at import time

            self.model.make_train_function(force=True)
            # The optimizer already covers these variables; keep Keras from
            # warning that trainable state changed since compile.
            compat.accept_trainable_state(self.model)
            if self.verbose:
                print(
                    f"\nEpoch {epoch + 1}: GradualUnfreeze made {len(changed)} layer(s) "
                    f"trainable: {', '.join(changed[:8])}{' ...' if len(changed) > 8 else ''}"
                )

    def get_config(self):
        target = self.target
        if isinstance(target, keras.layers.Layer):
            target = target.name
        return {"schedule": self.schedule, "target": target, "verbose": self.verbose}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
