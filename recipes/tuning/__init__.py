"""`search`: KerasTuner hyperparameter search over `Recipe`s, with resume, failures and distribution.

The search space keys are `Recipe` field names: every trial's hyperparameters become a `Recipe`
(`SearchResult.best_recipe` redoes the best trial with `recipes train --recipe`). A
`keras_tuner.HyperModel` builds with `recipes.build_classifier` and trains with `recipes.train`, or
with the two-phase `recipes.fine_tune` when `weights` is given (KerasTuner alone cannot fine-tune in
two phases). Everything else is KerasTuner's own machinery: its oracles (random, grid, Bayesian,
Hyperband), its project folder (resume), its failed-trial accounting, its objective directions and
its gRPC chief/worker distribution.

What this adds on top of KerasTuner:

- Resume is safe: the search arguments are stored in `<project>/search_args.json`; re-running with
  different ones raises instead of silently keeping the old ones (KerasTuner #234, #803, #143).
  `max_trials` may grow, to extend a finished search.
- A NaN loss fails the trial (`keras_tuner.errors.FailedTrialError`) instead of scoring it; out of
  memory and values that make no valid recipe fail it too; `max_consecutive_failed_trials`
  failures in a row stop the search with `SearchFailedError`. A `ValueError` while training is a
  bug, not a bad value: it stops the search at once.
- `isolate=True` trains each trial in a fresh Python process, so memory cannot grow across trials
  (KerasTuner #395, #873, #1031).
- `SearchResult`: the table of every trial (`results.csv`, `results.png`), the best recipe and
  model, `retrain` on train + validation, and `refine` (a narrower second search).

Modules: `space` (the search-space language and its defaults), `hypermodel` (`RecipeHyperModel`),
`isolate` (trials in a child process), `search` (`search`, the tuners, the resume guard), `result`
(`SearchResult`), `splits` (re-batched and merged splits).

Layers: `search` -> KerasTuner tuner -> `RecipeHyperModel.fit` -> `recipes.train` /
`recipes.fine_tune` -> `keras.Model.fit`.
"""

from .hypermodel import RecipeHyperModel
from .result import SearchResult
from .search import TUNERS, SearchFailedError, search
from .space import SEARCHABLE_FIELDS, resolve_search_space

__all__ = [
    "TUNERS",
    "SEARCHABLE_FIELDS",
    "RecipeHyperModel",
    "SearchFailedError",
    "SearchResult",
    "resolve_search_space",
    "search",
]
