"""`evaluate`: per-class report, confusion matrix, calibration, top losses and test-time augmentation.

The per-class figures and the confusion matrix are scikit-learn's (`classification_report`,
`confusion_matrix`, `top_k_accuracy_score`, `log_loss`, `brier_score_loss`) on the model's
predictions; only the expected calibration error, which scikit-learn does not have for several
classes, is computed here (equal-width confidence bins, as Guo et al. 2017).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import validation as v
from ..augment_spec import parse_augmentation
from .common import class_names_for, collect, load_run_data, logits_model, open_model, split_of

__all__ = [
    "Report", "evaluate", "expected_calibration_error", "reliability_bins", "calibration_metrics",
    "tta_views", "EVALUATION_DIR",
]

#: The run folder's sub-folder `evaluate` writes.
EVALUATION_DIR = "evaluation"


def reliability_bins(probabilities, labels, bins: int = 15) -> dict:
    """Confidence (max probability) binned into `bins` equal-width bins over (0, 1].

    Returns:
        `dict(edges, confidence, accuracy, count)`: per-bin mean confidence and accuracy (NaN in
        empty bins) and the number of predictions in each.
    """
    probabilities, labels = np.asarray(probabilities, float), np.asarray(labels).reshape(-1)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins (0, 1/b], ..., so a confidence of exactly 1 lands in the last one.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, confidence, bins) / count
        acc = np.bincount(which, correct, bins) / count
    return dict(edges=edges, confidence=conf, accuracy=acc, count=count)


def expected_calibration_error(probabilities, labels, bins: int = 15) -> float:
    """ECE: the count-weighted mean gap between accuracy and confidence over confidence bins.

    Args:
        probabilities: `(N, C)` predicted probabilities.
        labels: `(N,)` integer labels.
        bins: Number of equal-width bins (default 15).

    Returns:
        A float in [0, 1]; 0 means confidence matches accuracy in every bin.

    Example:
        >>> expected_calibration_error([[0.9, 0.1], [0.9, 0.1]], [0, 1])  # 90% sure, 50% right
        0.4
    """
    v.check_int("bins", bins, 1)
    b = reliability_bins(probabilities, labels, bins)
    filled = b["count"] > 0
    gaps = np.abs(b["accuracy"][filled] - b["confidence"][filled])
    return float(np.sum(gaps * b["count"][filled]) / max(1, b["count"].sum()))


def calibration_metrics(probabilities, labels, bins: int = 15) -> dict:
    """`{"ece", "nll", "brier"}`: expected calibration error, log loss, multi-class Brier score."""
    from sklearn.metrics import brier_score_loss, log_loss

    probabilities = np.asarray(probabilities, float)
    labels = np.asarray(labels).reshape(-1)
    classes = np.arange(probabilities.shape[1])
    # float32 softmax rows sum to 1 only within ~1e-7, which scikit-learn warns about.
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    return {
        "ece": expected_calibration_error(probabilities, labels, bins),
        "nll": float(log_loss(labels, probabilities, labels=classes)),
        "brier": float(brier_score_loss(labels, probabilities, labels=classes)),
    }


@dataclasses.dataclass
class Report:
    """What `evaluate` returns (and writes as `report.json`).

    Attributes:
        split: The split evaluated ("test", "validation" or "train").
        size: Number of images.
        class_names: Names, index = label.
        accuracy: Top-1 accuracy.
        top_k: `{"top5_accuracy": ...}` (k < number of classes).
        per_class: scikit-learn's `classification_report(output_dict=True)`: per class name
            precision/recall/f1-score/support, then "accuracy", "macro avg", "weighted avg".
        confusion: `(C, C)` counts, row = true class, column = predicted.
        calibration: `{"ece", "nll", "brier"}` of the model's probabilities.
        uncalibrated: The same for the logits before the model's temperature (None without one).
        calibrated: The same after the run's fitted temperature, with `"temperature"` (None when
            the run was not calibrated).
        tta: Test-time augmentation: `{"views", "accuracy", "top5_accuracy", "ece", "nll",
            "brier"}` (None without `tta`).
        files: What was written (`report.json`, `confusion.png`, ...), by name.
    """

    split: str
    size: int
    class_names: list
    accuracy: float
    top_k: dict
    per_class: dict
    confusion: np.ndarray
    calibration: dict
    uncalibrated: dict | None = None
    calibrated: dict | None = None
    tta: dict | None = None
    files: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-friendly view (the content of `report.json`)."""
        d = dataclasses.asdict(self)
        d["confusion"] = np.asarray(self.confusion).tolist()
        d["files"] = {k: str(p) for k, p in self.files.items()}
        return d

    def table(self) -> str:
        """A compact per-class table, then the averages and calibration, as text."""
        width = max(len("weighted avg"), *(len(str(c)) for c in self.class_names))
        lines = [f"{'class':<{width}}  precision  recall  f1     support"]
        rows = list(self.class_names) + ["macro avg", "weighted avg"]
        for name in rows:
            r = self.per_class[str(name)]
            lines.append(f"{str(name):<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  "
                         f"{r['f1-score']:5.3f}  {int(r['support']):7d}")
        extra = "  ".join(f"{k} {val:.4f}" for k, val in self.top_k.items())
        c = self.calibration
        lines.append(f"{self.split}: {self.size} images  accuracy {self.accuracy:.4f}  {extra}")
        lines.append(f"calibration: ECE {c['ece']:.4f}  NLL {c['nll']:.4f}  Brier {c['brier']:.4f}")
        for label, other in (("uncalibrated", self.uncalibrated), ("calibrated", self.calibrated)):
            if other:
                t = f" (T={other['temperature']:.3f})" if "temperature" in other else ""
                lines.append(f"{label}{t}: ECE {other['ece']:.4f}  NLL {other['nll']:.4f}")
        if self.tta:
            lines.append(f"TTA ({len(self.tta['views'])} views: {', '.join(self.tta['views'])}): "
                         f"accuracy {self.tta['accuracy']:.4f}  ECE {self.tta['ece']:.4f}  "
                         f"NLL {self.tta['nll']:.4f}")
        return "\n".join(lines)


def trained_with_flips(recipe) -> bool:
    """Whether a run's augmentation flipped its images (its `flip` field alone does not say:
    the default augmentation, translation, has none). False for no recipe."""
    if recipe is None:
        return False
    return any(name == "flip" for name, _ in parse_augmentation(recipe.augmentation,
                                                                 flip=recipe.flip))


def tta_views(flip: bool = True, crop: float = 0.875) -> dict:
    """Test-time augmentation views as `{name: function(images) -> images}` (batched, NHWC).

    `identity`, `flip` (horizontal, only when `flip`), `crop` (the central `crop` fraction
    resized back: a zoom) and `crop+flip`. Every view keeps the batch's shape and dtype.
    """
    import tensorflow as tf

    def zoom(images):
        x = tf.convert_to_tensor(images)
        size = tf.shape(x)[1:3]
        out = tf.image.resize(tf.image.central_crop(tf.cast(x, tf.float32), crop), size)
        if x.dtype.is_integer:
            out = tf.clip_by_value(tf.round(out), 0, 255)
        return tf.cast(out, x.dtype)

    views = {"identity": lambda x: x, "crop": zoom}
    if flip:
        views["flip"] = lambda x: tf.image.flip_left_right(x)
        views["crop+flip"] = lambda x: tf.image.flip_left_right(zoom(x))
    return views


def evaluate(model_or_run, data=None, *, split="test", tta=False, out=None, top_losses=16,
             bins=15, write=None) -> Report:
    """Evaluates a classifier per class, with calibration, top losses and optional TTA.

    Args:
        model_or_run: A run folder, a `.keras` file or a `keras.Model`.
        data: A `Data`, a source (`"digits"`, a folder, ...) or `(x, y)` (default: the run's
            recipe.json dataset, split with its seed, so `test` is the split the run held out).
        split: `"test"` (default), `"validation"` or `"train"`.
        tta: Also evaluate with test-time augmentation (a central zoom, and flips when the run
            trained with flip augmentation), averaging probabilities (default False).
        out: Folder for `report.json`, `confusion.png`, `top_losses.png`, `reliability.png`
            (default: `<run>/evaluation`; a model in memory writes nothing without `out`).
        top_losses: Number of most confidently wrong images drawn (default 16; 0: no plot).
        bins: Confidence bins of the ECE and the reliability diagram (default 15).
        write: Write the files (default: when there is a folder to write to).

    Returns:
        A `Report`.

    Raises:
        ValueError: A bad model or run folder, no data, a split the data does not have.

    Example:
        >>> report = recipes.evaluate("runs/digits")
        >>> report.per_class["3"]["recall"], report.calibration["ece"]
    """
    from scipy.special import softmax
    from sklearn.metrics import classification_report, confusion_matrix, top_k_accuracy_score

    v.check_int("top_losses", top_losses, 0)
    v.check_int("bins", bins, 1)
    src = open_model(model_or_run)
    lm, temperature = logits_model(src.model)  # checked before any data is loaded
    data = load_run_data(src, data)
    ds = split_of(data, split)
    result = collect(lm, ds, keep=top_losses)
    logits, probs = (o.astype("float64") for o in result["outputs"])
    labels = result["labels"].astype(int)
    num_classes = probs.shape[1]
    names = class_names_for(src, num_classes, data)
    classes = np.arange(num_classes)
    predicted = probs.argmax(axis=1)
    per_class = classification_report(labels, predicted, labels=classes, target_names=names,
                                      output_dict=True, zero_division=0)
    if "accuracy" not in per_class:  # sklearn drops it when labels lack a class
        per_class["accuracy"] = float(np.mean(predicted == labels))
    top_k = {}
    if num_classes > 5:
        top_k["top5_accuracy"] = float(top_k_accuracy_score(labels, probs, k=5, labels=classes))
    report = Report(
        split=split, size=int(len(labels)), class_names=names,
        accuracy=float(np.mean(predicted == labels)), top_k=top_k, per_class=per_class,
        confusion=confusion_matrix(labels, predicted, labels=classes),
        calibration=calibration_metrics(probs, labels, bins),
    )
    if temperature != 1.0:
        report.uncalibrated = calibration_metrics(softmax(logits, axis=1), labels, bins)
    fitted = _run_temperature(src)
    if fitted is not None and temperature == 1.0:
        report.calibrated = {"temperature": fitted,
                             **calibration_metrics(softmax(logits / fitted, axis=1), labels, bins)}
    if tta:
        report.tta = _tta(src, ds, labels, bins)
    folder = None
    if write is None or write:
        try:
            folder = src.out_dir(EVALUATION_DIR, out)
        except ValueError:
            if write:
                raise
    if folder is not None:
        report.files = _write(folder, report, probs, labels, result["worst"], bins)
    return report


def _run_temperature(src):
    """The temperature `calibrate` fitted for this run (None when it was not calibrated)."""
    from .calibration import CALIBRATED_DIR, CALIBRATION_FILE

    if src.run is None:
        return None
    file = src.run.sub(CALIBRATED_DIR).file(CALIBRATION_FILE)
    if src.path is not None and src.path != src.run.model_path:
        return None  # another model of the run (e.g. the calibrated one itself)
    if not file.is_file():
        return None
    import json

    return float(json.loads(file.read_text())["temperature"])


def _tta(src, ds, labels, bins):
    from sklearn.metrics import top_k_accuracy_score

    recipe = src.recipe
    # Flipped views only for a model that saw flips in training (digits and text must not flip;
    # a model trained without flip augmentation has never seen a mirrored image).
    flipped = trained_with_flips(recipe)
    views = tta_views(flip=flipped)
    total = None
    for view in views.values():
        probs = collect(src.model, ds, transform=view)["outputs"][0].astype("float64")
        total = probs if total is None else total + probs
    probs = total / len(views)
    out = {"views": list(views), "accuracy": float(np.mean(probs.argmax(1) == labels))}
    if probs.shape[1] > 5:
        out["top5_accuracy"] = float(top_k_accuracy_score(labels, probs, k=5,
                                                          labels=np.arange(probs.shape[1])))
    out.update(calibration_metrics(probs, labels, bins))
    return out


def _write(folder, report, probs, labels, worst, bins):
    from ..plotting import plot_confusion, plot_reliability, plot_top_losses

    files = {
        "confusion.png": plot_confusion(report.confusion, report.class_names,
                                        folder.file("confusion.png")),
        "reliability.png": plot_reliability(reliability_bins(probs, labels, bins),
                                            folder.file("reliability.png"),
                                            ece=report.calibration["ece"]),
    }
    indices, images = worst
    wrong = [k for k, i in enumerate(indices) if probs[i].argmax() != labels[i]]
    if len(wrong):
        idx = indices[wrong]
        files["top_losses.png"] = plot_top_losses(
            images[wrong], [report.class_names[labels[i]] for i in idx],
            [report.class_names[probs[i].argmax()] for i in idx],
            [float(probs[i].max()) for i in idx], folder.file("top_losses.png"))
    else:
        folder.clear("top_losses.png")  # no mistakes: no stale plot from an earlier model
    report.files = {"report.json": folder.file("report.json"), **files}
    folder.write_json("report.json", report.to_dict())
    return report.files
