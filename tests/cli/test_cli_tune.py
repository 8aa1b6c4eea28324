"""`recipes tune`: what reaches `recipes.search` (a stand-in here; the search has its own tests)."""

import pytest

import recipes.tuning
from recipes.cli import main
from recipes.config import Recipe


@pytest.fixture
def calls(monkeypatch):
    """Replaces `recipes.search` with one that records its arguments and fails the search."""
    seen = []

    def fake_search(data, **kwargs):
        seen.append(dict(kwargs, data=data))
        raise recipes.tuning.SearchFailedError("stand-in search")

    monkeypatch.setattr(recipes.tuning, "search", fake_search)
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    return seen


def _fixed(call):
    """The Recipe fields passed as `**fixed` (seed and weights are arguments of `search`)."""
    return {k: v for k, v in call.items() if k in Recipe.field_names() and k not in ("seed", "weights")}


def test_flags_and_the_preset_fix_fields_for_every_trial(calls, tmp_path, capsys):
    code = main(["tune", "--preset", "fine-tune", "--optimizer", "sgd", "--no-flip",
                 "--augment", "none", "--validation-split", "0.25", "--backbones", "mobilenet",
                 "--max-epochs", "2", "--directory", str(tmp_path)])
    assert code == 1  # the stand-in fails the search: one error line, exit code 1
    assert "recipes tune: error: stand-in search" in capsys.readouterr().out
    (call,) = calls
    assert call["weights"] == "imagenet" and call["backbones"] == "mobilenet" and call["seed"] == 0
    assert call["max_epochs"] == 2 and call["directory"] == str(tmp_path)
    assert _fixed(call) == {
        "optimizer": "sgd", "flip": False, "augmentation": None, "validation_split": 0.25,
        "head_epochs": Recipe.preset("fine-tune").head_epochs, "warmup_epochs": 0,
        "preset_name": "fine-tune",
    }  # not epochs (the search sets them), nor dataset, backbone, seed, weights (arguments)
    assert call["data"].sizes["validation"] == round(1797 * 0.25)


def test_a_recipe_file_fixes_what_it_changes(calls, tmp_path):
    path = Recipe(dropout=0.4, epochs=3, backbone="mobilenet", alpha=0.25).save(tmp_path / "r.json")
    assert main(["tune", "--recipe", str(path), "--directory", str(tmp_path)]) == 1
    (call,) = calls
    assert call["backbones"] == "mobilenet" and call["weights"] is None
    assert _fixed(call) == {"dropout": 0.4, "alpha": 0.25}


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--chief"], "--chief needs --port"),
        (["--worker", "1"], "--chief-address HOST:PORT"),
        (["--worker", "chief1", "--chief-address", "h:1"], "must not contain 'chief'"),
        (["--port", "8000"], "--port goes with --chief"),
        (["--tuner-option", "factor"], "KEY=VALUE"),
        (["--search-space", "[1]"], "must be a JSON object"),
        (["--search-space", "@missing.json"], "file not found"),
    ],
)
def test_bad_tune_arguments_fail_before_the_search(argv, match, calls, capsys):
    assert main(["tune", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recipes tune: error:") and match in err
    assert calls == []
