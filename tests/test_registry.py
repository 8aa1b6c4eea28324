"""The registry is the single source of truth; these tests are table-driven over it."""

import keras
import numpy as np
import pytest

import recipes
from recipes.registry import PREPROCESSING_MODES, validate_alpha

CONTRACT = [
    "vgg16", "vgg19", "resnet50", "resnet101", "resnet152", "resnet50_v2", "resnet101_v2",
    "resnet152_v2", "inception_v3", "mobilenet", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", *[f"efficientnet_b{i}" for i in range(8)],
    "efficientnet_v2_b0", "efficientnet_v2_b1", "efficientnet_v2_b2", "efficientnet_v2_b3",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
]


def test_contract_names_present_and_sorted():
    names = recipes.list_backbones()
    assert names == sorted(names)
    assert set(CONTRACT) <= set(names)


@pytest.mark.parametrize("name", recipes.list_backbones())
def test_spec_is_consistent_with_keras(name):
    spec = recipes.backbone_info(name)
    assert spec.name == name
    assert callable(spec.get_builder())
    assert spec.preprocessing in PREPROCESSING_MODES
    assert spec.min_size <= spec.default_size
    assert spec.default_size in spec.weight_sizes or spec.alphas
    assert callable(spec.preprocess_input())


@pytest.mark.parametrize(
    "name,mode",
    [("vgg16", "caffe"), ("resnet152", "caffe"), ("resnet50_v2", "tf"), ("inception_v3", "tf"),
     ("mobilenet", "tf"), ("mobilenet_v2", "tf"), ("densenet121", "torch"),
     ("mobilenet_v3_small", "embedded"), ("efficientnet_b3", "embedded"),
     ("efficientnet_v2_s", "embedded")],
)
def test_preprocessing_mode_per_family(name, mode):
    assert recipes.backbone_info(name).preprocessing == mode


def test_default_sizes_follow_keras():
    sizes = {f"efficientnet_b{i}": s for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))}
    sizes.update(inception_v3=299, efficientnet_v2_s=384, efficientnet_v2_l=480, resnet50=224)
    for name, size in sizes.items():
        assert recipes.backbone_info(name).default_size == size
    assert recipes.backbone_info("inception_v3").min_size == 75


def test_keras_spellings_resolve():
    assert recipes.backbone_info("ResNet50V2").name == "resnet50_v2"
    assert recipes.backbone_info("EfficientNetB0").name == "efficientnet_b0"
    assert recipes.backbone_info("mobilenet-v2").name == "mobilenet_v2"


def test_unknown_name_lists_closest_matches():
    with pytest.raises(ValueError, match=r"Unknown backbone.*'resnet5'.*resnet50"):
        recipes.backbone_info("resnet5")
    with pytest.raises(ValueError, match="Did you mean: efficientnet_b7"):
        recipes.backbone_info("efficientnet_b9")


def test_alpha_validation_lists_allowed_values():
    spec = recipes.backbone_info("mobilenet_v2")
    assert validate_alpha(spec, 0.35) == 0.35
    assert validate_alpha(spec, None) == 1.0
    with pytest.raises(ValueError, match=r"alpha must be one of \[0.35, 0.5, 0.75, 1.0, 1.3, 1.4\]"):
        validate_alpha(spec, 0.3)
    with pytest.raises(ValueError, match="has no width multiplier"):
        validate_alpha(recipes.backbone_info("resnet50"), 0.5)


def test_count_params_matches_keras():
    spec = recipes.backbone_info("mobilenet")
    expected = keras.applications.MobileNet(
        include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.25
    ).count_params()
    assert spec.count_params(0.25) == expected
    assert spec.count_params(0.5) > expected


@pytest.mark.parametrize(
    "name,expected",
    [
        ("resnet50", ["conv1", "conv2", "conv3", "conv4", "conv5"]),
        ("efficientnet_b0", ["stem", *[f"block{i}" for i in range(1, 8)], "top"]),
        ("vgg16", [f"block{i}" for i in range(1, 6)]),
    ],
)
def test_block_names_from_built_backbone(name, expected):
    spec = recipes.backbone_info(name)
    model = spec.get_builder()(include_top=False, weights=None, input_shape=(32, 32, 3))
    assert spec.block_names([layer.name for layer in model.layers]) == expected


def test_inception_blocks_end_at_mixed_layers():
    spec = recipes.backbone_info("inception_v3")
    names = ["input", "conv2d", "mixed0", "conv2d_1", "mixed1"]
    assert spec.assign_blocks(names) == ["mixed0", "mixed0", "mixed0", "mixed1", "mixed1"]


def test_spec_to_dict_is_json_friendly():
    import json

    d = recipes.backbone_info("mobilenet").to_dict()
    assert json.loads(json.dumps(d))["alphas"] == [0.25, 0.5, 0.75, 1.0]
    assert np.isclose(d["default_size"], 224)
