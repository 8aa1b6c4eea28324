"""What the `recipes` command decides before TensorFlow is imported: which CPU kernels to use.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it is imported; setting it later changes
nothing (BENCHMARKS.md, issue 11). oneDNN's kernels are the faster ones for every model measured
but the smallest: for `mobilenet_v3_small` at 32 px, TensorFlow's own (Eigen) kernels made the
default job's training step 30-34 % cheaper on both CPUs measured (Intel Xeon, AMD EPYC), and
at 40 px 20-34 % cheaper (the EPYC was faster with them at 48 and 64 px too, the Xeon was not
measured there), while mobilenet_v2, efficientnet_b0 and resnet50 got 1.2-3.4x slower. A Python
user imports TensorFlow before any recipe exists, so only the console program can choose:
`recipes/__init__` calls `choose_cpu_kernels()` before it imports Keras. It acts only in the
`recipes` program (or `python -m recipes.cli`), for `train` and `bag`, when the recipe's backbone
and image side are in `EIGEN_FASTER`, and when the user has not set `TF_ENABLE_ONEDNN_OPTS` (theirs
always wins). Runs record the kernels they used in `metrics.json` (`speed.onednn`):
TensorFlow's own answer, since its default depends on the CPU (an AVX2-only AMD EPYC started
without oneDNN unless the flag said 1; there the command's choice changes nothing).

This module imports nothing heavy: it runs before TensorFlow.

Example:
    >>> choose_cpu_kernels(["train"], program="recipes", environ={}, modules={})
    'eigen'
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import struct
import sys
from pathlib import Path

__all__ = ["EIGEN_FASTER", "ONEDNN_FLAG", "choose_cpu_kernels", "onednn_enabled", "remember_flag"]

#: TensorFlow's switch, read when TensorFlow is imported.
ONEDNN_FLAG = "TF_ENABLE_ONEDNN_OPTS"

#: Backbone -> largest image side (px) at which TensorFlow's own CPU kernels trained faster than
#: oneDNN's on both CPUs measured (`benchmarks/onednn_steps.py`, BENCHMARKS.md).
EIGEN_FASTER = {"mobilenet_v3_small": 40}

#: `onednn_enabled()` when TensorFlow was imported (`remember_flag`; None: not yet).
_at_import = None

#: The commands that decide: they train one recipe's model in this process.
_COMMANDS = ("train", "bag")

#: Image sides of the built-in sources that need no TensorFlow to know.
_KNOWN_SIDES = {"digits": 8}


def choose_cpu_kernels(argv=None, *, program=None, environ=None, modules=None) -> str | None:
    """Sets `TF_ENABLE_ONEDNN_OPTS=0` for a `recipes train`/`bag` whose model is in `EIGEN_FASTER`.

    Args:
        argv: The command line without the program name (default: `sys.argv[1:]`).
        program: The program's path (default: `sys.argv[0]`, or `recipes` for `python -m
            recipes.cli`); only `recipes` decides.
        environ: The environment to read and change (default: `os.environ`).
        modules: The imported modules (default: `sys.modules`); with `tensorflow` among them
            it is too late to choose.

    Returns:
        `"eigen"` when it set the flag, else None (another program or command, a flag the user
        set, TensorFlow already imported, a model or image side not in `EIGEN_FASTER`, or a
        command line that does not parse: `main` parses it again and reports the error).

    Example:
        >>> env = {}
        >>> choose_cpu_kernels(["train", "--backbone", "resnet50"], program="recipes", environ=env,
        ...                    modules={})
        >>> env
        {}
    """
    environ = os.environ if environ is None else environ
    if program is None:
        program, line = _command_line()
        argv = line if argv is None else argv
    argv = list(sys.argv[1:] if argv is None else argv)
    modules = sys.modules if modules is None else modules
    if "tensorflow" in modules:
        return None
    if Path(program).stem != "recipes" or ONEDNN_FLAG in environ:
        return None
    if not argv or argv[0] not in _COMMANDS or {"-h", "--help"} & set(argv):
        return None
    recipe = _recipe_of(argv)
    if recipe is None or recipe.backbone not in EIGEN_FASTER:
        return None
    side = recipe.image_size
    if side is None:
        source_side = _source_side(recipe.dataset)
        if source_side is None:
            return None
        side = recipe.image_size_for((source_side, source_side, 1))
    if side > EIGEN_FASTER[recipe.backbone]:
        return None
    if "tensorflow" in modules:
        # Parsing imported TensorFlow (a Recipe check that imports Keras): the flag would come
        # too late and metrics.json would record kernels the run does not use.
        return None
    environ[ONEDNN_FLAG] = "0"
    return "eigen"


def onednn_enabled(environ=None) -> bool | None:
    """Whether TensorFlow runs oneDNN's CPU kernels.

    Args:
        environ: The environment to read (default: what TensorFlow itself said when `recipes`
            imported it, `remember_flag()`; else `os.environ`). TensorFlow reads the flag only
            at import, so later changes do nothing.

    Returns:
        False when `TF_ENABLE_ONEDNN_OPTS` is "0" or "false" (any case), True for any other
        value; unset, TensorFlow's own default, which depends on the CPU (None while
        TensorFlow is not imported).

    Example:
        >>> onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": "0"})
        False
    """
    if environ is None and _at_import is not None:
        return _at_import
    value = (os.environ if environ is None else environ).get(ONEDNN_FLAG)
    if value is None:
        from .compat import tensorflow_onednn

        return tensorflow_onednn()
    return value.strip().lower() not in ("0", "false")


def remember_flag() -> None:
    """Keeps what TensorFlow runs now; `recipes/__init__` calls it right after importing it."""
    global _at_import
    from .compat import tensorflow_onednn

    _at_import = tensorflow_onednn()  # None (TensorFlow not imported): onednn_enabled reads the flag


def _command_line():
    """(program, arguments) of this process; `python -m recipes.cli ARGS` counts as `recipes`.

    While `-m` imports the package, `sys.argv[0]` is "-m" and the arguments are only in
    `sys.orig_argv`.
    """
    if sys.argv[:1] == ["-m"]:
        line = list(getattr(sys, "orig_argv", []))
        if "-m" in line[:-1] and line[line.index("-m") + 1] in ("recipes.cli", "recipes.cli.__main__"):
            return "recipes", line[line.index("-m") + 2:]
    return sys.argv[0] if sys.argv else "", sys.argv[1:]


def _recipe_of(argv):
    """The Recipe `recipes train ARGV` would start from, or None when the line does not parse."""
    import importlib

    from .cli.args import CommandParser, recipe_from_args

    parser = CommandParser(prog="recipes")  # only the deciding commands: the others import Keras
    sub = parser.add_subparsers(dest="command", parser_class=CommandParser)
    for name in _COMMANDS:
        importlib.import_module(f"{__package__}.cli.{name}").add_parser(sub)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return recipe_from_args(parser.parse_args(argv))
        except (SystemExit, ValueError):
            return None


def _source_side(dataset) -> int | None:
    """The image side of `digits` or of an `idx:` folder's images (read from its header)."""
    if not isinstance(dataset, str):
        return None
    if dataset in _KNOWN_SIDES:
        return _KNOWN_SIDES[dataset]
    if not dataset.startswith("idx:"):
        return None
    root = Path(dataset[4:]).expanduser()
    files = sorted(root.glob("*idx3-ubyte*")) if root.is_dir() else []
    if not files:
        return None
    opener = gzip.open if files[0].suffix == ".gz" else open
    try:
        with opener(files[0], "rb") as f:
            head = f.read(16)
        magic, _, rows, cols = struct.unpack(">4I", head)
    except (OSError, struct.error):
        return None
    return max(rows, cols) if magic == 0x803 else None
