#!/bin/bash
# Bare `recipes train` at 8 (the default) and 12 epochs, seeds 0-4, one fresh process each (so the
# command chooses its CPU kernels as users get them). Prints: epochs seed test_accuracy
# best_val_accuracy final_val_accuracy train_seconds onednn. Usage:
#   bash benchmarks/default_epochs_seeds.sh [OUT_DIR]
out=${1:-runs/epochs_seeds}
for e in 8 12; do for s in 0 1 2 3 4; do
  d=$out/e${e}_s${s}
  [ -f "$d/metrics.json" ] || recipes train --epochs "$e" --seed "$s" --out "$d" > /dev/null 2>&1
  python - "$d" "$e" "$s" <<'PY'
import csv, json, sys
d, e, s = sys.argv[1:]
m = json.load(open(f"{d}/metrics.json"))
h = list(csv.DictReader(open(f"{d}/history.csv")))
val = [float(r["val_accuracy"]) for r in h]
print(e, s, round(m["test_accuracy"], 4), round(max(val), 4), round(val[-1], 4),
      m["train_seconds"], m["speed"]["onednn"])
PY
done; done
