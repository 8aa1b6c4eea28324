"""`recipes ablate`: what each training trick is worth on your data, with several seeds.

`ablate(study, data, seeds=3)` trains every row of a study (a Recipe change against the study's
baseline) once per seed, each run in its own folder (a re-run resumes and redoes nothing), and
writes `results.csv` (one row per run), `table.md` (mean ± std, the paired difference to the
baseline with its 95 % interval, a verdict) and `plot.png`. Studies: `study_names()`.

Example:
    >>> from recipes.ablate import ablate
    >>> ablate("dropout", "digits", seeds=3, epochs=3, out="ablations")
"""

from .report import markdown_table, paired_interval, summarize, verdict
from .runner import AblationResult, ablate
from .studies import STUDIES, Study, get_study, study_names

__all__ = ["ablate", "AblationResult", "STUDIES", "Study", "get_study", "study_names",
           "summarize", "paired_interval", "verdict", "markdown_table"]
