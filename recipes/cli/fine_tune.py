"""`recipes fine-tune`: train a new head on a frozen pretrained backbone, then unfreeze."""

from __future__ import annotations

from ..config import Recipe
from ..presets import AUTO
from . import args as cli
from .train import (
    add_overwrite_argument,
    one_line_warnings,
    report_failure,
    run_failed,
    worker_text,
)

__all__ = ["add_parser", "run"]

#: The base recipe when neither --recipe nor --preset is given.
PRESET = "fine-tune"


def add_parser(subparsers):
    """Adds `recipes fine-tune` (every Recipe flag; defaults from the "fine-tune" preset)."""
    p = subparsers.add_parser(
        "fine-tune",
        help="transfer learning: train a new head, then unfreeze and fine-tune",
        description=(
            "Phase 1 trains a new head on the frozen pretrained backbone (--head-epochs at --lr); "
            "phase 2 unfreezes what --unfreeze selects and trains --epochs more at --fine-tune-lr. "
            "BatchNorm stays frozen in inference mode. One run folder, one history; re-run the "
            f"same command to resume. Fields not given come from the {PRESET!r} preset."
        ),
    )
    cli.add_recipe_arguments(p, base=Recipe.preset(PRESET))
    p.add_argument("--out", help="run folder (default: runs/<dataset>_<backbone>_finetune)")
    add_overwrite_argument(p)
    cli.add_worker_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Fine-tunes, then prints the test accuracies, what was unfrozen and the run folder."""
    from ..finetune import fine_tune
    from ..training import adapt_recipe

    recipe = cli.recipe_from_args(args, preset=PRESET)
    if not args.preset and not args.recipe:  # the preset's fields adapt to the data size
        recipe = recipe.replace(preset_name=AUTO)
    if recipe.weights is None:
        raise ValueError(
            "fine-tune needs pretrained weights (imagenet or a file from save_backbone); "
            "Received: weights=None. Use `recipes train` to train from scratch."
        )
    out = args.out or cli.default_out(recipe, "_finetune")
    data = cli.data_from_args(args, recipe)
    cli.report_skipped(data, out)
    recipe = adapt_recipe(recipe, data, base=Recipe.preset(PRESET), explicit=cli.explicit_fields(args))
    print(f"fine-tuning {recipe.backbone} ({recipe.weights}) on {recipe.dataset}: "
          f"{recipe.head_epochs} head epoch(s), then {recipe.epochs} with {recipe.unfreeze} "
          f"unfrozen, {worker_text(args, out)}", flush=True)
    try:
        with one_line_warnings(args):
            result = fine_tune(recipe.backbone, data, recipe=recipe, out=out,
                               verbose=cli.verbosity(), workers=args.workers,
                               worker_index=args.worker_index, overwrite=args.overwrite)
    except run_failed() as exc:
        return report_failure(args, exc)
    m = result.metrics

    def fmt(key):
        return f"{m[key]:.4f}" if key in m else "n/a"

    print(
        f"test accuracy: {fmt('test_accuracy')} (head only: {fmt('head_test_accuracy')})  "
        f"unfrozen layers: {m['unfrozen_layers']}  phase 2 from epoch {m['phase2_start_epoch'] + 1}  "
        f"run folder: {result.run_dir or 'written by worker 0'}"
    )
    return 0
