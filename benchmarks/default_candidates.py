"""Candidate defaults for bare `recipes train`, over several seeds, paired against the first.

Each candidate is a string of `recipes train` flags (the empty string is today's default). Every
(candidate, seed) is one fresh `recipes train --seed S --out DIR` process, so the command picks
its CPU kernels as users get them; finished run folders are reused, so an interrupted sweep
resumes. The seed also draws the split, so a seed's candidates share one test set and the deltas
are paired. Prints one line per run, then per candidate: mean test accuracy, mean best and final
validation accuracy, mean train seconds, and the paired test delta against the first candidate
with a 95 % t-interval. With `--jobs 2` two runs share the machine: accuracies are unchanged
(training is deterministic on a CPU), train seconds are not comparable then.

    python benchmarks/default_candidates.py --seeds 5 --out /tmp/cands "" "--batch-size 32"
"""

import argparse
import concurrent.futures
import csv
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def slug(flags):
    return "default" if not flags.strip() else "_".join(
        part.lstrip("-").replace(":", "").replace(",", "").replace("/", "") for part in shlex.split(flags))


def run(flags, seed, out):
    folder = Path(out) / slug(flags) / f"s{seed}"
    if not (folder / "metrics.json").is_file():
        cmd = [sys.executable, "-m", "recipes.cli", "train", "--seed", str(seed), "--out", str(folder),
               "--overwrite", *shlex.split(flags)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    metrics = json.loads((folder / "metrics.json").read_text())
    val = [float(r["val_accuracy"]) for r in csv.DictReader(open(folder / "history.csv"))]
    return {"flags": flags, "seed": seed, "test": metrics["test_accuracy"], "best_val": max(val),
            "final_val": val[-1], "train_s": metrics["train_seconds"], "epochs": metrics["epochs"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", help="flag strings; the first is the baseline")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tasks = [(c, s) for s in range(args.seeds) for c in args.candidates]
    rows = []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda t: run(*t, args.out), tasks):
            print(json.dumps(row), flush=True)
            rows.append(row)
    base = {r["seed"]: r["test"] for r in rows if r["flags"] == args.candidates[0]}
    print("\n| candidate | test % (mean ± sd) | best val % | final val % | train s | Δ test vs first (pt) [95 % CI] |")
    print("|---|---|---|---|---|---|")
    for c in args.candidates:
        mine = [r for r in rows if r["flags"] == c]
        test = [100 * r["test"] for r in mine]
        deltas = [100 * (r["test"] - base[r["seed"]]) for r in mine]
        mean_d = statistics.mean(deltas)
        half = T95.get(len(deltas) - 1, 2.0) * statistics.stdev(deltas) / len(deltas) ** 0.5 \
            if len(deltas) > 1 else 0.0
        print(f"| {c or '(default)'} | {statistics.mean(test):.1f} ± {statistics.stdev(test):.1f} | "
              f"{100 * statistics.mean(r['best_val'] for r in mine):.1f} | "
              f"{100 * statistics.mean(r['final_val'] for r in mine):.1f} | "
              f"{statistics.mean(r['train_s'] for r in mine):.1f} | "
              f"{mean_d:+.1f} [{mean_d - half:+.1f}, {mean_d + half:+.1f}] |")


if __name__ == "__main__":
    main()
