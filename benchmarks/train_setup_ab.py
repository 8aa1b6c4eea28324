"""Which part of the trainer's set-up, if any, makes a training step slower than plain `fit`.

One process, a fresh model per run, alternating (the given order, then reversed), steady-state
training images/s after 3 warm-up steps of 16 (64 px, batch 32, random images):

    python benchmarks/train_setup_ab.py efficientnet_b0 ours plain ours_acc plain_ds ours_nostate

Variants: `ours` (`compile_classifier`: its loss and metrics, `make_optimizer("adam")`, the
training state built before the first trace, a tf.data pipeline: what `recipes bench --train`
times), `ours_acc` (the same with accuracy as the only metric), `ours_nostate` (without
`build_training_state`), `plain_ds` (the guides' `compile` on the same tf.data pipeline),
`plain` (the guides' `compile`, numpy into `fit`).
"""

import sys

import keras
import numpy as np
import tensorflow as tf

import recipes
from recipes.bench import _StepClock
from recipes.compat import build_training_state
from recipes.training import compile_classifier, make_optimizer

SIZE, BATCH, STEPS, WARMUP = 64, 32, 16, 3


def run(backbone, variant, x, y):
    keras.utils.set_random_seed(0)
    model = recipes.build_classifier(backbone, 10, image_size=SIZE, input_shape=(SIZE, SIZE, 3))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).prefetch(2)
    if variant in ("ours", "ours_nostate"):
        compile_classifier(model, 10, optimizer=make_optimizer("adam"), jit_compile=False,
                           steps_per_execution=1)
    elif variant == "ours_acc":
        model.compile(optimizer=make_optimizer("adam"),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    elif variant in ("plain", "plain_ds"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        sys.exit(f"unknown variant {variant!r}")
    if variant in ("ours", "ours_acc"):
        build_training_state(model, ds.element_spec)
    clock = _StepClock()
    if variant == "plain":
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[clock.callback])
    else:
        model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[clock.callback])
    rate = clock.images_per_second(BATCH, WARMUP)
    keras.backend.clear_session()
    return rate


def main():
    backbone, variants = sys.argv[1], sys.argv[2:]
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (BATCH * STEPS, SIZE, SIZE, 3), dtype=np.uint8)
    y = rng.integers(0, 10, (BATCH * STEPS,))
    for order in (variants, variants[::-1]):
        for variant in order:
            print(f"{variant} {run(backbone, variant, x, y):.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
