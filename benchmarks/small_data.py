"""Named recipes at every data size, next to classical baselines on the same splits (issue 12).

Tables (each row is one training call timed here, seeds 0..S-1, mean +- std):

- `scratch`: the real MNIST test set's last 5,000 images (pool T); N labels per class drawn per
  seed from T (the recipe's own 10 % of them for validation), the rest of T as the test set.
  Rows: scikit-learn `SVC()` on the raw pixels of all N x 10 labelled images, then
  `recipes.train` from scratch with the default (`preset_name="auto"`: the preset chosen for the
  data), and the `fast` and `accurate` presets named.
- `transfer`: digits 5-9 of pool T, N labels per class; a backbone pretrained on digits 0-4 of
  the first 5,000 images (pool A: other classes, other images) with `recipes.train`. Rows: SVC on
  pixels, LogisticRegression on the frozen pretrained features (`recipes.linear_probe`),
  from scratch (default), `recipes.fine_tune` with the default (auto) and with the `fine-tune`
  preset named.
- `digits`: scikit-learn's digits (the package's own split): the default, and each preset.
- `mnist`: the loader's split of the shared MNIST set (`idx:`, stratified 80/10/10): `accurate`.

Rows are appended to a JSON-lines file as they finish (a re-run skips rows already there), so
the script can be stopped and resumed; `--report` prints the Markdown tables.

    python benchmarks/small_data.py --tables scratch transfer --sizes 10 20 50 --seeds 3
    python benchmarks/small_data.py --tables digits mnist --seeds 3
    python benchmarks/small_data.py --report
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MNIST = REPO.parent / "shared" / "data" / "mnist"
ROWS = REPO / "benchmarks" / "results" / "small_data.jsonl"
CLASSES_A, CLASSES_T = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def mnist():
    import numpy as np

    from recipes.data.arrays import _idx

    x, y, _, _ = _idx(str(MNIST))
    return np.asarray(x), np.asarray(y).astype("int32")


def sample(y, pool, classes, n, seed):
    """N indices per class of `pool` (seeded), and the rest of the pool's classes as test."""
    import numpy as np

    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.choice(pool[y[pool] == c], n, replace=False) for c in classes])
    rest = np.setdiff1d(pool[np.isin(y[pool], classes)], picked)
    return picked, rest


def relabel(y, classes):
    import numpy as np

    lookup = np.full(10, -1, np.int32)
    lookup[list(classes)] = np.arange(len(classes))
    return lookup[y]


def svc(x, y, train, test):
    from sklearn.svm import SVC

    flat = x.reshape(len(x), -1) / 255.0
    return float((SVC().fit(flat[train], y[train]).predict(flat[test]) == y[test]).mean())


def make_data(x, y, train, test, classes, seed):
    from recipes.data.arrays import from_memory

    yy = relabel(y, classes)
    return from_memory(x[train], yy[train], [str(c) for c in classes], x_test=x[test],
                       y_test=yy[test], batch_size=64, validation_split=0.1, seed=seed)


def pretrained_backbone(x, y, workdir):
    """A backbone trained on digits 0-4 of pool A (other classes, other images), saved once."""
    import numpy as np

    import recipes

    path = Path(workdir) / "mnist04.weights.h5"
    if path.is_file():
        return path, None
    pool = np.arange(0, 5000)
    idx = pool[np.isin(y[pool], CLASSES_A)]
    from recipes.data.arrays import from_memory

    data = from_memory(x[idx], relabel(y, CLASSES_A)[idx], [str(c) for c in CLASSES_A],
                       batch_size=64, seed=0)
    start = time.time()
    result = recipes.train(data=data, preset_name="fast", verbose=0)
    recipes.save_backbone(result.model, path)
    return path, {"images": len(idx), "test_accuracy": result.metrics["test_accuracy"],
                  "seconds": round(time.time() - start, 1)}


def probe_accuracy(data, weights):
    """Test accuracy of a linear probe (LogisticRegression) on the frozen pretrained features."""
    import recipes

    model = recipes.build_classifier("mobilenet_v3_small", data.num_classes, image_size=32,
                                     weights=str(weights), input_shape=data.input_shape,
                                     trainable_backbone=False)
    recipes.linear_probe(model, data, verbose=False)
    hits = total = 0
    for xb, yb in data.test.as_numpy_iterator():
        hits += int((model.predict_on_batch(xb).argmax(-1) == yb).sum())
        total += len(yb)
    return hits / total


def run_row(table, row, n, seed, fn):
    import keras

    keras.backend.clear_session()
    start = time.time()
    out = fn()
    seconds = round(time.time() - start, 1)
    accuracy, extra = out if isinstance(out, tuple) else (out, {})
    record = {"table": table, "row": row, "n": n, "seed": seed, "test_accuracy": accuracy,
              "seconds": seconds, **extra}
    print(json.dumps(record), flush=True)
    with ROWS.open("a") as f:
        f.write(json.dumps(record) + "\n")


def done_rows():
    if not ROWS.is_file():
        return set()
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    return {(r["table"], r["row"], r["n"], r["seed"]) for r in rows}


def trained(result):
    r = result.recipe
    return result.metrics["test_accuracy"], {
        "preset": r.preset_name, "epochs": result.metrics["epochs"], "train_steps": r.train_steps,
        "batch_size": r.batch_size}


def scratch_rows(x, y, n, seed):
    import numpy as np

    import recipes

    train, test = sample(y, np.arange(5000, 10000), range(10), n, seed)
    data = make_data(x, y, train, test, range(10), seed)
    yield "SVC() on pixels", lambda: svc(x, y, train, test)
    yield "default (auto)", lambda: trained(recipes.train(data=data, seed=seed, verbose=0))
    for name in ("fast", "accurate"):
        yield name, lambda name=name: trained(recipes.train(
            data=data, recipe=recipes.Recipe.preset(name, seed=seed), verbose=0))


def transfer_rows(x, y, n, seed, weights):
    import numpy as np

    import recipes

    train, test = sample(y, np.arange(5000, 10000), CLASSES_T, n, seed)
    data = make_data(x, y, train, test, CLASSES_T, seed)
    fields = dict(weights=str(weights), image_size=32, seed=seed, verbose=0)
    yield "SVC() on pixels", lambda: svc(x, y, train, test)
    yield "LogisticRegression on frozen features", lambda: probe_accuracy(data, weights)
    yield "from scratch, default (auto)", lambda: trained(recipes.train(data=data, seed=seed, verbose=0))
    yield "fine_tune, default (auto)", lambda: trained(recipes.fine_tune("mobilenet_v3_small", data, **fields))
    yield "fine_tune, fine-tune preset", lambda: trained(recipes.fine_tune(
        "mobilenet_v3_small", data, preset_name="fine-tune", **fields))


def digits_rows(seed):
    import recipes

    yield "default (auto)", lambda: trained(recipes.train(data="digits", seed=seed, verbose=0))
    for name in ("accurate", "small-data"):
        yield name, lambda name=name: trained(recipes.train(
            data="digits", recipe=recipes.Recipe.preset(name, seed=seed), verbose=0))


def mnist_rows(seed):
    import recipes

    source = f"idx:{MNIST}"
    yield "accurate", lambda: trained(recipes.train(
        data=source, recipe=recipes.Recipe.preset("accurate", seed=seed), verbose=0))


def report():
    rows = [json.loads(line) for line in ROWS.read_text().splitlines() if line.strip()]
    groups = {}
    for r in rows:
        groups.setdefault((r["table"], r["n"], r["row"]), []).append(r)
    for table in ("scratch", "transfer", "digits", "mnist"):
        order = {row: i for i, row in enumerate(dict.fromkeys(r["row"] for r in rows))}
        keys = sorted((k for k in groups if k[0] == table), key=lambda k: (k[1], order[k[2]]))
        if not keys:
            continue
        print(f"\n### {table}\n\n| labels/class | row | test accuracy (mean ± std) | seeds | "
              "seconds per run | resolved to |\n|---:|---|---:|---:|---:|---|")
        for key in keys:
            rs = groups[key]
            acc = [r["test_accuracy"] for r in rs]
            sec = [r["seconds"] for r in rs]
            std = statistics.stdev(acc) if len(acc) > 1 else 0.0
            how = {f"{r.get('preset')}, {r.get('epochs')} epochs" for r in rs if r.get("preset")}
            print(f"| {key[1] if key[1] else '-'} | {key[2]} | {statistics.mean(acc):.4f} ± "
                  f"{std:.4f} | {len(rs)} | {statistics.mean(sec):.0f} | {'; '.join(sorted(how))} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=["scratch", "transfer", "digits", "mnist"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 20, 50])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "small_data_bench"))
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        return report()
    if not MNIST.is_dir():
        sys.exit(f"MNIST not found at {MNIST}")
    ROWS.parent.mkdir(parents=True, exist_ok=True)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    x, y = mnist()
    done = done_rows()
    weights = None
    for seed in range(args.seeds):
        for table in args.tables:
            if table in ("scratch", "transfer"):
                for n in args.sizes:
                    if table == "transfer" and weights is None:
                        weights, info = pretrained_backbone(x, y, args.workdir)
                        if info:
                            print(json.dumps({"pretrained": info}), flush=True)
                    rows = (scratch_rows(x, y, n, seed) if table == "scratch"
                            else transfer_rows(x, y, n, seed, weights))
                    for row, fn in rows:
                        if (table, row, n, seed) not in done:
                            run_row(table, row, n, seed, fn)
            else:
                rows = digits_rows(seed) if table == "digits" else mnist_rows(seed)
                for row, fn in rows:
                    if (table, row, 0, seed) not in done:
                        run_row(table, row, 0, seed, fn)


if __name__ == "__main__":
    main()
