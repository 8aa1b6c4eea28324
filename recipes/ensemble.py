"""`ensemble`: average the class probabilities of several classifiers in one saveable model."""

from __future__ import annotations

__all__ = ["ensemble"]


def ensemble(models, *, weights=None, input_shape=None, name="ensemble"):
    """Combines classifiers into one model whose output is their (weighted) mean probability.

    Every member keeps its own preprocessing and input size (they all take raw 0-255 pixels), so
    members built on different backbones and resolutions combine freely. Members sharing a name
    (two runs of one backbone) are renamed `<name>_<index>`.

    Args:
        models: Two or more `keras.Model`s with the same number of classes.
        weights: Non-negative weight per model (default: equal); normalized to sum to 1.
        input_shape: Shape of the shared raw input (default: the first model's input shape).
        name: Model name (default "ensemble").

    Returns:
        A `keras.Model` that saves and reloads like any other.

    Raises:
        ValueError: Fewer than two models, differing class counts, or bad weights.

    Example:
        >>> both = recipes.ensemble([run_a.model, run_b.model], weights=[2, 1])
        >>> both.predict(images)
    """
    import keras

    models = list(models)
    if len(models) < 2:
        raise ValueError(f"An ensemble needs at least 2 models; Received: {len(models)}")
    classes = {m.output_shape[-1] for m in models}
    if len(classes) != 1:
        raise ValueError(f"Models must predict the same number of classes; Received: {sorted(classes)}")
    if weights is None:
        weights = [1.0] * len(models)
    weights = [float(w) for w in weights]
    if len(weights) != len(models) or min(weights) < 0 or sum(weights) == 0:
        raise ValueError(
            f"weights must be {len(models)} non-negative numbers, not all 0; Received: {weights}"
        )
    total = sum(weights)
    seen = set()
    for i, m in enumerate(models):
        if m.name in seen:  # e.g. two runs of one backbone; Keras needs unique layer names
            m.name = f"{m.name}_{i}"
        seen.add(m.name)
    inputs = keras.Input(shape=input_shape or models[0].input_shape[1:], name="image")
    outputs = [m(inputs) for m in models]
    scaled = [
        keras.layers.Rescaling(w / total, name=f"weight_{i}", dtype="float32")(o)
        for i, (w, o) in enumerate(zip(weights, outputs))
    ]
    mean = keras.layers.Add(name="mean_probabilities", dtype="float32")(scaled)
    return keras.Model(inputs, mean, name=name)
