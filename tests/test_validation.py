"""recipes.validation: the one wording of argument errors."""

import math

import pytest

from recipes import validation as v


def test_closest_matches_best_first_and_prefix_fallback():
    assert v.closest_matches("resnet5", ["vgg16", "resnet50", "resnet101"])[0] == "resnet50"
    assert v.closest_matches("efficient", ["efficientnet_b0", "vgg16"]) == ["efficientnet_b0"]
    assert v.closest_matches("zzz", ["vgg16"]) == []


def test_unknown_names_what_was_received_and_allowed():
    err = v.unknown("optimizer", "adamm", ["sgd", "adam"])
    assert str(err) == ("Unknown optimizer; Received: optimizer='adamm'. Did you mean: adam? "
                        "Allowed: sgd, adam")


@pytest.mark.parametrize(
    "kwargs,value,message",
    [
        (dict(low=0), -1, "x must be a number >= 0; Received: x=-1"),
        (dict(low=0, low_open=True), 0, "x must be a number > 0; Received: x=0"),
        (dict(low=0, high=1), 1, r"x must be a number in \[0, 1\); Received: x=1"),
        (dict(low=0, high=1, high_open=False), 1.5, r"x must be a number in \[0, 1\]"),
        (dict(low=1, integer=True), 2.5, "x must be an int >= 1; Received: x=2.5"),
        (dict(), math.nan, r"x must be a number \(finite\); Received: x=nan"),
        (dict(), True, "x must be a number"),
        (dict(), "3", "x must be a number"),
    ],
)
def test_check_number_messages(kwargs, value, message):
    with pytest.raises(ValueError, match=message):
        v.check_number("x", value, **kwargs)


def test_check_number_passes_good_values_through():
    assert v.check_number("x", 0.5, 0, 1) == 0.5
    assert v.check_int("n", 3, 1) == 3
    assert v.check_number("x", None, 0, allow_none=True) is None
    assert v.check_choice("s", None, ("a",), allow_none=True) is None


@pytest.mark.parametrize(
    "policy,parsed",
    [("all", ("all", None)), ("none", ("none", None)), (3, ("count", 3)), ("top:4", ("count", 4)),
     ("top:25%", ("percent", 25.0)), ("re:^conv5_", ("regex", "^conv5_")), ("13", ("block", "13"))],
)
def test_unfreeze_policy_syntax(policy, parsed):
    assert v.parse_unfreeze_policy(policy) == parsed


@pytest.mark.parametrize("policy", ["top:0", "top:150%", "re:(", "re:", "", 0, True, 1.5])
def test_bad_unfreeze_policies(policy):
    with pytest.raises(ValueError, match="unfreeze"):
        v.parse_unfreeze_policy(policy)
