"""`ablate`: run one study (every row x every seed), one run folder per cell, then the report.

Layout under `out`: `<study>/<row>/seed<k>/` (a `train` run folder, or an ensemble's
`model.keras` + `metrics.json`), `<study>/_members/seed<k>/member<j>/` (the ensembles' shared
member pool), `<study>/_pretrain/<kind>/` (pretraining runs), and the outputs
`<study>/results.csv`, `<study>/table.md`, `<study>/plot.png`. A cell whose folder is finished
is read, not rerun, so an interrupted study resumes and a finished one redoes nothing.

Seeds: the data is loaded once, split with the recipe's seed (default 0), and that split is the
same for every cell; seed k (0, 1, ...) varies the weights, the shuffling and augmentation. So
the differences to the baseline are paired by seed.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from .. import validation as v
from ..config import Recipe
from ..presets import adapt_recipe
from ..run import RunFolder
from .report import METRIC, markdown_table, summarize
from .studies import get_study, recipe_changes

__all__ = ["ablate", "AblationResult", "CELL_FILE"]

#: Written in every cell: study, row, seed, changes, and what the cell measured.
CELL_FILE = "cell.json"


@dataclasses.dataclass
class AblationResult:
    """What `ablate` returns.

    Attributes:
        study: The study's name.
        rows: One dict per run (what `results.csv` holds).
        summary: One dict per study row (mean, std, diff, low, high, verdict).
        out: The study's folder (`results.csv`, `table.md`, `plot.png`).
        ran: Cells trained by this call (the rest were reused).
    """

    study: str
    rows: list
    summary: list
    out: Path
    ran: int = 0


def ablate(study, data="digits", *, seeds=3, epochs=None, out="ablations", backbone=None,
           recipe=None, related=None, progress=print, verbose=0, **recipe_fields) -> AblationResult:
    """Runs a study's rows with several seeds and writes results.csv, table.md and plot.png.

    Args:
        study: A study name (`recipes.ablate.study_names()`).
        data: A source (`"digits"`, `"idx:<folder>"`, a folder, ...) or a `recipes.Data`
            (default "digits"). Loaded once; every cell shares its split.
        seeds: Seeds per row, at least 1 (default 3; 2 or more give an interval).
        epochs: Epochs per run (default: the recipe's).
        out: Folder; the study writes under `out/<study>/` (default "ablations").
        backbone: Registry name (default: the recipe's; the `backbone` study sets its own).
        recipe: The base `Recipe` (default `Recipe()`); each row changes it.
        related: A related source for `pretraining` (e.g. `"idx:/data/mnist"` for digits).
        progress: Called with one line per finished run (default `print`; None: silent).
        verbose: Keras `fit` verbosity (default 0).
        **recipe_fields: Other `Recipe` fields for every row.

    Returns:
        An `AblationResult`.

    Raises:
        ValueError: An unknown study (closest matches), `seeds` < 1, a bad recipe field or row,
            `pretraining` without `related`, or `batch_size` with a loaded `Data` (it reloads
            the source per batch size): all before any training.

    Example:
        >>> result = recipes.ablate("dropout", "digits", seeds=3, epochs=3, out="ablations")
        >>> print(result.out / "table.md")
    """
    from ..data import Data
    from ..training import prepare_data

    spec = get_study(study)
    v.check_int("seeds", seeds, 1)
    v.check_int("epochs", epochs, 1, allow_none=True)
    fields = dict(recipe_fields)
    if epochs is not None:
        fields["epochs"] = epochs
    if backbone is not None:
        fields["backbone"] = backbone
    base = (recipe if recipe is not None else Recipe()).replace(**fields)
    if spec.needs == "related" and related is None:
        raise ValueError(f"Study {spec.name!r} needs a related source to pretrain on (e.g. "
                         "related='idx:<mnist folder>' for digits); Received: related=None")
    if spec.name == "batch_size" and isinstance(data, Data):
        raise ValueError("Study 'batch_size' reloads the data per batch size; pass a source, "
                         f"not a loaded Data; Received: data={data.source!r}")
    for row in spec.rows:  # every row's recipe is valid before anything trains
        base.replace(**recipe_changes(spec.changes(row)))
    base, loaded = prepare_data(base, data)
    # The preset is chosen once, for the whole training split: every row then differs from the
    # base only by its own change (a data_size row on 10 % of the data keeps the base's recipe).
    base = adapt_recipe(base, loaded, explicit=set(fields), verbose=verbose)
    # Fix the size the non-pretrained baseline uses, so pretrained rows see the same pixels.
    base = base.replace(image_size=base.image_size_for(loaded.input_shape))
    root = RunFolder(Path(out) / spec.name)
    runner = _Runner(spec, base, loaded, data, root, related, verbose)
    total = len(spec.rows) * seeds
    rows, done = [], 0
    # Seed by seed: an interrupted study has whole seeds done (each a complete table's worth).
    for k in range(seeds):
        for name in spec.rows:
            start = time.time()
            row, reused = runner.cell(name, k)
            rows.append(row)
            done += 1
            if progress is not None:
                acc = row.get(METRIC)
                acc_text = "n/a" if acc is None else f"{acc:.4f}"
                how = "reused" if reused else f"{time.time() - start:.0f} s"
                progress(f"[{done}/{total}] {spec.name} {name} seed {k}: {METRIC} {acc_text} ({how})")
    order = list(spec.rows)
    rows.sort(key=lambda r: (order.index(r["row"]), r["seed"]))
    test_size = loaded.sizes.get("test") or 0
    summary = summarize(rows, order, spec.baseline, resolution=1 / test_size if test_size else 0.0)
    root.write_csv("results.csv", rows)
    note = (f"data: {base.dataset} ({loaded.sizes.get('train')} train / "
            f"{loaded.sizes.get('validation')} validation / {loaded.sizes.get('test')} test "
            f"images, split seed {base.seed}); backbone {base.backbone}, {base.epochs} epoch(s), "
            f"image size {base.image_size}.")
    changes = {name: _describe(spec.changes(name)) for name in spec.rows}
    root.write_text("table.md", markdown_table(spec, summary, changes=changes, seeds=seeds, note=note))
    from ..plotting import plot_ablation

    plot_ablation(summary, root.file("plot.png"), title=f"{spec.name} ({base.dataset})",
                  baseline=spec.baseline, scatter="latency_ms" if spec.name == "backbone" else None)
    return AblationResult(study=spec.name, rows=rows, summary=summary, out=root.path,
                          ran=runner.ran)


def _describe(changes) -> str:
    return ", ".join(f"{k.lstrip('_')}={_short(val)}" for k, val in changes.items()) or "(base)"


def _short(value):
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


class _Runner:
    """Runs (or reads back) one cell of a study."""

    def __init__(self, spec, base, data, source, root, related, verbose):
        self.spec, self.base, self.data, self.source = spec, base, data, source
        self.root, self.related, self.verbose = root, related, verbose
        self.ran = 0
        self._by_batch = {base.batch_size: data}
        self._arrays = None
        self._pretrained = {}
        self._pool = {}

    # ------------------------------------------------------------------ helpers

    def _data_for(self, recipe):
        if recipe.batch_size not in self._by_batch:
            from ..training import prepare_data

            # The split seed, not the cell's: every batch size sees the same split.
            _, self._by_batch[recipe.batch_size] = prepare_data(
                recipe.replace(seed=self.base.seed), self.source)
        return self._by_batch[recipe.batch_size]

    def _train_arrays(self):
        if self._arrays is None:
            from ..bagging import split_arrays

            self._arrays = split_arrays(self.data, "train")
        return self._arrays

    def _train(self, model_or_backbone, data, recipe, folder):
        from ..training import train

        self.ran += 1
        return train(model_or_backbone, data, recipe=recipe, out=folder, verbose=self.verbose)

    # ------------------------------------------------------------------ one cell

    def cell(self, row, k):
        changes = self.spec.changes(row)
        folder = self.root.sub(row).sub(f"seed{k}")
        recipe = self.base.replace(**recipe_changes(changes), seed=k)
        reused = folder.finished and folder.file(CELL_FILE).is_file()
        if reused:
            record = folder.read_json(CELL_FILE)
        else:
            extra = self._run(changes, recipe, folder, k)
            record = {"study": self.spec.name, "row": row, "seed": k,
                      "change": _describe(changes), **_scores(folder.metrics()), **extra}
            folder.write_json(CELL_FILE, record)
        return record, reused

    def _run(self, changes, recipe, folder, k) -> dict:
        if "_members" in changes:
            return self._ensemble(changes["_members"], changes["_method"], recipe, folder, k)
        data = self._data_for(recipe)
        if "_fraction" in changes:
            full = data.sizes.get("train", 0)
            data = self._subsample(changes["_fraction"])
            if recipe.train_steps is None:  # the baseline's step budget, not its epoch count
                from ..training import whole_batches

                recipe = recipe.replace(train_steps=recipe.epochs * recipe.epoch_passes
                                        * whole_batches(full, recipe.batch_size))
        if "_pretrain" in changes:
            recipe = recipe.replace(weights=str(self._pretrain(changes["_pretrain"])))
        if folder.finished:  # trained, but the cell record was lost: reuse the run
            result = None
        elif "_activation" in changes:
            result = self._train(self._with_activation(recipe, data, changes["_activation"]),
                                 data, recipe, folder)
        else:
            result = self._train(None, data, recipe, folder)
        extra = {"train_images": data.sizes.get("train")}
        if self.spec.name == "backbone":
            model = result.model if result is not None else folder.load_model()
            extra["latency_ms"] = _latency_ms(model, data)
        return extra

    def _subsample(self, fraction):
        from sklearn.model_selection import train_test_split

        from ..bagging import with_train_indices

        x, y = self._train_arrays()
        idx = np.arange(len(y))
        if fraction < 1:
            try:  # one fixed, stratified subsample (split seed), the same for every seed
                idx, _ = train_test_split(idx, train_size=fraction, stratify=y,
                                          random_state=self.base.seed)
            except ValueError:  # fewer images than classes: a plain fixed subsample
                idx = np.random.default_rng(self.base.seed).permutation(idx)[
                    :max(1, int(round(fraction * len(idx))))]
        return with_train_indices(self.data, x, y, np.sort(idx))

    def _with_activation(self, recipe, data, activation):
        import keras

        from ..training import build_from_recipe

        keras.utils.set_random_seed(recipe.seed)
        model = build_from_recipe(recipe, data)
        for layer in model.layers:
            if layer.name.startswith("head_dense_"):
                layer.activation = keras.activations.get(activation)
        return model

    def _pretrain(self, kind):
        """Trains (once, split seed) the backbone on the related source; its weights file."""
        from ..bagging import split_arrays, with_train_indices
        from ..training import prepare_data
        from ..weights import save_backbone

        folder = self.root.sub("_pretrain").sub(kind)
        weights = folder.file("backbone.weights.h5")
        if weights.is_file() and folder.finished:
            return weights
        if "data" not in self._pretrained:
            _, self._pretrained["data"] = prepare_data(
                self.base.replace(dataset=str(self.related)), self.related)
        related = self._pretrained["data"]
        if kind == "related":
            x, y = split_arrays(related, "train")
            half = related.num_classes // 2
            related = with_train_indices(related, x, y, np.flatnonzero(y < half))
        result = self._train(None, related, pretrain_recipe(self.base, related, self.related),
                             folder)
        save_backbone(result.model, weights)
        return weights

    def _members(self, n, recipe, k):
        """Members 0..n-1 of seed k's pool (trained once, reused by every ensemble row)."""
        from ..bagging import load_result

        pool = self.root.sub("_members").sub(f"seed{k}")
        out = []
        for j in range(n):
            if (k, j) not in self._pool:  # kept in memory: every ensemble row reuses it
                folder = pool.sub(f"member{j}")
                if folder.finished:
                    self._pool[k, j] = load_result(folder.path)
                else:  # seed k * 1000 + j: distinct members, and distinct pools per seed
                    self._pool[k, j] = self._train(None, self.data,
                                                   recipe.replace(seed=k * 1000 + j), folder)
            out.append(self._pool[k, j])
        return out

    def _ensemble(self, n, method, recipe, folder, k) -> dict:
        from ..bagging import evaluate_model
        from ..ensemble import ensemble

        if folder.finished and method != "distilled":  # the cell record was lost: reuse it
            return {"members": n}
        members = self._members(n, recipe, k)
        if method == "distilled":
            from ..distill import distill

            teacher = ensemble([m.model for m in members], "average")
            self.ran += 1
            distill(teacher, data=self.data, recipe=recipe.replace(seed=k), out=folder.path,
                    verbose=self.verbose)
            return {"members": n}
        if n == 1:
            model, metrics = members[0].model, dict(members[0].metrics)
        else:
            model = ensemble([m.model for m in members], method,
                             data=self.data if method == "stack" else None)
            metrics = {METRIC: evaluate_model(model, self.data)}
        metrics["member_test_accuracy"] = [m.metrics.get(METRIC) for m in members]
        metrics["train_seconds"] = sum(m.metrics.get("train_seconds", 0) for m in members)
        folder.save_model(model)
        folder.save_recipe(recipe)
        folder.save_metrics(metrics)
        return {"members": n}


def _scores(metrics) -> dict:
    keep = (METRIC, "test_loss", "epochs", "train_seconds")
    return {k: metrics[k] for k in keep if k in metrics}


#: The fewest optimizer steps a pretraining run takes, whatever the study's `epochs`.
PRETRAIN_STEPS = 500


def pretrain_recipe(base, data, source):
    """The recipe that pretrains the `pretraining` study's backbone on `data` (from `source`).

    The study's recipe, but with at least `PRETRAIN_STEPS` steps and BatchNorm statistics
    recomputed at the end (`precise_bn`): the target run fine-tunes with BatchNorm in inference
    mode, so it inherits these statistics. With the study's own `--epochs 2` on digits' first
    five classes (11 steps an epoch) the pretrained backbone scored 0.10 on its own validation
    split and the MNIST fine-tune from it stayed at chance (0.114; BENCHMARKS.md).

    Args:
        base: The study's recipe.
        data: The related `Data` (its train split decides the steps an epoch).
        source: The related source's text (recorded as the recipe's dataset).

    Returns:
        A `Recipe`.
    """
    from ..training import whole_batches

    recipe = base.replace(dataset=str(source), precise_bn=True)
    if recipe.train_steps is None:
        steps = recipe.epochs * recipe.epoch_passes * whole_batches(
            data.sizes.get("train", 0), recipe.batch_size)
        recipe = recipe.replace(train_steps=max(steps, PRETRAIN_STEPS))
    return recipe


def _latency_ms(model, data, repeats=10):
    """Median milliseconds per image of `predict_on_batch` on one test image (after warmup)."""
    ds = data.test if data.test is not None else data.validation
    one = np.asarray(next(iter(ds))[0])[:1]
    for _ in range(3):
        model.predict_on_batch(one)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict_on_batch(one)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 3)

