"""Ablation table: what each training trick is worth, measured on real data.

Starts from the default recipe and changes one thing per row; every row is a full training run
with the same seed and split, evaluated on the held-out test split.

Run: python examples/ablation_digits.py [--dataset digits] [--epochs 12] [--out runs/ablation]
"""

import argparse
import csv
import time
from pathlib import Path

import recipes

#: name -> Recipe changes. The first row is the baseline (the defaults).
ROWS = {
    "default (cosine+warmup, BN momentum 0.9, precise BN)": {},
    "constant LR, no warmup": {"schedule": "constant", "warmup_epochs": 0},
    "step decay": {"schedule": "step"},
    "one-cycle": {"schedule": "onecycle", "warmup_epochs": 0},
    "BN momentum 0.99, no precise BN (Keras default)": {"bn_momentum": 0.99, "precise_bn": False},
    # no flips: a mirrored digit is another digit
    "augmentation: rotation+zoom+translation 0.1": {"augmentation": "rotation:0.1,zoom:0.1,translation:0.1"},
    "label smoothing 0.1": {"label_smoothing": 0.1},
    "mixup 0.2": {"mixup": 0.2},
    "dropout 0.5": {"dropout": 0.5},
    "L2 1e-4 (head)": {"l2": 1e-4},
    "SGD (nesterov) instead of Adam": {"optimizer": "sgd"},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=recipes.Recipe().epochs)
    parser.add_argument("--rows", help="comma-separated subset of row numbers (0 = baseline)")
    parser.add_argument("--out", default="runs/ablation")
    args = parser.parse_args()

    data = recipes.load_data(args.dataset, batch_size=recipes.Recipe().batch_size)
    items = list(ROWS.items())
    if args.rows:
        items = [items[int(i)] for i in args.rows.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = []
    for name, changes in items:
        start = time.time()
        result = recipes.train(data=data, epochs=args.epochs, verbose=0, **changes)
        row = {
            "trick": name,
            "test_accuracy": round(result.metrics["test_accuracy"], 4),
            "test_loss": round(result.metrics["test_loss"], 4),
            "seconds": round(time.time() - start, 1),
        }
        table.append(row)
        print(f"{row['trick']:<55} acc {row['test_accuracy']:.4f}  loss {row['test_loss']:.4f}  "
              f"{row['seconds']:>6.1f}s", flush=True)
    with open(out / "ablation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    lines = ["| trick | test accuracy | test loss | seconds |", "|---|---|---|---|"]
    lines += [f"| {r['trick']} | {r['test_accuracy']:.4f} | {r['test_loss']:.4f} | {r['seconds']} |" for r in table]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
