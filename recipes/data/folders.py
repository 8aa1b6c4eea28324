"""Image-folder sources: `<folder>/<class name>/<image files>`."""

from __future__ import annotations

import warnings

import numpy as np

from .core import check_classes, make_data, split

__all__ = ["from_folder", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def from_folder(root, *, image_size=None, batch_size=32, validation_split=0.1, test_split=0.1,
                seed=0, crop=None, cache="auto"):
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels, bad = [], [], 0
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
                labels.append(label)
    if not files:
        raise ValueError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found in class sub-folders of {root}; "
            "expected <folder>/<class name>/<image files>"
        )
    images, kept = [], []
    target = None
    for path, label in zip(files, labels):
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if target is None:
                    target = (image_size, image_size) if image_size else im.size
                if im.size != target:
                    im = im.resize(target, Image.BILINEAR)
                images.append(np.asarray(im, np.uint8))
                kept.append(label)
        except Exception:  # unreadable or corrupt: skipped and counted, never a crash
            bad += 1
    if bad:
        warnings.warn(f"Skipped {bad} unreadable or corrupt image file(s) in {root}", stacklevel=3)
    y = np.asarray(kept, np.int32)
    check_classes(y, classes, str(root))
    if len(np.unique(y)) < 2:
        raise ValueError(f"A classifier needs at least 2 classes; Received: 1 in {root}")
    x = np.stack(images)
    splits = split(len(y), y, validation_split, test_split, seed)
    parts = {k: (x[idx], y[idx]) for k, idx in splits.items()}
    return make_data(parts, classes, None, batch_size, seed, str(root))
