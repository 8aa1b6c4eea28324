"""The portable model: model.keras loads where recipes was never imported, with equal predictions."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import recipes
from recipes.augment import AugmentationPipeline
from recipes.layers import Backbone, BackbonePreprocessing, Resize, ToRGB
from recipes.portable import custom_objects_in, portable_model
from recipes.registry import PREPROCESSING_MODES
from recipes.run import RunFolder
from recipes.training import compile_classifier


def _tiny_classifier(input_shape, mode, bn_inference=False):
    """build_classifier's layer sequence around a two-layer stand-in backbone (fast to trace).

    The arithmetic under test is the input conversion and the preprocessing per mode; a real
    backbone of each family (a 32 px DenseNet for torch costs 20 s) adds nothing to it.
    """
    net_in = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(4, 3, name="conv")(net_in)
    y = keras.layers.BatchNormalization(name="bn")(y)
    net = keras.Model(net_in, keras.layers.GlobalAveragePooling2D(name="pool")(y), name="mobilenet")
    inputs = keras.Input(input_shape, name="image")
    x = ToRGB(name="to_rgb")(inputs)
    x = Resize(16, 16, name="resize")(x)
    x = AugmentationPipeline([keras.layers.RandomFlip("horizontal")], name="augmentation")(x)
    x = BackbonePreprocessing(mode, name="preprocess")(x)
    x = Backbone(net, bn_inference=bn_inference, name="backbone")(x)
    x = keras.layers.Dropout(0.5, name="head_dropout")(x)
    x = keras.layers.Dense(3, name="logits")(x)
    out = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, out, name="tiny_classifier")
    # Non-trivial BatchNorm statistics: inference mode must be what the portable model runs.
    net.get_layer("bn").moving_mean.assign(np.full(4, 0.3, "float32"))
    return model


def _images(channels, n=4):
    return np.random.default_rng(channels).integers(0, 256, (n, 8, 8, channels)).astype("uint8")


@pytest.fixture(scope="module")
def classifier():
    """A real build_classifier model: any-size 1-or-3-channel input, augmentation, BN head."""
    return recipes.build_classifier("mobilenet", 3, image_size=32, alpha=0.25,
                                    augmentation="light", dense_units=(8,), head_batchnorm=True)


@pytest.fixture(scope="module")
def saved(classifier, tmp_path_factory):
    """The classifier compiled as `train` compiles it with label smoothing (custom loss and
    metrics), saved through RunFolder.save_model."""
    compile_classifier(classifier, 3, optimizer="adam", label_smoothing=0.1)
    return RunFolder(tmp_path_factory.mktemp("run")).save_model(classifier)


# Every preprocessing mode on the default any-channel input (gray and RGB batches), and the
# fixed gray (repeat) and RGB (pass-through) inputs, which do not depend on the mode.
CASES = [(mode, (None, None, None)) for mode in PREPROCESSING_MODES]
CASES += [("caffe", (8, 8, 1)), ("caffe", (8, 8, 3))]


@pytest.mark.parametrize(("mode", "input_shape"), CASES,
                         ids=[f"{m}-{s[-1] or 'any'}ch" for m, s in CASES])
def test_portable_predictions_equal_the_models(mode, input_shape):
    model = _tiny_classifier(input_shape, mode, bn_inference=mode == "caffe")
    portable = portable_model(model)
    assert custom_objects_in(model) and custom_objects_in(portable) == []
    assert portable.name == model.name and portable.input_shape == model.input_shape
    for channels in (1, 3) if input_shape[-1] is None else (input_shape[-1],):
        x = _images(channels)
        # Bare calls (inference, Dropout 0.5 off) cost no predict tracing; predict on a saved
        # portable model is checked below and in the fresh process.
        np.testing.assert_array_equal(portable(x), model(x))


def test_the_real_classifier_converts_exactly_with_its_weights_in_order(classifier):
    portable = portable_model(classifier)
    assert custom_objects_in(portable) == []
    ours, theirs = classifier.get_weights(), portable.get_weights()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    for channels in (1, 3):  # bare calls: no predict function to trace for a real backbone
        x = _images(channels)
        np.testing.assert_array_equal(portable(x), classifier(x))
    # Copies, not the model's layers: those keep one node each (calibration reads `.output`).
    assert portable.get_layer("logits") is not classifier.get_layer("logits")
    assert classifier.get_layer("logits").output is not None



def test_the_rebuild_copies_weights_without_rebuilding_the_backbone_from_its_config(classifier,
                                                                                    monkeypatch):
    # `call` replaces the package's layers, so cloning them first (for `Backbone`: the whole
    # application, from its config) was work thrown away at every save.
    def refuse(cls, config):
        raise AssertionError(f"{cls.__name__}.from_config called by portable_model")

    for cls in (Backbone, ToRGB, Resize, BackbonePreprocessing):
        monkeypatch.setattr(cls, "from_config", classmethod(refuse))
    portable = portable_model(classifier)
    ours = {id(v) for v in classifier.weights}
    assert ours.isdisjoint(id(v) for v in portable.weights)  # copies: training one leaves the other
    x = _images(3)
    np.testing.assert_array_equal(portable(x), classifier(x))

def _load_elsewhere(path, x, tmp_path, backend):
    """Predictions of `path` on `x` from a new Python that imports Keras only, and what of
    this project (or TensorFlow) it imported."""
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import json, sys
        import keras, numpy as np
        model = keras.models.load_model({str(path)!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        np.save({str(tmp_path / 'p.npy')!r}, model.predict(x, verbose=0))
        top = {{m.split(".")[0] for m in sys.modules}}
        print(json.dumps(sorted(top & {{"recipes", "callbacks", "tensorflow"}})))
    """)
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(tmp_path / "p.npy"), json.loads(done.stdout.strip().splitlines()[-1])


def test_model_keras_loads_where_recipes_was_never_imported(saved, classifier, tmp_path,
                                                            digits_small):
    # Keras' numpy backend: starts in a third of TensorFlow's time, and shows the file needs
    # neither this project nor TensorFlow.
    x = digits_small[0][:16]
    predictions, imported = _load_elsewhere(saved, x, tmp_path, "numpy")
    assert imported == []
    np.testing.assert_allclose(predictions, classifier(x), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_model_keras_loads_in_a_tensorflow_process_without_recipes(saved, classifier, tmp_path,
                                                                   digits_small):
    x = digits_small[0][:16]
    predictions, imported = _load_elsewhere(saved, x, tmp_path, "tensorflow")
    assert imported == ["tensorflow"]
    np.testing.assert_allclose(predictions, classifier(x), rtol=1e-6, atol=1e-7)


def test_a_reloaded_model_keras_has_a_findable_backbone_and_the_same_weights(saved, classifier):
    loaded = keras.models.load_model(saved)
    assert recipes.find_backbone(loaded).name == "mobilenet"
    assert not loaded.compiled  # the compile state stays with the training run (documented)
    before = classifier.get_weights()
    classifier.set_weights(loaded.get_weights())  # what a fine-tune reusing phase 1 does
    for a, b in zip(before, classifier.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_reloaded_model_keras_evaluates_after_a_compile(tmp_path, digits_small):
    model = _tiny_classifier((8, 8, 1), "tf")
    compile_classifier(model, 3, optimizer="adam", label_smoothing=0.1)
    loaded = keras.models.load_model(RunFolder(tmp_path).save_model(model))
    loaded.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = digits_small[0][:16], digits_small[1][:16] % 3
    result = loaded.evaluate(x, y, verbose=0, return_dict=True)
    expected = keras.losses.sparse_categorical_crossentropy(y, model.predict(x, verbose=0))
    assert result["loss"] == pytest.approx(float(np.mean(expected)), rel=1e-5)
    assert 0 <= result["accuracy"] <= 1


def test_a_plain_keras_model_is_saved_as_it_is():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.compile(loss="sparse_categorical_crossentropy")
    assert portable_model(model) is model


@keras.saving.register_keras_serializable(package="test_portable")
class _Twice(keras.layers.Layer):
    def call(self, x):
        return 2 * x


def test_custom_layers_without_a_core_equivalent_are_named(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, _Twice(name="twice")(inputs))
    with pytest.raises(ValueError, match="test_portable>_Twice"):
        portable_model(model)
    assert portable_model(model, strict=False) is model
    with pytest.warns(UserWarning, match="needs the package that defines test_portable>_Twice"):
        RunFolder(tmp_path).save_model(model)


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_a_damaged_model_keras_is_named_not_called_missing(tmp_path, damage):
    run = RunFolder(tmp_path)
    if damage == "truncated":
        path = run.save_model(_tiny_classifier((8, 8, 1), "tf"))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        run.model_path.write_text("" if damage == "empty" else "not a model")
    with pytest.raises(ValueError, match=r"model\.keras' is not a valid Keras model file") as err:
        run.load_model()
    assert str(run.model_path) in str(err.value) and "File not found" not in str(err.value)
