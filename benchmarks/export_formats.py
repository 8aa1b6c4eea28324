"""Export sizes, agreement with Keras and latency per format (SavedModel, TFLite fp32/fp16/int8).

Usage: python benchmarks/export_formats.py RUN_OR_DATASET [EPOCHS] [OUT]
  RUN_OR_DATASET: a finished run folder, or a dataset to train the default recipe on first
  ("digits", "idx:../shared/data/mnist"); EPOCHS: training epochs (default 5); OUT: where the
  run goes (default runs/export_bench_<dataset>). Prints one Markdown table row per format, from
  the run's export/export.json (latency: median single-image call on this machine's CPU).
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import recipes  # noqa: E402
from recipes.after.exporting import FORMATS  # noqa: E402


def main(argv):
    source = argv[0] if argv else "digits"
    epochs = int(argv[1]) if len(argv) > 1 else 5
    if Path(source).is_dir() and (Path(source) / "model.keras").is_file():
        run = Path(source)
    else:
        tag = source.rstrip("/").split("/")[-1].split(":")[-1]
        run = Path(argv[2] if len(argv) > 2 else f"runs/export_bench_{tag}")
        start = time.time()
        result = recipes.train(data=source, epochs=epochs, out=run, verbose=2)
        print(f"trained {result.recipe.backbone} on {source} for {epochs} epochs in "
              f"{time.time() - start:.0f} s: test accuracy {result.metrics['test_accuracy']:.4f}")
    print(f"cpu: {os.cpu_count()} cores; keras model: {(run / 'model.keras').stat().st_size / 1e6:.2f} MB")
    print("| format | size (MB) | top-1 agreement | max abs prob diff | accuracy (Keras) | "
          "latency ms/image (Keras) | export s |")
    print("|---|---|---|---|---|---|---|")
    for fmt in FORMATS:
        start = time.time()
        e = recipes.export(run, fmt)
        print(f"| {fmt} | {e['size_bytes'] / 1e6:.2f} | {e['top1_agreement']:.4f} | "
              f"{e['max_abs_prob_diff']:.1e} | {e['accuracy']:.4f} ({e['keras_accuracy']:.4f}) | "
              f"{e['latency_ms_per_image']:.2f} ({e['keras_latency_ms_per_image']:.2f}) | "
              f"{time.time() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
