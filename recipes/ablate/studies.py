"""The ablation studies `recipes ablate` runs: each row is a change against the study's baseline.

Study and row names are a contract (scripts, BENCHMARKS.md and run folders use them). A row is
a dict of `Recipe` fields, except where a study needs what a Recipe does not hold; those rows
carry one `_`-prefixed key the runner interprets:

- `_fraction`: train on this fraction of the training split (a fixed stratified subsample, the
  same for every seed), validation and test untouched, for the same number of optimizer steps
  as the full split gets (`data_size`): with a fixed epoch count instead, a 10 % subset gets a
  tenth of the steps and measured at chance on digits (16 steps), a step-count effect, not a
  data-size one. A recipe with its own `train_steps` keeps it.
- `_activation`: the head's hidden Dense layer uses this activation (`activation`).
- `_members`, `_method`: an ensemble of the first N members of a pool trained with distinct
  seeds (`ensemble_size`, `ensemble_method`); `_method="distilled"` trains a student on the
  5-member average.
- `_pretrain`: the backbone first trains on a related source (`pretraining`): `"related"` on
  the first half of its classes (a similar task), `"larger"` on all of it; at least
  `runner.PRETRAIN_STEPS` steps, BatchNorm statistics recomputed at the end.
"""

from __future__ import annotations

import dataclasses

from .. import validation as v

__all__ = ["Study", "STUDIES", "get_study", "study_names", "BACKBONE_FAMILIES", "ENSEMBLE_POOL"]

#: One backbone per family the backbone study compares (from scratch, at the recipe's size).
BACKBONE_FAMILIES = ("mobilenet_v3_small", "mobilenet_v2", "efficientnet_b0", "resnet50",
                     "densenet121")

#: Members of the `ensemble_method` ensembles (the pool's first five).
ENSEMBLE_POOL = 5


@dataclasses.dataclass(frozen=True)
class Study:
    """One study: its rows (name -> changes) and which row the others are compared to.

    Attributes:
        name: The study's name (`recipes ablate NAME`).
        summary: One line for `--list`.
        rows: `{row name: changes}`, in table order.
        baseline: The row the differences are measured against.
        base: Changes every row of the study shares (e.g. no dropout for `regularization`).
        needs: What the study needs beyond the data: `"related"` (a related source) or "".
    """

    name: str
    summary: str
    rows: dict
    baseline: str
    base: dict = dataclasses.field(default_factory=dict)
    needs: str = ""

    def changes(self, row) -> dict:
        """The study's shared changes plus the row's."""
        return {**self.base, **self.rows[row]}


def _s(name, summary, rows, baseline, **kw):
    return Study(name, summary, dict(rows), baseline, **kw)


_AUG = ("rotation", "flip", "zoom", "brightness", "noise", "contrast")

STUDIES = {s.name: s for s in (
    _s("decay", "learning-rate schedules against a constant rate",
       [(n, {"schedule": n}) for n in ("constant", "step", "exponential", "time", "power", "cosine")],
       "constant"),
    _s("augmentation", "each augmentation alone, and the medium preset, against none",
       [("none", {"augmentation": None}), *((n, {"augmentation": n}) for n in _AUG),
        ("preset", {"augmentation": "medium"})], "none"),
    _s("dropout", "dropout rate before the classifier",
       [(f"{r:g}", {"dropout": r}) for r in (0.0, 0.2, 0.4, 0.6)], "0"),
    _s("optimizer", "optimizers at their default learning rates",
       [(n, {"optimizer": n}) for n in ("sgd", "adam", "adagrad", "rmsprop")], "sgd"),
    _s("regularization", "no regularization, L1, L2 (every kernel) or dropout 0.4",
       [("none", {}), ("l1", {"l1": 1e-5, "regularize_backbone": True}),
        ("l2", {"l2": 1e-4, "regularize_backbone": True}), ("dropout", {"dropout": 0.4})],
       "none", base={"dropout": 0.0}),
    _s("learning_rate", "Adam's peak learning rate",
       [(t, {"learning_rate": float(t)}) for t in ("1e-3", "1e-2", "1e-1")], "1e-3",
       base={"optimizer": "adam"}),
    _s("batch_size", "batch size (train seconds in results.csv)",
       [(str(b), {"batch_size": b}) for b in (8, 32, 128, 512)], "32"),
    _s("data_size", "fraction of the training split at the full split's step budget (a learning curve)",
       [(f"{f:g}", {"_fraction": f}) for f in (0.1, 0.25, 0.5, 1.0)], "1"),
    _s("activation", "activation of a 128-unit dense head layer",
       [(a, {"_activation": a}) for a in ("sigmoid", "relu", "tanh")], "relu",
       base={"dense_units": (128,)}),
    _s("ensemble_size", "averaged ensembles of 1, 5, 10, 20 members (distinct seeds)",
       [(str(n), {"_members": n, "_method": "average"}) for n in (1, 5, 10, 20)], "1"),
    _s("ensemble_method", f"one model; {ENSEMBLE_POOL} members voted, averaged, stacked; a "
       "student distilled from the average",
       [("single", {"_members": 1, "_method": "average"}),
        *((m, {"_members": ENSEMBLE_POOL, "_method": m}) for m in ("vote", "average", "stack")),
        ("distilled", {"_members": ENSEMBLE_POOL, "_method": "distilled"})], "single"),
    _s("pretraining", "from scratch, or the backbone pretrained on a related source "
       "(half its classes: a similar task; all of it: a larger dataset)",
       [("none", {}), ("related", {"_pretrain": "related"}), ("larger", {"_pretrain": "larger"})],
       "none", needs="related"),
    _s("backbone", "accuracy against measured inference ms per image, one backbone per family",
       [(b, {"backbone": b}) for b in BACKBONE_FAMILIES], BACKBONE_FAMILIES[0]),
)}


def study_names() -> list[str]:
    """The study names, in `--list` order."""
    return list(STUDIES)


def get_study(name) -> Study:
    """The study called `name`.

    Raises:
        ValueError: An unknown name (closest matches listed).
    """
    if name not in STUDIES:
        raise v.unknown("study", name, list(STUDIES), arg="study")
    return STUDIES[name]


def recipe_changes(changes) -> dict:
    """The Recipe fields of a row's changes (without the runner's `_` keys)."""
    return {k: val for k, val in changes.items() if not k.startswith("_")}
