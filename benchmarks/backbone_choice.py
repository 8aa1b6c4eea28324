"""How the default backbone was chosen: test accuracy per epoch, plain Keras, MNIST or digits.

Usage: python benchmarks/backbone_choice.py ARCH SIZE EPOCHS ALPHA BATCH [mnist|digits] [PEAK_LR]
  ARCH: mobilenet | mobilenet_v2 | v3s | v3l. Prints test accuracy (inference mode) per epoch.
Uses ../shared/data/mnist (the MNIST test set, split 80/10/10 stratified) or sklearn digits.
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
arch, size, epochs, alpha, bs = (
    sys.argv[1],
    int(sys.argv[2]),
    int(sys.argv[3]),
    float(sys.argv[4]),
    int(sys.argv[5]),
)
dataset = sys.argv[6] if len(sys.argv) > 6 else "mnist"
keras.utils.set_random_seed(0)
if dataset == "mnist":
    from recipes.data import read_idx

    x = read_idx(MNIST / "t10k-images-idx3-ubyte.gz")[..., None]
    y = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz").astype("int32")
else:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * (255 / 16)).astype("uint8")[..., None]
    y = d.target.astype("int32")
from sklearn.model_selection import train_test_split  # noqa: E402

xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
xva, xte, yva, yte = train_test_split(xte, yte, test_size=0.5, stratify=yte, random_state=0)
inp = keras.Input((None, None, 1))
h = keras.layers.Resizing(size, size)(inp)
h = keras.layers.Concatenate()([h, h, h])
h = keras.layers.Rescaling(1 / 127.5, -1)(h)
B = {
    "mobilenet": keras.applications.MobileNet,
    "mobilenet_v2": keras.applications.MobileNetV2,
    "v3s": keras.applications.MobileNetV3Small,
    "v3l": keras.applications.MobileNetV3Large,
}[arch]
kw = dict(include_preprocessing=False) if arch.startswith("v3") else {}
bb = B(
    include_top=False, weights=None, input_shape=(size, size, 3), alpha=alpha, pooling="avg", **kw
)
for layer in bb.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = 0.9
h = bb(h)
h = keras.layers.Dropout(0.2)(h)
out = keras.layers.Dense(10, activation="softmax")(h)
m = keras.Model(inp, out)
steps = epochs * int(np.ceil(len(xtr) / bs))
sched = keras.optimizers.schedules.CosineDecay(
    0.0,
    steps - steps // 10,
    warmup_target=float(sys.argv[7]) if len(sys.argv) > 7 else 2e-3,
    warmup_steps=steps // 10,
)
m.compile(
    optimizer=keras.optimizers.Adam(sched),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)
tr = (
    tf.data.Dataset.from_tensor_slices((xtr, ytr))
    .cache()
    .shuffle(len(xtr), seed=0)
    .batch(bs)
    .prefetch(-1)
)
te = tf.data.Dataset.from_tensor_slices((xte, yte)).batch(256)
t0 = time.time()


class E(keras.callbacks.Callback):
    def on_epoch_end(self, e, logs):
        print(
            f"epoch {e + 1} t={time.time() - t0:.0f}s train_acc={logs['accuracy']:.4f} test_acc={self.model.evaluate(te, verbose=0)[1]:.4f}",
            flush=True,
        )


m.fit(tr, epochs=epochs, verbose=0, callbacks=[E()])
print("total", time.time() - t0)
