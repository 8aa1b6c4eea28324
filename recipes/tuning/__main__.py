"""`python -m recipes.tuning --run-trial JOB.json`: the process of one isolated trial."""

import sys

from .isolate import run_trial_file

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--run-trial":
        sys.exit(run_trial_file(sys.argv[2]))
    print("usage: python -m recipes.tuning --run-trial JOB.json (used by isolate=True)", file=sys.stderr)
    sys.exit(2)
