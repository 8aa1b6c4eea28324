"""`recipes export`: SavedModel or TFLite (fp32, fp16, int8), checked on the test split."""

from __future__ import annotations

from .evaluate import add_model_argument

__all__ = ["add_parser", "run"]


def add_parser(subparsers):
    """Adds `recipes export RUN --format F [--out DIR]`."""
    from ..after.exporting import FORMATS

    p = subparsers.add_parser(
        "export", help="export a run as SavedModel or TFLite (fp32 / fp16 / int8)",
        description="Exports the run's model (input: raw 0-255 pixels, preprocessing inside), "
        "runs the artifact on the test split and writes export.json: size, top-1 agreement "
        "with the Keras model, max probability difference, accuracy, latency per image.",
    )
    add_model_argument(p)
    p.add_argument("--format", default="tflite", help=f"{' | '.join(FORMATS)} (default tflite)")
    p.add_argument("--out", help="export folder (default: RUN/export)")
    p.add_argument("--dataset", help="another data source for the check and int8 calibration")
    p.add_argument("--data-dir", help="tensorflow-datasets data folder (for tfds:<name>)")
    p.add_argument("--no-check", action="store_true", help="skip running the exported artifact")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Exports, prints the entry of export.json."""
    from ..after import export
    from ..after.common import load_run_data, open_model
    from ..after.exporting import FORMATS
    from ..validation import check_choice

    check_choice("format", args.format, FORMATS)
    source = open_model(args.run)
    data = load_run_data(source, args.dataset, data_dir=args.data_dir) if args.dataset else None
    entry = export(source, args.format, out=args.out,
                   data=data, check=not args.no_check)
    size = entry["size_bytes"] / 1e6
    print(f"{args.format}: {entry['path']} ({size:.2f} MB)")
    if "top1_agreement" in entry:
        print(f"on {entry['images']} {entry['split']} images: top-1 agreement "
              f"{entry['top1_agreement']:.4f}, max |prob diff| {entry['max_abs_prob_diff']:.2e}, "
              f"accuracy {entry['accuracy']:.4f} (Keras {entry['keras_accuracy']:.4f}), "
              f"{entry['latency_ms_per_image']:.2f} ms/image")
    return 0
