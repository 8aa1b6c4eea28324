"""Speed toggles: what "auto" resolves to per device, the errors, and that they really apply."""

import gc
import weakref

import keras
import numpy as np
import pytest

import callbacks as cb
import recipes
from recipes import Recipe
from recipes.cli.args import auto_bool, auto_int
from recipes.speed import (
    Accelerator,
    dtype_policy,
    frozen_survivors,
    graph_optimizer,
    per_batch_callbacks,
    resolve,
)

CPU = Accelerator("cpu")
VOLTA = Accelerator("gpu", (7, 0), 1)
PASCAL = Accelerator("gpu", (6, 1), 1)


def test_grappler_is_off_only_for_short_cpu_runs():
    assert resolve(steps_per_epoch=23, epochs=8, device=CPU).grappler is False  # 184 steps
    assert resolve(steps_per_epoch=125, epochs=8, device=CPU).grappler is True  # 1,000 steps
    assert resolve(steps_per_epoch=23, epochs=8, device=VOLTA).grappler is True
    assert resolve(grappler=False, steps_per_epoch=125, epochs=8, device=CPU).grappler is False


@pytest.mark.parametrize("device, precision, jit, steps, grappler", [
    (CPU, "float32", False, 1, True),  # length unknown: on
    (VOLTA, "mixed_float16", True, 20, True),  # capped at the epoch's 20 steps
    (PASCAL, "float32", True, 20, True),  # no tensor cores: float16 would not pay
])
def test_auto_resolves_per_device(device, precision, jit, steps, grappler):
    speed = resolve(steps_per_epoch=20, device=device)
    assert (speed.precision, speed.jit_compile, speed.steps_per_execution, speed.grappler) == (
        precision, jit, steps, grappler)


def test_explicit_values_win():
    speed = resolve("mixed_bfloat16", True, 4, device=CPU)
    assert (speed.precision, speed.jit_compile, speed.steps_per_execution) == ("mixed_bfloat16", True, 4)
    assert resolve("float32", False, device=VOLTA).precision == "float32"


def test_mixed_float16_without_a_gpu_says_why_and_what_to_use():
    with pytest.raises(ValueError, match="needs a GPU.*mixed_bfloat16"):
        resolve("mixed_float16", device=CPU)


def test_unknown_precision_lists_the_closest():
    with pytest.raises(ValueError, match="mixed_float16"):
        Recipe(precision="mixed_float")


@pytest.mark.parametrize("field, value, match", [
    ("steps_per_execution", 0, "steps_per_execution must be an int >= 1"),
    ("steps_per_execution", "fast", "'auto' or an int"),
    ("jit_compile", "yes", "jit_compile must be 'auto', True or False"),
    ("jit_compile", 1, "jit_compile must be 'auto', True or False"),
    ("grappler", "off", "grappler must be 'auto', True or False"),
])
def test_bad_toggles_fail_in_the_recipe(field, value, match):
    with pytest.raises(ValueError, match=match):
        Recipe(**{field: value})


def test_per_batch_callbacks_force_one_step_per_call():
    one_cycle = cb.OneCycle(max_lr=1e-2, epochs=2)
    assert per_batch_callbacks([one_cycle]) == ["OneCycle"]
    assert resolve(steps_per_epoch=20, callbacks=[one_cycle], device=VOLTA).steps_per_execution == 1
    with pytest.raises(ValueError, match="OneCycle acts on every batch"):
        resolve(steps_per_execution=8, callbacks=[one_cycle], device=CPU)


def test_the_trainers_own_callbacks_allow_several_steps_per_call(tmp_path):
    # What train adds (LR logger, divergence stop, early stopping, backup, CSV log) must stay
    # correct when Keras calls batch hooks once per execution.
    own = cb.default_callbacks(tmp_path, patience=3)
    assert per_batch_callbacks(own) == []


def test_cli_parsers_of_the_toggles():
    assert [auto_bool(t) for t in ("auto", "true", "off")] == ["auto", True, False]
    assert [auto_int(t) for t in ("auto", "8")] == ["auto", 8]
    with pytest.raises(Exception, match="auto, true or false"):
        auto_bool("maybe")


def test_graph_optimizer_is_scoped_and_restored():
    import tensorflow as tf

    def disabled():
        return tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)

    before = disabled()
    with graph_optimizer(False):
        assert disabled() is True
        with graph_optimizer(True):
            assert disabled() is False
        assert disabled() is True
    assert disabled() == before


class _Node:
    pass


def _cycle():
    node = _Node()
    node.self = node  # only the cyclic collector frees it
    return node


def _tracked(obj):
    return any(o is obj for o in gc.get_objects())  # frozen objects are not listed


def test_frozen_survivors_collect_each_runs_garbage_and_freeze_the_rest():
    gc.unfreeze()  # this test owns the freeze state (tests/conftest.py freezes at module ends)
    with frozen_survivors() as scope:
        keep, junk = _cycle(), _cycle()
        dead = weakref.ref(junk)
        del junk
        scope.collected()
        assert dead() is None  # the finished run's cyclic garbage was collected first
        assert not _tracked(keep)  # the survivor is out of later collections
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0 and _tracked(keep)  # the scope unfroze what it froze


def test_frozen_survivors_leave_a_freeze_they_did_not_start():
    gc.unfreeze()
    earlier = _cycle()
    gc.freeze()
    with frozen_survivors() as scope:
        scope.collected()
    assert not _tracked(earlier) and gc.get_freeze_count() > 0
    gc.unfreeze()


def test_dtype_policy_is_scoped():
    before = keras.config.dtype_policy().name
    with dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before


def test_the_mixed_policy_applies_to_the_built_layers():
    recipe = Recipe(precision="mixed_bfloat16", image_size=32)
    data = recipes.load_data("digits", batch_size=32)
    model = recipes.training.build_from_recipe(recipe, data)
    conv = next(layer for layer in recipes.find_backbone(model).layers
                if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is back


@pytest.mark.slow
def test_a_mixed_bfloat16_run_is_mixed_and_trains(digits_small, tmp_path):
    x, y = digits_small
    data = recipes.load_data((x, y), batch_size=32, seed=0)
    result = recipes.train("mobilenet_v3_small", data, epochs=3, image_size=32, precision="mixed_bfloat16",
                           steps_per_execution=2, precise_bn=False, patience=None, out=tmp_path / "run",
                           verbose=0)
    model = result.model
    conv = next(layer for layer in recipes.find_backbone(model).layers
                if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the global policy is back
    assert result.metrics["speed"] == {"precision": "mixed_bfloat16", "jit_compile": False,
                                       "steps_per_execution": 2, "grappler": False}
    assert Recipe.load(tmp_path / "run" / "recipe.json").precision == "mixed_bfloat16"
    assert len(result.history["loss"]) == 3 and len(result.history["learning_rate"]) == 3
    probabilities = model.predict(x[:64], verbose=0)
    assert probabilities.dtype == np.float32
    # It learns in bfloat16: the training loss falls and training accuracy is far above chance
    # (test accuracy needs BatchNorm statistics that 24 steps cannot settle; see the slow test).
    assert result.history["loss"][-1] < 0.7 * result.history["loss"][0]
    assert result.history["accuracy"][-1] > 5 / data.num_classes


@pytest.mark.slow
def test_a_mixed_bfloat16_run_reaches_a_sane_test_accuracy():
    result = recipes.train(epochs=6, precision="mixed_bfloat16", verbose=0)  # bare train on digits
    assert result.metrics["test_accuracy"] > 0.9


def test_precision_of_a_built_model_must_match(digits_small):
    x, y = digits_small
    model = recipes.build_classifier("mobilenet_v3_small", 10, input_shape=(8, 8, 1), image_size=32)
    with pytest.raises(ValueError, match="dtype policy 'float32'"):
        recipes.train(model, (x, y), epochs=1, precision="mixed_bfloat16")
