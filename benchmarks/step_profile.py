"""Where one training step of the default job spends its time, by TensorFlow op type.

Builds the default model for digits as `recipes train` does (its metrics, Adam, warmup + cosine,
the training state built first), runs `train_on_batch` on one batch until warm, times 20 steps,
then records 10 steps with TensorFlow's profiler and prints the self time per op type per step
(`IDLE` is the profiler's idle time of the thread pools, not one op).

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/step_profile.py          # Grappler off
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/step_profile.py --grappler
"""

import argparse
import collections
import glob
import json
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grappler", action="store_true", help="TensorFlow's graph optimizer on")
    parser.add_argument("--top", type=int, default=20, help="op types to print (default 20)")
    args = parser.parse_args()

    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    import callbacks as cb
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

    recipe, data = prepare_data(Recipe(epochs=3), None)
    recipe = recipe.replace(image_size=recipe.image_size_for(data.input_shape))
    model = build_from_recipe(recipe, data)
    steps = data.sizes["train"] // recipe.batch_size
    schedule = cb.make_schedule("cosine", recipe.peak_learning_rate, epochs=3,
                                steps_per_epoch=steps, warmup_epochs=1)
    compile_classifier(model, data.num_classes, optimizer=make_optimizer("adam", schedule),
                       label_smoothing=recipe.label_smoothing)
    build_training_state(model, data.train.element_spec)
    x, y = next(iter(_train_pipeline(data, recipe)))
    logdir = tempfile.mkdtemp(prefix="step_profile_")
    with graph_optimizer(args.grappler):
        for _ in range(15):
            model.train_on_batch(x, y)
        begin = time.perf_counter()
        for _ in range(20):
            model.train_on_batch(x, y)
        ms = 1000 * (time.perf_counter() - begin) / 20
        tf.profiler.experimental.start(logdir)
        for _ in range(10):
            model.train_on_batch(x, y)
        tf.profiler.experimental.stop()
    path = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))[-1]
    raw, _ = plugin.xspace_to_tools_data([path], "framework_op_stats", {})
    table = json.loads(raw)[0]
    ids = [c["id"] for c in table["cols"]]
    self_us, count = collections.Counter(), collections.Counter()
    for row in table["rows"]:
        cells = dict(zip(ids, (c.get("v") for c in row["c"])))
        self_us[cells["type"]] += cells["total_self_time"]
        count[cells["type"]] += cells["occurrences"]
    busy = sum(v for k, v in self_us.items() if k != "IDLE") / 10 / 1000
    print(f"{ms:.1f} ms per step (20 timed); profiled: {busy:.1f} ms of op self time per step")
    for name, us in self_us.most_common(args.top):
        print(f"{name:40s} {us / 10 / 1000:7.2f} ms  {count[name] / 10:5.0f} per step")


if __name__ == "__main__":
    main()
