"""What the `recipes` commands share: Recipe flags generated from the fields, the data, run folders.

Every Recipe field is a flag, generated from its `dataclasses.field` metadata (help, kind, group,
flag, aliases, nullable, choices, cli), so a new field is on the command line without touching
this package. Each flag defaults to None, meaning "not given": the field then comes from
`--recipe FILE`, else from `--preset NAME` (or the command's own preset), else from `Recipe()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from ..config import Recipe
from ..presets import AUTO, PRESET_DOCS, PRESETS, SMALL_DATA_PER_CLASS, check_preset_needs

__all__ = [
    "EXPLICIT_NONE",
    "CommandParser",
    "add_recipe_arguments",
    "add_worker_arguments",
    "flags_of",
    "explicit_fields",
    "recipe_from_args",
    "data_from_args",
    "default_out",
    "verbosity",
]

_NONE_WORDS = ("none", "null")


class _ExplicitNone:
    """`--field none`: set the field to None (a flag not given is plain None)."""

    def __repr__(self):
        return "none"


#: What a nullable flag parses `none`/`null` to; `recipe_from_args` turns it into None.
EXPLICIT_NONE = _ExplicitNone()


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (`recipes train: error: ...`), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _ints(text):
    text = text.strip()
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated ints such as 256,128 (or none); Received: {text!r}"
        ) from None


def auto_bool(text):
    word = text.strip().lower()
    if word == "auto":
        return "auto"
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto, true or false; Received: {text!r}")


def auto_int(text):
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an int; Received: {text!r}") from None


_PARSERS = {"str": str, "policy": str, "int": int, "float": float, "ints": _ints,
            "auto_bool": auto_bool, "auto_int": auto_int}
_METAVARS = {"int": "N", "float": "X", "ints": "N,N", "policy": "POLICY",
             "auto_bool": "{auto,true,false}", "auto_int": "{auto,N}"}


def _converter(kind, nullable):
    parse = _PARSERS[kind]

    def convert(text):
        if nullable and text.strip().lower() in _NONE_WORDS:
            return EXPLICIT_NONE
        return parse(text)

    # argparse words a failed conversion with the name: "invalid int value: 'x'".
    convert.__name__ = "ints" if kind == "ints" else parse.__name__
    return convert


def flags_of(field) -> list[str]:
    """The option strings of a Recipe field: its flag (default `--field-name`), then its aliases.

    Example:
        >>> flags_of(next(f for f in dataclasses.fields(Recipe) if f.name == "learning_rate"))
        ['--learning-rate', '--lr']
    """
    meta = field.metadata
    return [meta.get("flag") or "--" + field.name.replace("_", "-"), *meta.get("aliases", ())]


def _shown(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def _argument(field, default) -> dict:
    meta = field.metadata
    kind = meta["kind"]
    text = meta["help"]
    if kind == "policy":
        text += " (here digits are a block name, as in MobileNet v1; a count is top:N)"
    if meta.get("nullable") and "none" not in text.lower():
        text += "; none accepted"
    if default is not None and "default" not in text:
        text += f" (default: {_shown(default)})"
    kwargs = {"dest": field.name, "default": None, "help": text.replace("%", "%%")}
    if kind == "bool":
        kwargs["action"] = argparse.BooleanOptionalAction
        return kwargs
    kwargs["type"] = _converter(kind, meta.get("nullable", False))
    if meta.get("choices"):
        # Shown, not enforced by argparse: the Recipe's check says "Did you mean ...".
        kwargs["metavar"] = "{" + ",".join(meta["choices"]) + "}"
    elif kind in _METAVARS:
        kwargs["metavar"] = _METAVARS[kind]
    return kwargs


def add_recipe_arguments(parser, *, base=None, exclude_groups=(), only=None):
    """Adds a flag for every Recipe field (grouped as in the metadata), `--recipe`, `--preset`
    and `--data-dir` to an argparse parser.

    Args:
        parser: The command's parser.
        base: The Recipe whose values the help shows as defaults (default `Recipe()`).
        exclude_groups: Metadata groups left out (e.g. `("fine-tuning",)` for `train`).
        only: Field names to add, leaving out the rest (default: every field with `cli`).

    Returns:
        The parser.

    Example:
        >>> parser = CommandParser(prog="recipes train")
        >>> add_recipe_arguments(parser, exclude_groups=("fine-tuning",))
        >>> recipe_from_args(parser.parse_args(["--lr", "0.01", "--no-flip"])).flip
        False
    """
    base = base if base is not None else Recipe()
    groups = {}
    for field in dataclasses.fields(Recipe):
        meta = field.metadata
        if not meta.get("cli", True) or meta["group"] in exclude_groups:
            continue
        if only is not None and field.name not in only:
            continue
        if meta["group"] not in groups:
            groups[meta["group"]] = parser.add_argument_group(f"{meta['group']} (recipe fields)")
        groups[meta["group"]].add_argument(*flags_of(field), **_argument(field, getattr(base, field.name)))
    g = parser.add_argument_group("recipe and data")
    source = g.add_mutually_exclusive_group()
    source.add_argument("--recipe", metavar="FILE",
                        help="start from a recipe.json (e.g. an earlier run's); flags override it")
    names = (AUTO, *PRESETS)
    source.add_argument(
        "--preset", choices=names, metavar="{" + ",".join(names) + "}",
        help=("start from a named recipe; flags override it (default auto: chosen by the "
              f"training split's size, small-data at most {SMALL_DATA_PER_CLASS} images per "
              "class). " + "; ".join(f"{k}: {doc}" for k, doc in PRESET_DOCS.items() if k != "default")
              ).replace("%", "%%"))
    g.add_argument("--data-dir", help="tensorflow-datasets data folder (for tfds:<name>)")
    return parser


def add_worker_arguments(parser):
    """Adds `--workers` and `--worker-index` (training on several machines, JAX backend).

    They are not Recipe fields: the same recipe redoes a run on one machine or on several.
    `recipes.cli.main` checks them and switches to the JAX backend before the command runs.

    Returns:
        The parser.
    """
    g = parser.add_argument_group("several machines (Keras' JAX backend)")
    g.add_argument(
        "--workers", metavar="HOST:PORT,...",
        help="train on several machines: every worker's host:port, worker 0 (the coordinator, "
        "which writes the run folder) first; run the same command on every machine with its "
        "own --worker-index; --batch-size is the global batch. Runs on Keras' JAX backend "
        "(pip install \"keras-recipes[jax]\")",
    )
    g.add_argument("--worker-index", type=int, metavar="I",
                   help="this machine's position in --workers (0 to N-1)")
    return parser


def explicit_fields(args) -> dict:
    """The Recipe fields given on the command line, `none` as None.

    Example:
        >>> explicit_fields(parser.parse_args(["--epochs", "3", "--schedule", "none"]))
        {'schedule': None, 'epochs': 3}
    """
    given = {}
    for name in Recipe.field_names():
        value = getattr(args, name, None)
        if value is not None:
            given[name] = None if value is EXPLICIT_NONE else value
    return given


def recipe_from_args(args, *, preset=AUTO, changes=None) -> Recipe:
    """The Recipe the command line describes: explicit flags over `--recipe FILE` over the preset.

    Args:
        args: Parsed arguments of a parser with `add_recipe_arguments`.
        preset: The base when neither `--recipe` nor `--preset` is given (default "auto":
            `Recipe()`, its preset chosen for the data when it is loaded; `fine-tune` passes
            "fine-tune").
        changes: Fields a command sets itself, applied with the flags (default none).

    Returns:
        A validated `Recipe`.

    Raises:
        ValueError: A missing or bad recipe file, or a bad value (what was received and what is
            allowed).

    Example:
        >>> recipe_from_args(parser.parse_args(["--preset", "fine-tune", "--epochs", "3"])).epochs
        3
    """
    recipe_file = getattr(args, "recipe", None)
    if recipe_file:
        try:
            base = Recipe.load(recipe_file)
        except ValueError as exc:  # a bad value inside the file: say which file
            text = str(exc)
            raise ValueError(text if recipe_file in text
                             else f"{text} (in the recipe file {recipe_file!r})") from None
    else:
        base = Recipe.preset(getattr(args, "preset", None) or preset)
    given = explicit_fields(args)
    try:
        recipe = base.replace(**{**(changes or {}), **given})
        check_preset_needs(recipe.preset_name, recipe)  # before the data is read
        return recipe
    except ValueError as exc:
        raise ValueError(_with_flag(str(exc), given)) from None


def _with_flag(message: str, given: dict) -> str:
    """Appends the command-line flag to a Recipe error about a field given as a flag
    ("learning_rate must be ..." becomes "... (flag --learning-rate/--lr)")."""
    fields = {f.name: f for f in dataclasses.fields(Recipe)}
    for name in given:
        if name in fields and (message.startswith(f"{name} ") or f"{name}=" in message):
            return f"{message} (flag {'/'.join(flags_of(fields[name]))})"
    return message


def data_from_args(args, recipe: Recipe):
    """Loads the recipe's dataset with its splits, seed and batch size (and `--data-dir`).

    Returns:
        A `recipes.Data`.

    Raises:
        ValueError: An unknown or unreadable source.
    """
    from ..training import prepare_data

    _, data = prepare_data(recipe, None, data_dir=getattr(args, "data_dir", None))
    return data


def report_skipped(data, out) -> None:
    """Prints one line when the loader skipped unreadable files (train lists them in the run)."""
    skipped = getattr(data, "skipped", None)
    if skipped:
        from ..training import SKIPPED_FILE

        where = f"listed in {Path(out) / SKIPPED_FILE}" if out else "see Data.skipped"
        print(f"skipped {len(skipped)} unreadable file(s) ({where})", flush=True)


def default_out(recipe: Recipe, suffix: str = "") -> str:
    """`runs/<dataset>_<backbone><suffix>`, the dataset reduced to a file-name-safe tag.

    Example:
        >>> default_out(Recipe(dataset="idx:data/mnist"), "_finetune")
        'runs/mnist_mobilenet_v3_small_finetune'
    """
    tag = re.sub(r"[^A-Za-z0-9]+", "_", str(recipe.dataset).split("/")[-1] or "data").strip("_")
    return f"runs/{tag or 'data'}_{recipe.backbone}{suffix}"


def verbosity() -> int:
    """Keras `fit` verbosity: a progress bar on a terminal, one line per epoch in logs (CI, nohup)."""
    return 1 if sys.stdout.isatty() else 2
