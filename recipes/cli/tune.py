"""`recipes tune`: the command line of `recipes.search`, including distributed chief/worker runs.

Distributed tuning is KerasTuner's own: `--chief` sets `KERASTUNER_TUNER_ID=chief`, and
`KERASTUNER_ORACLE_IP`/`KERASTUNER_ORACLE_PORT` to the address it serves the oracle on;
`--worker ID` sets them to the chief's address and a worker id. KerasTuner reads them when the
tuner is built.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..config import Recipe
from .args import add_recipe_arguments, data_from_args, explicit_fields, recipe_from_args

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  recipes tune --backbones mobilenet_v2,efficientnet_b0 --tuner hyperband --max-trials 10
  recipes tune --backbones mobilenet --alpha 0.25 --tuner random --max-trials 5 --max-epochs 3 \\
      --search-space '{"learning_rate": {"min": 1e-4, "max": 1e-1, "sampling": "log"}, "optimizer": "sgd"}'
  # distributed: one chief (serves the oracle, blocks until the search is done), any workers;
  # the chief listens on 127.0.0.1 unless --host says where (the oracle has no authentication)
  recipes tune --chief --host 10.0.0.1 --port 8000 --directory /shared/tuning ...
  recipes tune --worker 0 --chief-address 10.0.0.1:8000 --directory /shared/tuning ...
  # a shared --directory also carries the workers' heartbeats: a killed worker's trial is
  # given up (failed, or retried with --tuner-option max_retries_per_trial=1) and the chief ends;
  # a worker on another machine counts as dead after RECIPES_WORKER_TIMEOUT s (default 120)

--search-space takes JSON (or @file.json): a list is a choice, a single value fixes the field,
{"min", "max"[, "step", "sampling", "default"]} is a range, {"values": [...], "default": x} a
choice with a default. Keys are recipe field names. Recipe flags, and the fields --recipe or
--preset set, are fixed for every trial. Re-run the same command to resume.
"""


def add_parser(subparsers):
    """Adds `recipes tune`."""
    p = subparsers.add_parser(
        "tune", help="search recipes with KerasTuner (resumable, distributed)",
        description="Hyperparameter search over recipes with KerasTuner. Recipe flags "
        "(--optimizer, --alpha, --dropout, ...) fix that field for every trial.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s = p.add_argument_group("search")
    s.add_argument("--backbones", help="comma-separated backbone names (default: mobilenet_v2)")
    s.add_argument("--tuner", default="hyperband", help="random | grid | bayesian | hyperband (default)")
    s.add_argument("--max-trials", type=int, default=20, help="default 20")
    s.add_argument("--max-epochs", type=int, default=10,
                   help="epochs per trial; Hyperband's maximum (default 10)")
    s.add_argument("--objective", default="val_accuracy", help="default val_accuracy")
    s.add_argument("--search-space", help="JSON or @file.json with search-space overrides")
    s.add_argument("--directory", default="tuning", help="tuning projects folder (default: tuning)")
    s.add_argument("--project", help="project name (default: <dataset>_<tuner>)")
    s.add_argument("--overwrite", action="store_true", help="delete an existing project and start over")
    s.add_argument("--executions-per-trial", type=int, default=1)
    s.add_argument("--max-failures", type=int, default=3,
                   help="failed trials in a row that stop the search (default 3)")
    s.add_argument("--isolate", action="store_true", help="run every trial in a fresh process")
    s.add_argument("--tuner-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra KerasTuner tuner argument, e.g. factor=2 (repeatable)")
    d = p.add_argument_group("distributed (KerasTuner chief/worker over gRPC)")
    role = d.add_mutually_exclusive_group()
    role.add_argument("--chief", action="store_true", help="serve the oracle; blocks until done")
    role.add_argument("--worker", metavar="ID", help="run trials for the chief at --chief-address")
    d.add_argument("--host", help="chief: address to listen on (default 127.0.0.1: this machine "
                   "only; the oracle has no authentication, so give a private address for other "
                   "machines, never a public one)")
    d.add_argument("--port", type=int, help="chief: port to listen on")
    d.add_argument("--chief-address", metavar="HOST:PORT", help="worker: the chief's address")
    add_recipe_arguments(p)
    p.set_defaults(func=run)
    return p


def _parse_search_space(text):
    if text is None:
        return None
    source = "--search-space"
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ValueError(f"--search-space file not found; Received: {text!r}")
        source, text = str(path), path.read_text()
    try:
        space = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source} is not valid JSON ({exc}); Received: {text[:200]!r}") from None
    if not isinstance(space, dict):
        raise ValueError(f"{source} must be a JSON object of field: spec; Received: {text[:200]!r}")
    return space


def _parse_options(items):
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--tuner-option takes KEY=VALUE; Received: {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def fixed_fields(args, recipe: Recipe) -> dict:
    """The fields fixed for every trial: those given as flags, and those the `--recipe` file or
    `--preset` sets to something other than `Recipe()`'s value."""
    given = explicit_fields(args)
    fixed = {name: getattr(recipe, name) for name in given}
    # A preset's step budget would override the epochs the tuner gives each trial: the tuner
    # decides epochs unless --train-steps is given.
    fixed.update({name: getattr(recipe, name) for name in recipe.diff(Recipe())
                  if name in given or name not in ("train_steps", "epoch_passes")})
    return fixed


#: Where the chief listens without --host: this machine only.
DEFAULT_HOST = "127.0.0.1"


def exposure(host: str) -> str | None:
    """Why listening on `host` exposes the unauthenticated oracle, or None (loopback or a
    private network address)."""
    import ipaddress
    import socket

    if host in ("", "0.0.0.0", "::", "*"):
        return "every network interface"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, ValueError):
            return "an address that could not be checked"
    if address.is_loopback or address.is_private or address.is_link_local:
        return None
    return "a public address"


def _set_role(args):
    """Sets KerasTuner's distribution environment variables for --chief / --worker."""
    if args.chief:
        if args.port is None:
            raise ValueError("--chief needs --port (the port workers connect to)")
        args.host = args.host or DEFAULT_HOST
        exposed = exposure(args.host)
        if exposed:
            print(f"recipes tune: warning: the chief serves the oracle on {args.host}:{args.port}, "
                  f"{exposed}, without authentication: whoever reaches the port can read and steer "
                  "the search. Prefer 127.0.0.1 (the default) or a private address behind a "
                  "firewall.", file=sys.stderr, flush=True)
        os.environ.update(
            KERASTUNER_TUNER_ID="chief", KERASTUNER_ORACLE_IP=args.host,
            KERASTUNER_ORACLE_PORT=str(args.port),
        )
        return "chief"
    if args.worker is not None:
        host, sep, port = (args.chief_address or "").rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"--worker needs --chief-address HOST:PORT; Received: {args.chief_address!r}"
            )
        if args.host is not None:
            raise ValueError(f"--host goes with --chief; a worker connects to --chief-address; "
                             f"Received: --host {args.host} with --worker")
        worker_id = f"worker{args.worker}" if args.worker.isdigit() else args.worker
        if "chief" in worker_id:
            raise ValueError(f"A worker id must not contain 'chief'; Received: --worker {args.worker}")
        os.environ.update(
            KERASTUNER_TUNER_ID=worker_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port,
        )
        return worker_id
    if args.chief_address or args.port is not None:
        raise ValueError("--port goes with --chief, --chief-address with --worker")
    if args.host is not None:
        raise ValueError(f"--host goes with --chief (the address it listens on); Received: "
                         f"--host {args.host} without --chief")
    return None


def run(args) -> int:
    """Runs (or joins) the search, then prints the trials and where the best recipe is."""
    from ..tuning import SearchFailedError, search

    if args.epochs is not None:
        raise ValueError("tune takes --max-epochs (epochs per trial), not --epochs")
    # Fixed fields (alpha, weights ...) are checked against the first backbone searched.
    first = (args.backbones or "").split(",")[0].strip() or None
    recipe = recipe_from_args(args, changes={"backbone": first} if first else None)
    fixed = fixed_fields(args, recipe)
    fixed.pop("epochs", None)  # from a --recipe file: the search sets epochs itself
    fixed.pop("dataset", None)  # the data is loaded here, with the recipe's splits
    backbones = args.backbones or fixed.pop("backbone", None) or "mobilenet_v2"
    fixed.pop("backbone", None)
    seed = fixed.pop("seed", recipe.seed)
    weights = fixed.pop("weights", None)
    space = _parse_search_space(args.search_space)
    options = _parse_options(args.tuner_option)
    role = _set_role(args)
    data = data_from_args(args, recipe)
    if role == "chief":
        print(f"chief: serving the oracle on {args.host}:{args.port} until the search is done",
              flush=True)
    else:
        print(f"tuning {backbones} on {data.source} ({args.tuner}, up to {args.max_trials} trials "
              f"of {args.max_epochs} epoch(s)); fixed: {fixed or 'nothing'}", flush=True)
    try:
        result = search(
            data, backbones=backbones, tuner=args.tuner, max_trials=args.max_trials,
            max_epochs=args.max_epochs, objective=args.objective, search_space=space,
            weights=weights, directory=args.directory, project_name=args.project,
            overwrite=args.overwrite, executions_per_trial=args.executions_per_trial, seed=seed,
            isolate=args.isolate, tuner_options=options,
            max_consecutive_failed_trials=args.max_failures, **fixed,
        )
    except SearchFailedError as exc:
        print(f"recipes tune: error: {exc}", flush=True)
        return 1
    if role not in (None, "chief"):
        mine = [r["trial"] for r in result.table() if r.get("worker") == role]
        print(f"{role}: done; ran trial(s) {', '.join(mine) or 'none'}", flush=True)
        return 0
    print(result.summary())
    try:
        best = f"best {result.objective}={result.best_score:.4f} (trial {result.best_trial_id})"
    except ValueError:
        best = "no completed trial"
    print(f"{best}; table: {result.project_dir / 'results.csv'}; "
          f"recipe: {result.project_dir / 'best_recipe.json'} (recipes train --recipe ...)")
    return 0
