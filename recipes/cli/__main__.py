"""`python -m recipes.cli`: the `recipes` console script."""

import sys

from . import main

sys.exit(main())
