"""Data sources and pipelines: `load_data` returns a `Data` of train/validation/test tf.data pipelines.

- `core`: `Data`, `load_data` (the dispatcher), stratified splits, pipelines.
- `arrays`: numpy arrays, scikit-learn's digits, IDX files (`read_idx`).
- `folders`: image folders. `tfds`: tensorflow-datasets.
"""

from .arrays import read_idx
from .core import DEFAULT_DATASET, Data, describe_source, load_data

__all__ = ["DEFAULT_DATASET", "Data", "describe_source", "load_data", "read_idx"]
