"""Transfer learning that runs offline: pretrain on MNIST digits 0-4, fine-tune on 5-9 with 50 labels each.

Compares three ways to learn digits 5-9 from only 250 labelled images (50 per class), all with the
same backbone (`recipes.DEFAULT_BACKBONE` at 32 px) and the same number of epochs:

1. from scratch (random init, the default training recipe);
2. the backbone pretrained on digits 0-4, frozen, with a new head;
3. the same pretrained backbone fine-tuned with `recipes.fine_tune` (head first, then unfreeze).

The pretrained backbone travels through `recipes.save_backbone` and `weights=<file>`, exactly as a
downloaded ImageNet file would. Accuracy is measured on held-out images (digits 5-9 among the last
2,000 MNIST test images, never used for training or model selection). Results go to `--out` as
`results.md` and `results.csv`.

Uses the MNIST test set in IDX format (`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`)
from `--mnist` (default: ../shared/data/mnist beside the repository); without it the script says
so and exits 0.

Example:
    python examples/transfer_mnist.py --out runs/transfer_mnist
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def find(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def accuracy(model, x, y) -> float:
    probs = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(probs, axis=-1) == y))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="folder with MNIST IDX files")
    parser.add_argument("--out", type=Path, default=Path("runs/transfer_mnist"), help="results folder")
    parser.add_argument("--labels-per-class", type=int, default=50)
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20, help="epochs for each few-shot method")
    parser.add_argument("--head-epochs", type=int, default=5, help="fine-tuning: head-only epochs (of --epochs)")
    parser.add_argument("--lr", type=float, default=5e-3,
                        help="head learning rate (frozen and fine-tune phase 1; fine-tuning uses a tenth); "
                        "default: the package's Adam default, which the from-scratch run uses too")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    images = find(args.mnist, "t10k-images-idx3-ubyte")
    labels = find(args.mnist, "t10k-labels-idx1-ubyte")
    if images is None or labels is None:
        print(f"MNIST IDX files not found in {args.mnist}; skipping the transfer demonstration.")
        return 0

    import recipes
    from recipes import fine_tune
    from recipes.data import read_idx

    x, y = read_idx(images)[..., None], read_idx(labels).astype("int32")
    pool_x, pool_y, held_x, held_y = x[:-2000], y[:-2000], x[-2000:], y[-2000:]
    rng = np.random.default_rng(args.seed)

    # Source task: digits 0-4 from the pool.
    src = pool_y < 5
    # Target task: digits 5-9 relabelled 0-4; only `labels_per_class` labelled images each.
    picks = np.concatenate([
        rng.choice(np.flatnonzero(pool_y == d), args.labels_per_class, replace=False) for d in range(5, 10)
    ])
    few_x, few_y = pool_x[picks], pool_y[picks] - 5
    test_mask = held_y >= 5
    test_x, test_y = held_x[test_mask], held_y[test_mask] - 5

    backbone, size = recipes.DEFAULT_BACKBONE, 32
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"pretraining {backbone} on {int(src.sum())} images of digits 0-4 ...", flush=True)
    start = time.time()
    pre = recipes.train(
        backbone, (pool_x[src], pool_y[src]), image_size=size, epochs=args.pretrain_epochs,
        validation_split=0.1, test_split=0.0, seed=args.seed, verbose=2,
    )
    pre_seconds = time.time() - start
    weights = recipes.save_backbone(pre.model, args.out / "pretrained_0-4.weights.h5")
    pre_val = pre.history["val_accuracy"][-1]
    print(f"pretrained: val accuracy on digits 0-4 {pre_val:.4f} in {pre_seconds:.0f}s -> {weights}")

    few = recipes.load_data((few_x, few_y), batch_size=32, validation_split=0.0, test_split=0.0,
                            seed=args.seed)
    rows = []

    def record(method, model, epochs, seconds):
        acc = accuracy(model, test_x, test_y)
        rows.append({"method": method, "test_accuracy": round(acc, 4), "epochs": epochs,
                     "seconds": round(seconds, 1)})
        print(f"{method}: {acc:.4f} ({epochs} epochs, {seconds:.0f}s)", flush=True)

    start = time.time()
    scratch = recipes.train(backbone, few, image_size=size, epochs=args.epochs, seed=args.seed, verbose=0)
    record("from scratch (random init)", scratch.model, args.epochs, time.time() - start)

    start = time.time()
    frozen_model = recipes.build_classifier(
        backbone, 5, image_size=size, input_shape=few.input_shape, weights=str(weights),
        trainable_backbone=False,
    )
    frozen = recipes.train(frozen_model, few, epochs=args.epochs, learning_rate=args.lr, warmup_epochs=0,
                           seed=args.seed, verbose=0)
    record("pretrained 0-4, frozen + new head", frozen.model, args.epochs, time.time() - start)

    for policy in ("top:30%", "all"):
        start = time.time()
        tuned = fine_tune(
            backbone, few, weights=str(weights), image_size=size, head_epochs=args.head_epochs,
            epochs=args.epochs - args.head_epochs, learning_rate=args.lr, unfreeze=policy,
            seed=args.seed, verbose=0,
        )
        record(f"pretrained 0-4, fine_tune (unfreeze={policy})", tuned.model, args.epochs,
               time.time() - start)

    header = (f"Digits 5-9 with {args.labels_per_class} labels per class ({len(few_y)} images); "
              f"test: {len(test_y)} held-out images; backbone {backbone} at {size}px; pretrained "
              f"on {int(src.sum())} images of digits 0-4 ({args.pretrain_epochs} epochs, "
              f"{pre_seconds:.0f}s, val accuracy {pre_val:.4f}). Adam; head LR {args.lr:g}, "
              f"fine-tuning LR {args.lr / 10:g} after {args.head_epochs} head epochs.")
    lines = [header, "", "| method | test accuracy | epochs | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['test_accuracy']:.4f} | {r['epochs']} | {r['seconds']} |" for r in rows]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    with open(args.out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("\n" + "\n".join(lines))
    print(f"\nwritten: {args.out / 'results.md'}, {args.out / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
