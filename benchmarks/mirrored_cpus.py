"""Training ms/step of MobileNetV3-Small (32 px, batch 64) on one CPU device or mirrored over N.

The profiler shows the two cores idle for a large share of each step (small ops do not fill the
pools), so this checks whether two replicas on two logical CPU devices fill them better:
`tf.distribute.MirroredStrategy` over `N` logical devices of the one physical CPU, each replica
taking half the global batch. Run each setting in its own process (devices are fixed at start):

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/mirrored_cpus.py 1
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/mirrored_cpus.py 2
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/mirrored_cpus.py 2 1   # one intra-op thread each

Prints one JSON line: the first `fit` of 5 steps (tracing) and ms per step over 30 more.
"""

import json
import sys
import time

import numpy as np
import tensorflow as tf


def main():
    devices = int(sys.argv[1])
    intra = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(devices)])
    else:
        strategy = tf.distribute.get_strategy()
    import keras

    size, batch = 32, 64
    with strategy.scope():
        base = keras.applications.MobileNetV3Small(
            include_top=False, weights=None, input_shape=(size, size, 3),
            include_preprocessing=False)
        inputs = keras.Input((size, size, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(pooled))
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.RandomState(0).rand(batch * 40, size, size, 3).astype("float32")
    y = np.arange(batch * 40) % 10
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True)
    data = data.cache().repeat()
    start = time.time()
    model.fit(data, steps_per_epoch=5, epochs=1, verbose=0)
    first = time.time() - start
    start = time.time()
    model.fit(data, steps_per_epoch=30, epochs=1, verbose=0)
    print(json.dumps({"devices": devices, "intra_op_threads": intra or "default",
                      "first_s": round(first, 1),
                      "step_ms": round((time.time() - start) / 30 * 1000, 1)}))


if __name__ == "__main__":
    main()
