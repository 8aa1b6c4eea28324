"""Image-folder loading at scale: our streaming loader vs `keras.utils.image_dataset_from_directory`.

Makes folders of real JPEGs (the shared MNIST test digits, tinted and upscaled to 300 px, one
class folder per digit; beyond 10,000 images the digits repeat with other tints), then, each in
a fresh child process so peak RSS is its own:

- one full pass at 64 px of `recipes.load_data(folder, cache=None)` (cold: no manifest, so the
  verify pass runs; warm: manifest kept) and of `image_dataset_from_directory` on the same folder:
  time to the first batch, images/s over the pass (from the load call), peak RSS;
- the time from process start to the first training step of `recipes.train` (cold manifest);
- a full `recipes.train` epoch on `load_data(folder, image_size=64)`: the folder decoded at the
  model's size rather than its own (first step, wall time, peak RSS; cold manifest);
- `recipes train --dataset FOLDER --epochs 1 --image-size 64` (run as `python -m recipes.cli`,
  the console script's module, so the working tree is what runs) under `/usr/bin/time -v`: peak
  RSS and wall time (getrusage of the child when `/usr/bin/time` is missing).

Usage (prints a Markdown table; `--json` also writes the numbers):
    python benchmarks/folder_loader.py --images 10000 40000 --workdir /tmp/folder_bench
"""

from __future__ import annotations

import time

_T0 = time.time()  # before the heavy imports: "first step" counts from process start

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the working tree's `recipes`, not another installed copy
MNIST = REPO.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"
MNIST_LABELS = MNIST.with_name("t10k-labels-idx1-ubyte.gz")


# ----------------------------------------------------------------------------- the folders


def _write_chunk(args):
    import numpy as np
    from PIL import Image

    folder, side, start, digits, labels = args
    for k, (digit, label) in enumerate(zip(digits, labels)):
        i = start + k
        rng = np.random.default_rng(i)
        fg = rng.integers(120, 256, 3)
        bg = rng.integers(0, 90, 3)
        alpha = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR),
                           np.float32)[..., None] / 255.0
        rgb = (bg * (1 - alpha) + fg * alpha).astype(np.uint8)
        Image.fromarray(rgb).save(folder / str(label) / f"{i:06d}.jpg", quality=90)


def make_folder(folder: Path, n: int, side: int = 300, workers: int = 2) -> Path:
    """`folder/<digit>/<index>.jpg`: `n` tinted, upscaled MNIST test digits (kept if complete)."""
    from multiprocessing import Pool

    import numpy as np

    from recipes.data import read_idx

    done = folder / ".complete"
    if done.exists() and done.read_text() == f"{n} {side}":
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    x, y = read_idx(MNIST), read_idx(MNIST_LABELS)
    for label in range(10):
        (folder / str(label)).mkdir(parents=True)
    idx = np.arange(n) % len(x)
    chunk = 500
    jobs = [(folder, side, s, x[idx[s:s + chunk]], y[idx[s:s + chunk]]) for s in range(0, n, chunk)]
    with Pool(workers) as pool:
        pool.map(_write_chunk, jobs)
    done.write_text(f"{n} {side}")
    return folder


# ------------------------------------------------------------------------- child processes


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cpu_s():
    """User + system CPU seconds of this process: steadier than wall time on a shared machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_pass(kind, folder, image_size, batch_size):
    """One pass over every image; prints a JSON line."""
    import tensorflow as tf  # imported before the clock starts, for both loaders

    tf.constant(0)  # and the eager runtime started
    if kind == "keras":
        import keras

        start, cpu = time.time(), _cpu_s()
        ds = keras.utils.image_dataset_from_directory(
            folder, image_size=(image_size, image_size), batch_size=batch_size, seed=0, verbose=False)
    else:
        import recipes

        if kind == "ours-cold":
            from recipes.data.folders import manifest_path

            manifest_path(folder).unlink(missing_ok=True)
        start, cpu = time.time(), _cpu_s()
        data = recipes.load_data(folder, image_size=image_size, batch_size=batch_size,
                                 validation_split=0.0, test_split=0.0, cache=None)
        ds = data.train
    first = None
    n = 0
    for images, _ in ds:
        if first is None:
            first = time.time() - start
        n += int(images.shape[0])
    total = time.time() - start
    print(json.dumps({"kind": kind, "images": n, "first_batch_s": round(first, 2),
                      "pass_s": round(total, 2), "images_per_s": round(n / total),
                      "cpu_us_per_image": round((_cpu_s() - cpu) / n * 1e6),
                      "peak_rss_mb": round(_peak_rss_mb())}), flush=True)


def child_first_step(folder, image_size, out):
    """`recipes.train` as the CLI runs it; exits at the end of the first training step."""
    import keras

    import recipes
    import recipes.training
    from recipes.data.folders import manifest_path

    manifest_path(folder).unlink(missing_ok=True)
    called = time.time()
    loaded = {}
    real_load = recipes.training.load_data

    def timed_load(*args, **kwargs):  # how much of the wait is the loader's
        start = time.time()
        data = real_load(*args, **kwargs)
        loaded.update(s=round(time.time() - start, 1), shape=list(data.input_shape), cache=data.cache)
        return data

    recipes.training.load_data = timed_load

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            now = time.time()
            print(json.dumps({"kind": "first-step", "from_start_s": round(now - _T0, 1),
                              "from_train_call_s": round(now - called, 1),
                              "load_data_s": loaded.get("s"), "pipeline_shape": loaded.get("shape"),
                              "cache": loaded.get("cache"),
                              "peak_rss_mb": round(_peak_rss_mb())}), flush=True)
            os._exit(0)

    recipes.train(data=str(folder), epochs=1, image_size=image_size, out=out,
                  callbacks=[FirstStep()], verbose=0)


def child_train_api(folder, image_size, out):
    """`recipes.train` on `load_data(folder, image_size=...)`: the folder decoded at the model's
    size (what the CLI gets once it passes `--image-size` to the loader); full epoch."""
    import keras

    import recipes
    from recipes.data.folders import manifest_path

    manifest_path(folder).unlink(missing_ok=True)
    called = time.time()
    first = {}

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            first.setdefault("s", time.time())

    data = recipes.load_data(str(folder), image_size=image_size)
    load_s = time.time() - called
    result = recipes.train(data=data, epochs=1, image_size=image_size, out=out,
                           callbacks=[FirstStep()], verbose=0)
    now = time.time()
    print(json.dumps({"kind": "train-api", "from_start_s": round(first["s"] - _T0, 1),
                      "wall_s": round(now - _T0, 1), "from_train_call_s": round(now - called, 1),
                      "load_data_s": round(load_s, 1),
                      "cache": data.cache, "test_accuracy": result.metrics.get("test_accuracy"),
                      "peak_rss_mb": round(_peak_rss_mb())}), flush=True)


def _run_child(args):
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          env=env, cwd=REPO)
    for line in proc.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")


def run_cli(folder, image_size, out):
    """`recipes train` under /usr/bin/time -v: wall time, peak RSS, exit status."""
    from recipes.data.folders import manifest_path

    manifest_path(folder).unlink(missing_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "recipes.cli", "train", "--dataset", str(folder), "--epochs", "1",
           "--image-size", str(image_size), "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    timer = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    start = time.time()
    if timer:
        proc = subprocess.run([timer, "-v", *cmd], capture_output=True, text=True, env=env, cwd=REPO)
        wall = time.time() - start
        rss = [line for line in proc.stderr.splitlines() if "Maximum resident set size" in line]
        peak = int(rss[-1].split(":")[-1]) / 1024 if rss else float("nan")
        how = "/usr/bin/time -v"
    else:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        wall = time.time() - start
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        how = "getrusage(RUSAGE_CHILDREN)"
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-40:]
    return {"kind": "recipes train", "rc": proc.returncode, "wall_s": round(wall, 1),
            "peak_rss_mb": round(peak), "measured_with": how, "command": " ".join(cmd),
            "output_tail": tail}


# ------------------------------------------------------------------------------------ main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[10_000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--side", type=int, default=300, help="side of the JPEGs written")
    parser.add_argument("--repeats", type=int, default=3, help="passes per loader (best kept)")
    parser.add_argument("--workdir", default="/tmp/recipes_folder_bench")
    parser.add_argument("--no-train", action="store_true", help="skip the recipes train runs")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "first-step":
        return child_first_step(args.folder, args.image_size, args.out)
    if args.child == "train-api":
        return child_train_api(args.folder, args.image_size, args.out)
    if args.child:
        return child_pass(args.child, args.folder, args.image_size, args.batch_size)
    if not MNIST.exists():
        sys.exit(f"MNIST test set not found at {MNIST}")

    work = Path(args.workdir)
    results = []
    for n in args.images:
        t = time.time()
        folder = make_folder(work / f"jpegs_{n}", n, args.side)
        print(f"[{n}] folder ready in {time.time() - t:.0f} s: {folder}", file=sys.stderr, flush=True)
        opts = ["--folder", str(folder), "--image-size", str(args.image_size),
                "--batch-size", str(args.batch_size)]
        kinds = ("keras", "ours-cold", "ours-warm")
        runs = {kind: [] for kind in kinds}
        for _ in range(args.repeats):  # interleaved, so a busy moment hits every loader
            for kind in kinds:
                runs[kind].append(_run_child(["--child", kind, *opts]))
                print(f"[{n}] {runs[kind][-1]}", file=sys.stderr, flush=True)
        for kind in kinds:
            best = max(runs[kind], key=lambda r: r["images_per_s"])
            best["cpu_us_per_image"] = min(r["cpu_us_per_image"] for r in runs[kind])
            results.append({"n": n, **best,
                            "all_images_per_s": [r["images_per_s"] for r in runs[kind]]})
        if not args.no_train:
            out = work / f"run_{n}"
            results.append({"n": n, **_run_child(["--child", "first-step", *opts, "--out",
                                                  str(work / f"first_step_{n}")])})
            print(f"[{n}] {results[-1]}", file=sys.stderr, flush=True)
            results.append({"n": n, **run_cli(folder, args.image_size, out)})
            print(f"[{n}] { {k: v for k, v in results[-1].items() if k != 'output_tail'} }",
                  file=sys.stderr, flush=True)
            results.append({"n": n, **_run_child(["--child", "train-api", *opts, "--out",
                                                  str(work / f"api_{n}")])})
            print(f"[{n}] {results[-1]}", file=sys.stderr, flush=True)
    _print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _print_table(results, args):
    print(f"\nOne pass at {args.image_size} px, batch {args.batch_size}: images/s from the load "
          f"call to the last batch (best of {args.repeats}, interleaved), CPU time per image "
          "(user + system, lowest), peak RSS of the process\n")
    print("| images | loader | first batch (s) | pass (s) | images/s | vs Keras | CPU µs/image "
          "| vs Keras (CPU) | peak RSS (MB) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.images:
        rows = [r for r in results if r["n"] == n and "images_per_s" in r]
        keras_row = next((r for r in rows if r["kind"] == "keras"), None)
        for r in rows:
            ratio = f"{r['images_per_s'] / keras_row['images_per_s']:.2f}x" if keras_row else ""
            cpu_ratio = (f"{keras_row['cpu_us_per_image'] / r['cpu_us_per_image']:.2f}x"
                         if keras_row else "")
            name = {"keras": "keras image_dataset_from_directory",
                    "ours-cold": "recipes load_data (cold: verify pass, writes manifest)",
                    "ours-warm": "recipes load_data (warm: manifest read)"}[r["kind"]]
            print(f"| {n} | {name} | {r['first_batch_s']} | {r['pass_s']} | {r['images_per_s']} | "
                  f"{ratio} | {r['cpu_us_per_image']} | {cpu_ratio} | {r['peak_rss_mb']} |")
    train = [r for r in results if r["kind"] in ("recipes train", "first-step", "train-api")]
    if train:
        print(f"\n`recipes train --dataset FOLDER --epochs 1 --image-size {args.image_size}`\n")
        print("| images | first training step (s from process start) | of which load_data (s) "
              "| pipeline images | wall (s) | peak RSS (MB) | exit |")
        print("|---:|---:|---:|---|---:|---:|---:|")
        for n in args.images:
            first = next((r for r in train if r["n"] == n and r["kind"] == "first-step"), {})
            cli = next((r for r in train if r["n"] == n and r["kind"] == "recipes train"), {})
            print(f"| {n} | {first.get('from_start_s', '')} | {first.get('load_data_s', '')} | "
                  f"{first.get('pipeline_shape', '')}, cache {first.get('cache', '')} | "
                  f"{cli.get('wall_s', '')} | {cli.get('peak_rss_mb', '')} | {cli.get('rc', '')} |")
        api = [r for r in train if r["kind"] == "train-api"]
        if api:
            print(f"\n`recipes.train(data=recipes.load_data(FOLDER, image_size={args.image_size}), "
                  f"epochs=1, image_size={args.image_size})` (the folder decoded at the model's "
                  "size)\n")
            print("| images | first training step (s from process start) | of which load_data (s) "
                  "| wall (s) | peak RSS (MB) | cache | test accuracy |")
            print("|---:|---:|---:|---:|---:|---|---:|")
            for r in api:
                accuracy = r["test_accuracy"]
                print(f"| {r['n']} | {r['from_start_s']} | {r['load_data_s']} | {r['wall_s']} | "
                      f"{r['peak_rss_mb']} | {r['cache']} | "
                      f"{'' if accuracy is None else round(accuracy, 3)} |")
        for r in train:
            if r["kind"] == "recipes train":
                print(f"\n[{r['n']}] {r['measured_with']}: {r['command']}")
                if r["rc"]:
                    print("\n".join(r["output_tail"]))


if __name__ == "__main__":
    sys.exit(main())
