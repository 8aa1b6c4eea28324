"""The model side on Keras' other backends: build, fit on arrays, save and reload under JAX
(and torch where it is installed), each in a fresh process, and without importing TensorFlow."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import keras
    import recipes, callbacks
    from recipes.speed import dtype_policy, resolve
    from recipes.training import compile_classifier, make_optimizer
    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    report = {"tensorflow_after_import": "tensorflow" in sys.modules}

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 8, 8, 1)).astype("uint8")
    y = (x.reshape(16, -1).mean(axis=1) > 127).astype("int32")  # a learnable rule
    # The smallest registry backbone keeps the backend's compile time low.
    model = recipes.build_classifier("mobilenet", 2, input_shape=(8, 8, 1), image_size=32, alpha=0.25)
    schedule = callbacks.make_schedule("cosine", 5e-3, epochs=2, steps_per_epoch=2, warmup_epochs=1)
    speed = resolve(steps_per_epoch=2)
    compile_classifier(model, 2, optimizer=make_optimizer("adam", schedule),
                       jit_compile=speed.jit_compile, steps_per_execution=speed.steps_per_execution)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                        callbacks=[callbacks.LearningRateLogger()])
    report["losses"] = history.history["loss"]
    report["learning_rates"] = history.history["learning_rate"]
    augmented = recipes.augmentation("medium", seed=0)(x.astype("float32"), training=True)
    report["augmentation_changes"] = bool(np.abs(np.asarray(augmented) - x).max() > 0)
    both = recipes.ensemble([model, model])
    report["ensemble_sums"] = [float(s) for s in both.predict(x[:4], verbose=0).sum(axis=1)]
    with dtype_policy("mixed_bfloat16"):
        mixed = recipes.build_classifier("mobilenet", 2, input_shape=(8, 8, 1), image_size=32, alpha=0.25)
    report["mixed_output_dtype"] = str(mixed.predict(x[:2], verbose=0).dtype)
    report["mixed_conv_dtype"] = next(l.compute_dtype for l in recipes.find_backbone(mixed).layers
                                      if isinstance(l, keras.layers.Conv2D))
    # Keras' own saving imports TensorFlow when it is installed; everything up to here must not.
    report["tensorflow_before_saving"] = "tensorflow" in sys.modules
    path = sys.argv[2] + "/model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    report["reload_max_diff"] = float(np.abs(model.predict(x, verbose=0)
                                             - reloaded.predict(x, verbose=0)).max())
    print("REPORT " + json.dumps(report))
''')

_BACKENDS = [
    pytest.param("jax", marks=pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                                 reason='needs JAX (pip install "keras-recipes[jax]")')),
    pytest.param("torch", marks=pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                                   reason="PyTorch is not installed")),
]


@pytest.mark.parametrize("backend", _BACKENDS)
def test_build_fit_save_reload_on_another_backend(backend, tmp_path):
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, backend, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    assert not report["tensorflow_after_import"]  # importing recipes does not pull TensorFlow in
    # nor do building, fitting arrays, augmenting, ensembling, the mixed policy
    assert not report["tensorflow_before_saving"]
    assert report["augmentation_changes"]
    assert all(loss == loss for loss in report["losses"])  # finite (NaN != NaN)
    assert report["learning_rates"][0] < report["learning_rates"][1]  # warmup, then the peak
    assert report["reload_max_diff"] < 1e-5
    assert report["ensemble_sums"] == pytest.approx([1.0] * 4, abs=1e-5)
    assert report["mixed_output_dtype"] == "float32" and report["mixed_conv_dtype"] == "bfloat16"
