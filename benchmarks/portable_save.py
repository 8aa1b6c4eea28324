"""What `RunFolder.save_model` spends on the portable model: the rebuild, the check, the save.

Builds the default model (mobilenet_v3_small at 32 px on 8x8 grey digits, translation
augmentation) and times `portable_model`, `custom_objects_in` on its result and `save`, three
times. Prints one line per repeat:

    python benchmarks/portable_save.py
"""

import tempfile
import time
from pathlib import Path

import recipes
from recipes.portable import custom_objects_in, portable_model


def main():
    model = recipes.build_classifier("mobilenet_v3_small", 10, image_size=32, weights=None,
                                     input_shape=(8, 8, 1), augmentation="translation:0.1")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            start = time.perf_counter()
            portable = portable_model(model, strict=False)
            rebuilt = time.perf_counter()
            left = custom_objects_in(portable)
            checked = time.perf_counter()
            portable.save(Path(tmp) / "model.keras")
            saved = time.perf_counter()
            print(f"rebuild {rebuilt - start:.2f} s, check {checked - rebuilt:.2f} s "
                  f"(custom objects left: {left or 'none'}), save {saved - checked:.2f} s")


if __name__ == "__main__":
    main()
