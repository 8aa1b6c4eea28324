"""Where a `fit` step of the default job spends the time a bare `train_on_batch` step does not.

Builds the default model for digits (the default recipe, as `recipes train` builds it) and times
steady-state training steps (epochs 2 and later, validation excluded) in one variant per fresh
process, the variants interleaved over rounds:

- `tob`: a `train_on_batch` loop on one fixed batch (the floor: no input pipeline, no callbacks);
- `fit_tensor`: `fit` on one fixed batch repeated (`Dataset.from_tensors(...).repeat()`);
- `fit_pipeline`: `fit` on the run's training pipeline (shuffle, rebatch, take), the same metrics
  as `recipes train` (accuracy, top-5, macro precision and recall);
- `fit_lean`: as `fit_pipeline` with accuracy as the only metric;
- `train`: `recipes.train` itself (its callbacks, validation each epoch; validation excluded).

Each line of output is one JSON record; the summary gives the median ms/step per variant.
oneDNN is off as the `recipes` command sets it for this job (override with
`TF_ENABLE_ONEDNN_OPTS=1`); Grappler is off as `grappler="auto"` resolves for this run.

    python benchmarks/fit_gap.py --rounds 2
    python benchmarks/fit_gap.py --variants fit_pipeline --set augmentation=translation:0.1
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

VARIANTS = ("tob", "fit_tensor", "fit_pipeline", "fit_lean", "train")


def _value(text):
    """A --set value: JSON (true, 0.1, 32) where it parses, else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_variant(name, epochs, changes=()):
    import keras
    import tensorflow as tf

    import callbacks as cb
    import recipes
    from recipes.compat import build_training_state
    from recipes.config import Recipe
    from recipes.speed import graph_optimizer
    from recipes.training import (
        _train_pipeline,
        build_from_recipe,
        compile_classifier,
        make_optimizer,
        prepare_data,
    )

    class Steps(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.test = [], 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.begin, self.test = time.perf_counter(), 0.0

        def on_test_begin(self, logs=None):
            self._t = time.perf_counter()

        def on_test_end(self, logs=None):
            self.test += time.perf_counter() - self._t

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.begin - self.test)

    fields = dict(change.split("=", 1) for change in changes)
    recipe = Recipe.from_dict({**Recipe(epochs=epochs).to_dict(), **{
        k: _value(x) for k, x in fields.items()}})
    recipe, data = prepare_data(recipe, None)
    recipe = recipe.replace(image_size=recipe.image_size_for(data.input_shape))
    steps = data.sizes["train"] // recipe.batch_size
    stamps = Steps()
    if name == "train":
        recipes.train(recipe=recipe, callbacks=[stamps], verbose=0)
        per_epoch = stamps.times
    else:
        keras.utils.set_random_seed(0)
        model = build_from_recipe(recipe, data)
        schedule = cb.make_schedule("cosine", recipe.peak_learning_rate, epochs=epochs,
                                    steps_per_epoch=steps, warmup_epochs=1)
        compile_classifier(model, data.num_classes, optimizer=make_optimizer("adam", schedule),
                           label_smoothing=recipe.label_smoothing)
        if name == "fit_lean":
            model.compile(optimizer=make_optimizer("adam", schedule),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        build_training_state(model, data.train.element_spec)
        with graph_optimizer(False):
            if name == "tob":
                x, y = next(iter(_train_pipeline(data, recipe)))
                per_epoch = []
                for _ in range(epochs):
                    begin = time.perf_counter()
                    for _ in range(steps):
                        model.train_on_batch(x, y)
                    per_epoch.append(time.perf_counter() - begin)
            else:
                if name == "fit_tensor":
                    x, y = next(iter(_train_pipeline(data, recipe)))
                    ds = tf.data.Dataset.from_tensors((x, y)).repeat().take(steps)
                else:
                    ds = _train_pipeline(data, recipe)
                model.fit(ds, epochs=epochs, callbacks=[stamps], verbose=0, shuffle=False)
                per_epoch = stamps.times
    later = per_epoch[1:]
    return {"variant": name, "steps_per_epoch": steps,
            "ms_per_step": round(1000 * statistics.median(later) / steps, 1),
            "first_epoch_s": round(per_epoch[0], 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a Recipe field for every variant, e.g. augmentation=translation:0.1")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_variant(args.one, args.epochs, args.set)), flush=True)
        return
    env = {**os.environ}
    env.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = {}
    for round_ in range(args.rounds):
        for name in args.variants.split(","):
            out = subprocess.run([sys.executable, __file__, "--one", name, "--epochs",
                                  str(args.epochs), *(f"--set={c}" for c in args.set)], env=env, capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
            record = json.loads(out)
            record["round"] = round_
            print(json.dumps(record), flush=True)
            results.setdefault(name, []).append(record["ms_per_step"])
    print(json.dumps({"onednn": env["TF_ENABLE_ONEDNN_OPTS"], "set": args.set,
                      "median_ms_per_step": {k: statistics.median(v) for k, v in results.items()},
                      "all": results}))


if __name__ == "__main__":
    main()
