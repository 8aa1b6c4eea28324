"""The `recipes` command line: one module per command, Recipe flags generated from its fields.

Each module in `COMMANDS` defines `add_parser(subparsers)` and the function the command runs.
They are all imported when the parser is built, with nothing caught: a broken command module is
an error, never a command that quietly disappears.

Example:
    >>> from recipes.cli import main
    >>> main(["train", "--epochs", "1", "--out", "runs/digits"])
    0
"""

from __future__ import annotations

import importlib
import os
import sys

from .args import CommandParser

__all__ = ["COMMANDS", "build_parser", "main"]

#: The command modules, in the order `recipes --help` lists them.
COMMANDS = (
    "list_backbones", "train", "fine_tune", "weights", "tune", "find_lr", "bench", "preview",
    "evaluate", "calibrate", "predict", "export", "explain", "ensemble", "bag", "ablate",
)


def build_parser() -> CommandParser:
    """The argparse parser of `recipes` with every command in `COMMANDS`.

    Raises:
        ImportError: A command module that cannot be imported (never swallowed).
    """
    parser = CommandParser(
        prog="recipes",
        description="Keras image-classification recipes: build, train, fine-tune, tune, measure.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the `recipes` console script.

    Args:
        argv: Arguments without the program name (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 done, 1 failed (weights unavailable, search failed), 2 bad arguments
        (one line on stderr: `recipes <command>: error: ...`), 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..weights import WeightsUnavailableError

    try:
        _switch_to_jax_for_workers(args, argv)
        return int(args.func(args) or 0)
    except ValueError as exc:
        print(f"recipes {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except WeightsUnavailableError as exc:
        print(f"recipes {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to resume from the last finished epoch",
              file=sys.stderr)
        return 130


#: Set in the environment of a command re-executed on JAX (so that it never loops).
_REEXECUTED = "RECIPES_WORKERS_REEXECUTED"


def _switch_to_jax_for_workers(args, argv):
    """`--workers`: checks the worker flags, then runs the command on Keras' JAX backend.

    The backend is fixed when keras is first imported (here, already), so a command started on
    another backend re-executes itself (`python -m recipes.cli ...`, same arguments) with
    `KERAS_BACKEND=jax` in its environment.

    Raises:
        ValueError: Bad `--workers`/`--worker-index`, JAX not installed, or a re-executed
            command that still does not run on JAX.
    """
    workers, index = getattr(args, "workers", None), getattr(args, "worker_index", None)
    if workers is None and index is None:
        return
    import keras

    from ..distribute import check_jax_installed, check_workers

    check_workers(workers, index)
    check_jax_installed()
    backend = keras.backend.backend()
    if backend == "jax":
        return
    if os.environ.get(_REEXECUTED):
        raise ValueError("--workers needs Keras' JAX backend, but the re-executed command still "
                         f"runs on another (is keras.json overriding it?); Received: backend={backend!r}")
    argv = list(sys.argv[1:] if argv is None else argv)
    print(f"recipes {args.command}: --workers runs on Keras' JAX backend (not {backend}); "
          "restarting with KERAS_BACKEND=jax", file=sys.stderr, flush=True)
    sys.stdout.flush()
    env = {**os.environ, "KERAS_BACKEND": "jax", _REEXECUTED: "1"}
    os.execve(sys.executable, [sys.executable, "-m", "recipes.cli", *argv], env)


def _one_line(exc) -> str:
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
