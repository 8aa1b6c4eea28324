"""Bare `recipes train` next to the same job in plain Keras, in one run, alternating.

Each round runs `recipes train --out <tmp>` and `benchmarks/plain_keras_digits.py` as fresh
processes (imports and tracing included, as a user pays them), and records wall seconds, CPU
seconds and test accuracy. The ratio is recipes' wall time over plain Keras'. With `--mnist`
it also times `recipes train --dataset idx:<folder>` on the real MNIST test set.

    python benchmarks/default_vs_plain.py --rounds 3
    python benchmarks/default_vs_plain.py --rounds 3 --mnist ../shared/data/mnist
    python benchmarks/default_vs_plain.py --rounds 3 --seeds   # seeds 0, 1, 2 (both jobs)
    python benchmarks/default_vs_plain.py --rounds 3 --seeds --plain-eigen
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, cwd=None, env=None):
    """Runs `cmd` (with `env` added to the environment); returns (wall s, CPU s, stdout)."""
    cpu, start = _cpu(), time.time()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env} if env else None)
    wall = time.time() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, _cpu() - cpu, proc.stdout


def recipes_train(out, extra=(), seed=0):
    wall, cpu, _ = timed([sys.executable, "-m", "recipes.cli", "train", "--out", str(out),
                          "--seed", str(seed), *extra])
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    return {"wall": wall, "cpu": cpu, "accuracy": metrics["test_accuracy"],
            "epochs": metrics["epochs"]}


def plain(seed, env=None):
    wall, cpu, stdout = timed([sys.executable, str(HERE / "plain_keras_digits.py"), "--seed", str(seed)],
                              env=env)
    row = json.loads(stdout.strip().splitlines()[-1])
    return {"wall": wall, "cpu": cpu, "accuracy": row["test_accuracy"], "parts": row}


def _summary(rows, key):
    values = [r[key] for r in rows]
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", action="store_true",
                        help="round i uses seed i (both jobs) instead of seed 0 every round")
    parser.add_argument("--mnist", help="folder of the MNIST IDX files: also time that job")
    parser.add_argument("--plain-eigen", action="store_true",
                        help="also time the plain-Keras job with TF_ENABLE_ONEDNN_OPTS=0, the "
                             "CPU kernels `recipes train` picks for its default model")
    parser.add_argument("--json", help="write the raw rows here")
    args = parser.parse_args()
    ours, theirs, eigen, mnist = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            seed = i if args.seeds else 0
            ours.append(recipes_train(Path(tmp) / f"digits{i}", seed=seed))
            theirs.append(plain(seed))
            print(f"round {i + 1}: recipes {ours[-1]['wall']:.1f} s ({ours[-1]['accuracy']:.4f}), "
                  f"plain Keras {theirs[-1]['wall']:.1f} s ({theirs[-1]['accuracy']:.4f})", flush=True)
            if args.plain_eigen:
                eigen.append(plain(seed, {"TF_ENABLE_ONEDNN_OPTS": "0"}))
                print(f"  plain Keras, oneDNN off: {eigen[-1]['wall']:.1f} s "
                      f"({eigen[-1]['accuracy']:.4f})", flush=True)
            if args.mnist:
                mnist.append(recipes_train(Path(tmp) / f"mnist{i}", ["--dataset", f"idx:{args.mnist}"],
                                           seed=seed))
                print(f"  mnist: {mnist[-1]['wall']:.1f} s ({mnist[-1]['accuracy']:.4f})", flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end")
    print("| job | wall s (mean ± sd) | CPU s | test accuracy (each round) |")
    print("|---|---|---|---|")
    for name, rows in (("recipes train (digits)", ours), ("plain Keras (digits)", theirs),
                       ("plain Keras (digits), TF_ENABLE_ONEDNN_OPTS=0", eigen),
                       ("recipes train --dataset idx:MNIST", mnist)):
        if rows:
            wall, sd = _summary(rows, "wall")
            cpu, _ = _summary(rows, "cpu")
            accs = ", ".join(f"{r['accuracy']:.4f}" for r in rows)
            print(f"| {name} | {wall:.1f} ± {sd:.1f} | {cpu:.1f} | {accs} |")
    ratio = statistics.mean(r["wall"] for r in ours) / statistics.mean(r["wall"] for r in theirs)
    print(f"\nwall-time ratio recipes / plain Keras: {ratio:.2f}")
    if eigen:
        ratio = statistics.mean(r["wall"] for r in ours) / statistics.mean(r["wall"] for r in eigen)
        print(f"wall-time ratio recipes / plain Keras with oneDNN off: {ratio:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"recipes": ours, "plain": theirs, "plain_eigen": eigen,
                                               "mnist": mnist}, indent=1))


if __name__ == "__main__":
    main()
