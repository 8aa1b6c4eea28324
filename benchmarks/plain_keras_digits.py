"""Bare `recipes train`'s job written by hand in plain Keras: the reference for the speed ratio.

The same data (scikit-learn's digits, 8x8 grayscale, 0-255), the same stratified 80/10/10 split,
the same model (MobileNetV3-Small from scratch at 32 px, grayscale repeated to RGB and resized
inside the model, BatchNorm momentum 0.9, dropout 0.2, softmax head), the same optimization
(Adam, peak 5e-3, one epoch of linear warmup then cosine decay, batch 64, early stopping on
val_loss with patience 5 restoring the best weights) and the same test evaluation, as a Keras
user would write it: numpy arrays into `model.fit`. Prints one JSON line with the test accuracy
and the seconds each part took.

Run it (`benchmarks/default_vs_plain.py` runs it next to `recipes train`):
    python benchmarks/plain_keras_digits.py --epochs 12 --seed 0
"""

import argparse
import json
import os
import time

START = time.time()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    imported = time.time()

    digits = load_digits()
    x = np.round(digits.images * 255 / 16).astype("uint8")[..., None]
    y = digits.target
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.1, stratify=y, random_state=args.seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.1 / 0.9, stratify=y_rest, random_state=args.seed)

    keras.utils.set_random_seed(args.seed)
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, include_top=False, pooling="avg", include_preprocessing=True)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Concatenate()([inputs, inputs, inputs])
    h = keras.layers.Resizing(32, 32)(h)
    h = backbone(h)
    h = keras.layers.Dropout(0.2)(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)

    steps = int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps * (args.epochs - 1), warmup_target=5e-3, warmup_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    built = time.time()
    model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs,
              batch_size=args.batch_size, verbose=0,
              callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)])
    fitted = time.time()
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    done = time.time()
    print(json.dumps({
        "test_accuracy": round(float(accuracy), 4), "import_s": round(imported - START, 1),
        "build_s": round(built - imported, 1), "fit_s": round(fitted - built, 1),
        "evaluate_s": round(done - fitted, 1), "total_s": round(done - START, 1),
    }))


if __name__ == "__main__":
    main()
