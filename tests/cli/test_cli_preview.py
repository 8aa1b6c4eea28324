"""`recipes augment-preview`: the Recipe's data and augmentation flags, a PNG grid."""

import numpy as np
from PIL import Image

from recipes.cli import build_parser, main


def test_augment_preview_defaults():
    args = build_parser().parse_args(["augment-preview"])
    assert (args.dataset, args.augmentation, args.out, args.n, args.repeats) == (
        None, None, "augment_preview.png", 8, 4)  # None: the recipe's (digits, translation:0.1)


def test_augment_preview_writes_the_grid(tmp_path, capsys):
    out = tmp_path / "grid.png"
    argv = ["augment-preview", "--augment", "rotation:0.1,zoom:0.2", "--out", str(out), "--n", "40",
            "--repeats", "2", "--no-flip", "--seed", "3"]
    assert main(argv) == 0  # digits through the recipe's data loading, 40 rows > one batch
    assert np.asarray(Image.open(out)).shape == (40 * 66 + 2, 3 * 66 + 2)  # 8 px tiles x 8, padded
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"Wrote {out}: 40 digits images x 2") and "flip off, seed 3" in line
    assert main(["augment-preview", "--out", str(out), "--n", "3"]) == 0
    assert np.asarray(Image.open(out)).shape == (3 * 66 + 2, 5 * 66 + 2)
    assert "(translation:0.1, flip on," in capsys.readouterr().out  # the default recipe's
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"augmentation": null}')
    assert main(["augment-preview", "--recipe", str(recipe), "--out", str(out), "--n", "3"]) == 0
    assert "(medium," in capsys.readouterr().out  # a recipe without augmentation previews medium
